//! Rate limits: token buckets kept by this proxy, one per limit and key
//! value, or fixed windows counted in Redis for a limit shared by several
//! proxies. A request over a limit gets 429 with flag RL; answers carry
//! the `x-ratelimit-*` headers of the limit that was closest to refusing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weft_model::rate_limit::{LimitAt, LimitKey, RateLimit};

use crate::http::{Body, flagged};

/// More distinct keys than this and the buckets start over (a client
/// flood must not grow memory without bound).
const MAX_BUCKETS: usize = 100_000;

/// How long a Redis question may take before the limit lets the request
/// through.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// The buckets of one proxy.
#[derive(Debug)]
pub struct Limiter {
    start: Instant,
    buckets: RwLock<HashMap<(String, String), Arc<Bucket>>>,
    redis: Redis,
    counter: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            start: Instant::now(),
            buckets: RwLock::default(),
            redis: Redis::default(),
            counter: AtomicU64::new(0),
        }
    }
}

/// Which side of the proxy a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Inbound { port: u32 },
    Routed,
}

/// What a limit may key on.
#[derive(Debug)]
pub struct Request<'a> {
    pub side: Side,
    pub host: &'a str,
    pub route: Option<&'a str>,
    pub remote: Option<IpAddr>,
    pub principal: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// The outcome: refused (with the answer to send), or let through with
/// the headers the answer should carry.
#[derive(Debug)]
pub enum Decision {
    Limited(Response<Body>),
    Passed(Vec<(HeaderName, HeaderValue)>),
}

impl Decision {
    /// Adds the rate-limit headers of a passed request to its answer.
    pub fn decorate(self, resp: &mut Response<Body>) {
        if let Decision::Passed(headers) = self {
            for (k, v) in headers {
                resp.headers_mut().insert(k, v);
            }
        }
    }
}

/// A token bucket: tokens in the low 32 bits, the fill period they were
/// counted in above them; updated by compare-and-swap. It belongs to the
/// limit it was made for: a changed limit starts a new bucket.
#[derive(Debug)]
struct Bucket {
    state: AtomicU64,
    made_for: (u64, u64, Duration),
}

/// What a bucket said: whether a token was taken, how many are left, and
/// how long until the next fill.
struct Taken {
    ok: bool,
    remaining: u64,
    reset: Duration,
}

impl Bucket {
    fn new(limit: &RateLimit, period: u64) -> Bucket {
        let full = limit.max_tokens.min(u64::from(u32::MAX));
        Bucket {
            state: AtomicU64::new((period << 32) | full),
            made_for: made_for(limit),
        }
    }

    fn take(&self, limit: &RateLimit, now: Duration) -> Taken {
        let interval = limit.fill_interval.as_nanos().max(1);
        let elapsed = now.as_nanos();
        let period = u64::try_from(elapsed / interval).unwrap_or(u64::MAX) & 0xffff_ffff;
        let into = Duration::from_nanos(u64::try_from(elapsed % interval).unwrap_or(0));
        let reset = limit.fill_interval.saturating_sub(into);
        let max = limit.max_tokens.min(u64::from(u32::MAX));
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (was, tokens) = (cur >> 32, cur & 0xffff_ffff);
            let fills = period.wrapping_sub(was) & 0xffff_ffff;
            let mut t = tokens
                .saturating_add(fills.saturating_mul(limit.tokens_per_fill))
                .min(max);
            let ok = t > 0;
            if ok {
                t -= 1;
            }
            let next = (period << 32) | t;
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Taken {
                        ok,
                        remaining: t,
                        reset,
                    };
                }
                Err(actual) => cur = actual,
            }
        }
    }
}

