//! Refuses ambiguous HTTP/1 message framing before hyper reads it.
//!
//! A request with both Content-Length and Transfer-Encoding, or with more
//! than one Content-Length, is how request smuggling starts: two parsers
//! on one path disagree on where the message ends. One with two Host
//! lines lets them disagree on where it goes. hyper resolves such a
//! head safely (Transfer-Encoding wins, duplicates of one length are
//! merged) but serves it; Istio's edge answers 400, and so does weft.
//!
//! [`StrictHeads`] sits between a connection and hyper's HTTP/1 server. It
//! holds each request head until it is complete, follows the message's
//! framing (a length, or chunks and trailers) to find the next head, and
//! when a head is ambiguous breaks the first offending header name so that
//! hyper's own parser refuses the request with 400 and closes the
//! connection. Everything else passes unchanged. After a CONNECT, an
//! Upgrade request, an HTTP/2 preface or anything it cannot follow, it
//! stops looking: hyper's framing then decides, as it does anyway.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads larger than this are left to hyper, which refuses them.
const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size or trailer line longer than this is not followed.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Opaque,
}

/// An HTTP/1 server connection whose request heads are checked for
/// ambiguous framing.
#[derive(Debug)]
pub struct StrictHeads<T> {
    inner: T,
    /// Read from `inner`, not yet handed on.
    buf: BytesMut,
    /// How much of `buf` is checked and may be handed on.
    ready: usize,
    state: State,
}

impl<T> StrictHeads<T> {
    pub fn new(inner: T) -> StrictHeads<T> {
        StrictHeads {
            inner,
            buf: BytesMut::new(),
            ready: 0,
            state: State::Head,
        }
    }

    /// Checks as much of `buf` as can be checked.
    fn advance(&mut self) {
        loop {
            let rest = &self.buf[self.ready..];
            if rest.is_empty() {
                return;
            }
            match self.state {
                State::Opaque => {
                    self.ready = self.buf.len();
                    return;
                }
                State::Head => {
                    let Some(end) = head_end(rest) else {
                        if rest.len() > MAX_HEAD {
                            self.state = State::Opaque;
                            continue;
                        }
                        return;
                    };
                    let start = self.ready;
                    self.state = self.check_head(start, start + end);
                    self.ready = start + end;
                }
                State::Body(n) | State::ChunkData(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                    self.ready += take;
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(nl) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > MAX_LINE {
                            self.state = State::Opaque;
                            continue;
                        }
                        return;
                    };
                    let line = trim_cr(&rest[..nl]);
                    self.state = match self.state {
                        State::ChunkEnd => State::ChunkSize,
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => match chunk_size(line) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            None => State::Opaque,
                        },
                    };
                    self.ready += nl + 1;
                }
            }
        }
    }

    /// Checks the head in `buf[start..end]`; breaks it when its framing is
    /// ambiguous; returns what follows it.
    fn check_head(&mut self, start: usize, end: usize) -> State {
        let head = &self.buf[start..end];
        // Each line and where it starts; line ends found with memchr.
        let lines = || {
            let ends = memchr::memchr_iter(b'\n', head).chain(std::iter::once(head.len()));
            let mut at = 0;
            ends.map(move |nl| {
                let line = (at, &head[at..nl]);
                at = nl + 1;
                line
            })
        };
        let Some(request_line) = lines().map(|(_, l)| trim_cr(l)).find(|l| !l.is_empty()) else {
            // Only blank lines, which parsers skip.
            return State::Head;
        };
        if request_line.starts_with(b"PRI * HTTP/2") || request_line.starts_with(b"CONNECT ") {
            return State::Opaque;
        }
        // Counted, not collected: a head costs no allocation.
        let mut lengths = 0;
        let mut length = None;
        let mut chunked = None;
        let mut first_length_at = None;
        let mut hosts = 0;
        let mut second_host_at = None;
        let mut upgrade = false;
        for (at, line) in lines() {
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let name = &line[..colon];
            let value = trim_cr(&line[colon + 1..]).trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") {
                first_length_at.get_or_insert(at);
                length.get_or_insert(value);
                lengths += 1;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            } else if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
                if hosts == 2 {
                    second_host_at = Some(at);
                }
            }
        }
        let ambiguous = lengths > 1 || (lengths > 0 && chunked.is_some());
        // Two Host lines name two targets: routing, policy and the app
        // could each read a different one (RFC 9112 asks for 400).
        let offending = match (ambiguous, first_length_at) {
            (true, Some(at)) => Some(at),
            _ => second_host_at,
        };
        if let Some(at) = offending {
            // `(` cannot start a header name: hyper answers 400.
            self.buf[start + at] = b'(';
            return State::Opaque;
        }
        if upgrade {
            return State::Opaque;
        }
        match (chunked, length) {
            (Some(true), _) => State::ChunkSize,
            (Some(false), _) => State::Opaque,
            (None, Some(v)) => std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(State::Opaque, |n| {
                    if n == 0 { State::Head } else { State::Body(n) }
                }),
            (None, None) => State::Head,
        }
    }
}

