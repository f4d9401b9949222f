//! Rules for `telemetry.istio.io` Telemetry.

use super::{Cx, check_duration, check_targets};
use crate::path::Path;
use crate::types::telemetry::{TagOperation, Telemetry};

pub(super) fn telemetry(cx: &mut Cx, t: &Telemetry) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    check_targets(
        cx,
        &spec,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
    );
    let tracing = spec.field("tracing");
    if t.tracing.len() > 1 {
        cx.err(&tracing, "multiple tracing is not currently supported");
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let at = tracing.index(i);
        if tr.providers.len() > 1 {
            cx.err(
                &at.field("providers"),
                "multiple providers is not currently supported",
            );
        }
        if let Some(p) = tr.random_sampling_percentage {
            if !(0.0..=100.0).contains(&p) {
                cx.err(
                    &at.field("randomSamplingPercentage"),
                    "randomSamplingPercentage must be in range [0.0, 100.0]",
                );
            }
        }
        let tags = at.field("customTags");
        for (name, tag) in &tr.custom_tags {
            let here = tags.key(name);
            let kinds = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
                tag.formatter.is_some(),
            ];
            match kinds.iter().filter(|k| **k).count() {
                0 => cx.err(
                    &here,
                    format!(
                        "tag {name:?} has no value: set literal, environment, header or formatter"
                    ),
                ),
                1 => {}
                _ => cx.err(
                    &here,
                    format!(
                        "tag {name:?} may set only one of literal, environment, header or formatter"
                    ),
                ),
            }
            if tag.environment.as_ref().is_some_and(|e| e.name.is_empty())
                || tag.header.as_ref().is_some_and(|h| h.name.is_empty())
            {
                cx.err(&here, format!("tag {name:?}: name must be set"));
            }
        }
    }
    let metrics = spec.field("metrics");
    for (i, m) in t.metrics.iter().enumerate() {
        let at = metrics.index(i);
        check_duration(
            cx,
            &at.field("reportingInterval"),
            m.reporting_interval.as_ref(),
        );
        let overrides = at.field("overrides");
        for (j, o) in m.overrides.iter().enumerate() {
            let here = overrides.index(j);
            if let Some(sel) = &o.r#match {
                if sel.metric.is_some() && sel.custom_metric.is_some() {
                    cx.err(
                        &here.field("match"),
                        "only one of metric or customMetric may be set",
                    );
                }
            }
            let tags = here.field("tagOverrides");
            for (name, to) in &o.tag_overrides {
                let value = to.value.as_deref().unwrap_or("");
                match to.operation.unwrap_or(TagOperation::Upsert) {
                    TagOperation::Upsert if value.is_empty() => {
                        cx.err(&tags.key(name), "must set value when operation is UPSERT")
                    }
                    TagOperation::Remove if !value.is_empty() => cx.err(
                        &tags.key(name),
                        "must not set value when operation is REMOVE",
                    ),
                    _ => {}
                }
            }
        }
    }
    let logging = spec.field("accessLogging");
    for (i, l) in t.access_logging.iter().enumerate() {
        if let Some(f) = &l.filter {
            if f.expression.trim().is_empty() {
                cx.err(
                    &logging.index(i).field("filter").field("expression"),
                    "filter expression must not be empty",
                );
            }
        }
    }
    let kinds = [
        (
            "tracing",
            t.tracing.iter().map(|x| &x.providers).collect::<Vec<_>>(),
        ),
        ("metrics", t.metrics.iter().map(|x| &x.providers).collect()),
        (
            "accessLogging",
            t.access_logging.iter().map(|x| &x.providers).collect(),
        ),
    ];
    for (field, lists) in kinds {
        let at = spec.field(field);
        for (i, providers) in lists.iter().enumerate() {
            let item = at.index(i);
            let here = item.field("providers");
            for (j, p) in providers.iter().enumerate() {
                if p.name.is_empty() {
                    cx.err(
                        &here.index(j).field("name"),
                        "provider name must not be empty",
                    );
                }
            }
        }
    }
}