impl Limiter {
    /// Checks `req` against every limit of `limits` that applies to it.
    pub async fn check(&self, limits: &[RateLimit], req: &Request<'_>) -> Decision {
        let mut tightest: Option<(&RateLimit, Taken)> = None;
        for limit in limits.iter().filter(|l| applies(l, req)) {
            if !self.chance(limit.enabled) {
                continue;
            }
            let Some(key) = key(&limit.key, req) else {
                // The request has no value for the key: no bucket of it.
                continue;
            };
            let taken = match &limit.shared {
                Some(addr) => self.shared(addr, limit, &key).await,
                None => self.local(limit, key),
            };
            if !taken.ok && self.chance(limit.enforced) {
                tracing::debug!("{}: over the limit", limit.name);
                return Decision::Limited(limited(limit, &taken));
            }
            if tightest
                .as_ref()
                .is_none_or(|(_, t)| taken.remaining < t.remaining)
            {
                tightest = Some((limit, taken));
            }
        }
        Decision::Passed(tightest.map_or_else(Vec::new, |(l, t)| headers(l, &t)))
    }

    fn local(&self, limit: &RateLimit, key: String) -> Taken {
        let now = self.start.elapsed();
        let period = u64::try_from(now.as_nanos() / limit.fill_interval.as_nanos().max(1))
            .unwrap_or(0)
            & 0xffff_ffff;
        let id = (limit.name.clone(), key);
        let found = self
            .buckets
            .read()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .filter(|b| b.made_for == made_for(limit));
        let bucket = match found {
            Some(b) => b,
            None => {
                let Ok(mut m) = self.buckets.write() else {
                    return Taken {
                        ok: true,
                        remaining: limit.max_tokens,
                        reset: limit.fill_interval,
                    };
                };
                if m.len() >= MAX_BUCKETS {
                    m.clear();
                }
                let bucket = m
                    .entry(id)
                    .or_insert_with(|| Arc::new(Bucket::new(limit, period)));
                if bucket.made_for != made_for(limit) {
                    *bucket = Arc::new(Bucket::new(limit, period));
                }
                bucket.clone()
            }
        };
        bucket.take(limit, now)
    }

    /// A fixed window of `fill_interval` counted in Redis: `requests` per
    /// window across every proxy. Redis unreachable: the request passes.
    async fn shared(&self, addr: &str, limit: &RateLimit, key: &str) -> Taken {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let interval = limit.fill_interval.as_millis().max(1);
        let window = now.as_millis() / interval;
        let reset = Duration::from_millis(
            u64::try_from(interval - now.as_millis() % interval).unwrap_or(0),
        );
        let id = format!("weft:rl:{}:{key}:{window}", limit.name);
        let ttl = u64::try_from(interval * 2).unwrap_or(u64::MAX);
        match tokio::time::timeout(REDIS_TIMEOUT, self.redis.count(addr, &id, ttl)).await {
            Ok(Ok(n)) => Taken {
                ok: n <= limit.tokens_per_fill,
                remaining: limit.tokens_per_fill.saturating_sub(n),
                reset,
            },
            Ok(Err(e)) => {
                tracing::warn!(
                    "{}: Redis {addr}: {e}; letting the request through",
                    limit.name
                );
                open(limit)
            }
            Err(_) => {
                tracing::warn!("{}: Redis {addr} did not answer in time", limit.name);
                open(limit)
            }
        }
    }

    /// True for `per_million` of the calls.
    fn chance(&self, per_million: u32) -> bool {
        if per_million >= 1_000_000 {
            return true;
        }
        let x = self.counter.fetch_add(1, Ordering::Relaxed);
        crate::outbound::mix(x) % 1_000_000 < u64::from(per_million)
    }
}

fn made_for(limit: &RateLimit) -> (u64, u64, Duration) {
    (limit.max_tokens, limit.tokens_per_fill, limit.fill_interval)
}

fn open(limit: &RateLimit) -> Taken {
    Taken {
        ok: true,
        remaining: limit.tokens_per_fill,
        reset: limit.fill_interval,
    }
}

fn applies(limit: &RateLimit, req: &Request<'_>) -> bool {
    let side = match (limit.at, req.side) {
        (LimitAt::Any, _) | (LimitAt::Routed, Side::Routed) => true,
        (LimitAt::Inbound { port }, Side::Inbound { port: p }) => port.is_none_or(|x| x == p),
        _ => false,
    };
    side && limit.applies(req.host, req.route)
}

