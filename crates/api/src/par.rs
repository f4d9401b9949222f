//! Spreading pure work over the machine's cores with scoped threads: no
//! pool, no shared state, results in input order.

/// Most threads one call uses.
const MAX_WORKERS: usize = 8;

/// How many threads work may use here.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_WORKERS)
}

/// `f` over `items` on up to `workers` scoped threads, each taking a
/// contiguous run of about the same `weight`; results keep the input order.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    weight: impl Fn(&T) -> usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let total: usize = items.iter().map(&weight).sum();
    let mut runs: Vec<&[T]> = Vec::with_capacity(workers);
    let (mut start, mut acc) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        acc += weight(item);
        if acc * workers >= total * (runs.len() + 1) && runs.len() + 1 < workers {
            runs.push(&items[start..=i]);
            start = i + 1;
        }
    }
    runs.push(&items[start..]);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| scope.spawn(move || run.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_input_order_whatever_the_split() {
        let items: Vec<u64> = (0..1000).collect();
        for workers in 1..=5 {
            let out = super::map(&items, workers, |i| (*i as usize % 7) + 1, |i| i * 2);
            assert_eq!(
                out,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "{workers} workers"
            );
        }
        assert!(super::map(&[] as &[u8], 4, |_| 1, |b| *b).is_empty());
    }
}