/// Where a head ends (after its empty line), if it does within `b`.
fn head_end(b: &[u8]) -> Option<usize> {
    // Leading blank lines are skipped by parsers; they end no head.
    let lead = b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
    let body = &b[lead..];
    if body.is_empty() {
        return (lead > 0 && b.last() == Some(&b'\n')).then_some(lead);
    }
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\n', &body[i..]) {
        let nl = i + p;
        let next = &body[nl + 1..];
        if next.first() == Some(&b'\n') {
            return Some(lead + nl + 2);
        }
        if next.starts_with(b"\r\n") {
            return Some(lead + nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|&b| b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

impl<T: AsyncRead + Unpin> AsyncRead for StrictHeads<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Opaque && this.buf.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            // Read straight into the buffer's spare room, unzeroed.
            this.buf.reserve(8192);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.buf
            ))?;
            if n == 0 {
                // The end: whatever is held goes on as it is.
                if this.buf.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.state = State::Opaque;
            }
            this.advance();
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StrictHeads<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// What hyper would read from `input` fed in pieces of `step` bytes.
    async fn through(input: &[u8], step: usize) -> Vec<u8> {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let pieces: Vec<Vec<u8>> = input.chunks(step).map(<[u8]>::to_vec).collect();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for p in pieces {
                tx.write_all(&p).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut out = Vec::new();
        StrictHeads::new(rx).read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    const CLEAN: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n0\r\nTrailer: t\r\n\r\nGET /c HTTP/1.1\r\n\r\n";

    #[tokio::test]
    async fn clean_messages_pass_unchanged_in_any_pieces() {
        for step in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(through(CLEAN, step).await, CLEAN, "step {step}");
        }
    }

    #[tokio::test]
    async fn ambiguous_framing_breaks_the_head_even_when_pipelined() {
        let cases: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\nContent-Length: 3\n\n0\r\n\r\n",
        ];
        for case in cases {
            for step in [1, 5, 4096] {
                // Behind a clean request, so the check follows framing.
                let input = [CLEAN, case].concat();
                let out = through(&input, step).await;
                assert_eq!(out.len(), input.len());
                assert_eq!(&out[..CLEAN.len()], CLEAN);
                let head = String::from_utf8_lossy(&out[CLEAN.len()..]).to_string();
                let broken = head
                    .lines()
                    .filter(|l| {
                        l.starts_with('(')
                            && l[1..].to_ascii_lowercase().starts_with("ontent-length")
                    })
                    .count();
                assert_eq!(broken, 1, "{head:?} at step {step}");
            }
        }
    }

    #[tokio::test]
    async fn a_second_host_breaks_the_head() {
        let input = b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: admin.example\r\n\r\n";
        let out = through(input, 3).await;
        assert_eq!(out.len(), input.len());
        assert!(String::from_utf8_lossy(&out).contains("\r\n(ost: admin.example\r\n"));
        let one = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(through(one, 3).await, one);
    }

    #[tokio::test]
    async fn bodies_are_not_read_as_heads() {
        // A body that looks like an ambiguous head is data.
        let body = b"X\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        assert_eq!(through(&input, 3).await, input);
        // So is what follows a CONNECT or an upgrade.
        for head in [
            &b"CONNECT a:1 HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let input = [
                head,
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            ]
            .concat();
            assert_eq!(through(&input, 4).await, input);
        }
    }

    #[test]
    fn heads_end_at_their_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"\r\nGET / HTTP/1.1\r\nA: b\r\n\r\n"), Some(26));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"\r\n"), Some(2));
    }
}