fn key(key: &LimitKey, req: &Request<'_>) -> Option<String> {
    match key {
        LimitKey::None => Some(String::new()),
        LimitKey::RemoteAddress => req.remote.map(|ip| ip.to_string()),
        LimitKey::SourcePrincipal => req.principal.map(str::to_string),
        LimitKey::Header(name) => req
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// The `x-ratelimit-*` headers (IETF draft 03, as Envoy writes them).
fn headers(limit: &RateLimit, taken: &Taken) -> Vec<(HeaderName, HeaderValue)> {
    let window = limit.fill_interval.as_secs().max(1);
    let reset = taken.reset.as_secs_f64().ceil().max(1.0);
    let values = [
        (
            "x-ratelimit-limit",
            format!(
                "{}, {};w={window}",
                limit.tokens_per_fill, limit.tokens_per_fill
            ),
        ),
        ("x-ratelimit-remaining", taken.remaining.to_string()),
        ("x-ratelimit-reset", format!("{reset:.0}")),
    ];
    values
        .into_iter()
        .filter_map(|(k, v)| Some((HeaderName::from_static(k), HeaderValue::from_str(&v).ok()?)))
        .collect()
}

/// Envoy's answer to a request over a local rate limit.
fn limited(limit: &RateLimit, taken: &Taken) -> Response<Body> {
    let mut resp = flagged(StatusCode::TOO_MANY_REQUESTS, "RL", "local_rate_limited");
    let h = resp.headers_mut();
    for (k, v) in headers(limit, taken) {
        h.insert(k, v);
    }
    for (k, v) in &limit.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    }
    resp
}

/// Connections to Redis servers, by address, reused one request at a time.
#[derive(Debug, Default)]
struct Redis {
    idle: tokio::sync::Mutex<HashMap<String, Vec<BufReader<TcpStream>>>>,
}

impl Redis {
    /// INCR of `key`, which expires `ttl_ms` after it was made: the count
    /// of this window so far, this request included.
    async fn count(&self, addr: &str, key: &str, ttl_ms: u64) -> std::io::Result<u64> {
        let reused = self.idle.lock().await.get_mut(addr).and_then(Vec::pop);
        let mut conn = match reused {
            Some(c) => c,
            None => {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                BufReader::new(tcp)
            }
        };
        // One round trip: make the key with its expiry if new, then count.
        let ttl = ttl_ms.to_string();
        let mut out = Vec::new();
        command(&mut out, &["SET", key, "0", "PX", &ttl, "NX"]);
        command(&mut out, &["INCR", key]);
        conn.get_mut().write_all(&out).await?;
        let _ = reply(&mut conn).await?;
        let n = match reply(&mut conn).await? {
            Reply::Integer(n) => u64::try_from(n).unwrap_or(0),
            other => {
                return Err(std::io::Error::other(format!("INCR answered {other:?}")));
            }
        };
        self.idle
            .lock()
            .await
            .entry(addr.to_string())
            .or_default()
            .push(conn);
        Ok(n)
    }
}

/// A command in RESP: an array of bulk strings.
fn command(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
}

#[derive(Debug)]
enum Reply {
    Simple,
    Integer(i64),
    Bulk,
    Nil,
}

/// One reply of the kinds SET and INCR give.
async fn reply(conn: &mut BufReader<TcpStream>) -> std::io::Result<Reply> {
    let line = read_line(conn).await?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" => Ok(Reply::Simple),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| std::io::Error::other(format!("bad integer reply {rest:?}"))),
        "$" if rest == "-1" => Ok(Reply::Nil),
        "$" => {
            let len: usize = rest
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad bulk length {rest:?}")))?;
            let mut skip = vec![0u8; len + 2];
            conn.read_exact(&mut skip).await?;
            Ok(Reply::Bulk)
        }
        "-" => Err(std::io::Error::other(format!("Redis error: {rest}"))),
        _ => Err(std::io::Error::other(format!("unexpected reply {line:?}"))),
    }
}

async fn read_line(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = conn.read_u8().await?;
        if b == b'\n' {
            break;
        }
        if line.len() > 512 {
            return Err(std::io::Error::other("reply line too long"));
        }
        line.push(b);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| std::io::Error::other("reply is not UTF-8"))
}
