//! HBONE: mutual TLS to the destination proxy's port 15008 carrying HTTP/2
//! CONNECT streams whose authority is the destination `ip:port`, as Istio
//! ambient does. One TLS connection per (destination proxy, identity) is
//! shared by all streams to it.
//!
//! Both sides speak HTTP/2 with the `h2` crate directly: a [`Tunnel`]
//! writes onto its stream from the task that writes to it, where hyper's
//! CONNECT upgrade hands every write to a task of its own.

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use hyper::{Method, Request, Response, StatusCode};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_identity::tls::{self, PeerPolicy};
use weft_identity::{CertStore, SpiffeId};

use crate::gateway::{self, Gateway};
use crate::inbound::{Inbound, Refused};
use crate::telemetry::PeerMeta;

/// The port HBONE listens on.
pub const HBONE_PORT: u16 = 15008;

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("connect to {addr}: {cause}")]
    Connect {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(
        "mTLS handshake with {addr}: {cause} (is the peer a mesh proxy with a certificate from this mesh's CA?)"
    )]
    Handshake {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("HTTP/2 with {addr}: {cause}")]
    H2 { addr: SocketAddr, cause: h2::Error },
    #[error("the destination proxy refused the tunnel: {0}")]
    Refused(StatusCode),
    #[error("invalid identity {0:?}")]
    Identity(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Pooled HBONE connections to other proxies.
#[derive(Debug)]
pub struct Pool {
    store: Arc<CertStore>,
    policy: PeerPolicy,
    /// Connection setup takes this lock; requests on an established
    /// connection only clone its sender.
    conns: Mutex<crate::FastMap<PoolKey, Connection>>,
    /// The workload's address, which connections leave from when it is
    /// this host's: the peer then sees it as `source.ip`, as a pod's
    /// peers see the pod's address.
    source: Option<IpAddr>,
}

/// A destination proxy and the identity it must prove.
type PoolKey = (SocketAddr, String);

/// An HBONE connection: what opens streams on it, and whether it has ended.
#[derive(Debug, Clone)]
struct Connection {
    sender: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

/// HTTP/2 settings, as hyper sets them: windows (per stream, per
/// connection) large enough that a tunnel is not held back by them.
const CLIENT_STREAM_WINDOW: u32 = 2 << 20;
const CLIENT_CONN_WINDOW: u32 = 5 << 20;
const CLIENT_SEND_BUFFER: usize = 1 << 20;
const SERVER_WINDOW: u32 = 1 << 20;
const SERVER_SEND_BUFFER: usize = 400 << 10;
const SERVER_MAX_STREAMS: u32 = 200;
const MAX_HEADER_LIST: u32 = 16 << 10;

impl Pool {
    pub fn new(store: Arc<CertStore>, policy: PeerPolicy) -> Pool {
        Pool {
            store,
            policy,
            conns: Mutex::default(),
            source: None,
        }
    }

    /// Connections leave from `address` (the workload's) where they can.
    pub fn from_address(self, address: IpAddr) -> Pool {
        Pool {
            source: Some(address),
            ..self
        }
    }

    /// A tunnel to `target` through the proxy at `proxy`, which must prove
    /// it is `identity`.
    /// `baggage` tells the destination proxy about this workload, for
    /// its metrics.
    pub async fn connect(
        &self,
        proxy: SocketAddr,
        identity: &str,
        target: SocketAddr,
        baggage: &str,
    ) -> Result<Tunnel, HboneError> {
        let h2 = |cause| HboneError::H2 { addr: proxy, cause };
        let mut sender = self
            .sender(proxy, identity)
            .await?
            .ready()
            .await
            .map_err(h2)?;
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(target.to_string())
            .header("baggage", baggage)
            .body(())
            .map_err(|e| HboneError::Tls(e.to_string()))?;
        let (resp, send) = sender.send_request(req, false).map_err(h2)?;
        let resp = resp.await.map_err(h2)?;
        if resp.status() != StatusCode::OK {
            return Err(HboneError::Refused(resp.status()));
        }
        Ok(Tunnel::new(send, resp.into_body()))
    }

    async fn sender(
        &self,
        proxy: SocketAddr,
        identity: &str,
    ) -> Result<h2::client::SendRequest<Bytes>, HboneError> {
        let key = (proxy, identity.to_string());
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&key) {
            if !c.closed.load(Ordering::Acquire) {
                return Ok(c.sender.clone());
            }
        }
        let expected: SpiffeId = identity
            .parse()
            .map_err(|_| HboneError::Identity(identity.into()))?;
        let mut policy = self.policy.clone();
        policy.expected = vec![expected];
        let config = tls::client_config(self.store.clone(), policy, &[b"h2"])
            .map_err(|e| HboneError::Tls(e.to_string()))?;
        let tcp = connect_from(self.source, proxy)
            .await
            .map_err(|cause| HboneError::Connect { addr: proxy, cause })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("hbone").map_err(|e| HboneError::Tls(e.to_string()))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|cause| HboneError::Handshake { addr: proxy, cause })?;
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(CLIENT_STREAM_WINDOW)
            .initial_connection_window_size(CLIENT_CONN_WINDOW)
            .max_send_buffer_size(CLIENT_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake(tls)
            .await
            .map_err(|cause| HboneError::H2 { addr: proxy, cause })?;
        let closed = Arc::new(AtomicBool::new(false));
        let ended = closed.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HBONE connection to {proxy}: {e}");
            }
            ended.store(true, Ordering::Release);
        });
        let c = Connection { sender, closed };
        conns.insert(key, c.clone());
        Ok(c.sender)
    }
}

/// Connects to `to` from address `from` when this host has it; from
/// whatever address the route gives otherwise.
async fn connect_from(from: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ip) = from.filter(|ip| ip.is_ipv4() == to.is_ipv4() && !ip.is_unspecified()) else {
        return TcpStream::connect(to).await;
    };
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if socket.bind(SocketAddr::new(ip, 0)).is_err() {
        return TcpStream::connect(to).await;
    }
    match socket.connect(to).await {
        Ok(tcp) => Ok(tcp),
        // The address cannot reach this destination (a loopback address
        // toward another host): leave from the route's.
        Err(e)
            if e.kind() == std::io::ErrorKind::InvalidInput
                || e.raw_os_error() == Some(nix::libc::ENETUNREACH)
                || e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) =>
        {
            TcpStream::connect(to).await
        }
        Err(e) => Err(e),
    }
}

/// What the streams of inbound HBONE reach.
#[derive(Debug, Clone)]
pub enum Tunnels {
    /// A sidecar's workload: its application's ports.
    Workload(Arc<Inbound>),
    /// An egress gateway: the ports of its Gateway servers.
    Gateway(Arc<Gateway>),
}

/// Serves inbound HBONE on `listener`: only peers with a valid mesh
/// certificate get a TLS session, and only CONNECTs to this workload's own
/// ports are opened; the stream inside is served by `inbound`.
pub async fn serve(
    listener: TcpListener,
    store: Arc<CertStore>,
    policy: PeerPolicy,
    inbound: Tunnels,
) -> Result<(), HboneError> {
    let config =
        tls::server_config(store, policy, &[b"h2"]).map_err(|e| HboneError::Tls(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    crate::http::serve_each(listener, move |tcp, downstream| {
        let acceptor = acceptor.clone();
        let inbound = inbound.clone();
        async move {
            // A peer without a valid certificate ends here.
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!("HBONE from {downstream} refused at the handshake: {e}");
                    return;
                }
            };
            let peer = tls::peer_identity(tls.get_ref().1).map(|p| p.to_string());
            let handshake = h2::server::Builder::new()
                .initial_window_size(SERVER_WINDOW)
                .initial_connection_window_size(SERVER_WINDOW)
                .max_send_buffer_size(SERVER_SEND_BUFFER)
                .max_header_list_size(MAX_HEADER_LIST)
                .max_concurrent_streams(SERVER_MAX_STREAMS)
                .handshake::<_, Bytes>(tls)
                .await;
            let mut conn = match handshake {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!("HBONE from {downstream}: {e}");
                    return;
                }
            };
            // Accepting drives the connection; each stream runs in a task
            // of its own.
            while let Some(stream) = conn.accept().await {
                let (req, respond) = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!("HBONE from {downstream}: {e}");
                        break;
                    }
                };
                let (peer, inbound) = (peer.clone(), inbound.clone());
                tokio::spawn(tunnel(req, respond, peer, inbound, downstream));
            }
        }
    })
    .await;
    Ok(())
}

/// Answers a CONNECT that opens no tunnel, with why.
fn refuse(mut respond: SendResponse<Bytes>, status: StatusCode, why: String) {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    if let Ok(mut body) = respond.send_response(resp, false) {
        let _ = body.send_data(Bytes::from(why), true);
    }
}

/// One inbound stream: a CONNECT to a port this workload (or gateway)
/// serves becomes a tunnel to it.
async fn tunnel(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: Option<String>,
    tunnels: Tunnels,
    downstream: SocketAddr,
) {
    if req.method() != Method::CONNECT {
        let why = "HBONE accepts CONNECT only\n".to_string();
        return refuse(respond, StatusCode::METHOD_NOT_ALLOWED, why);
    }
    let Some(target) = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        let why = "CONNECT authority must be ip:port\n".to_string();
        return refuse(respond, StatusCode::BAD_REQUEST, why);
    };
    let (head, body) = req.into_parts();
    let open = |respond: &mut SendResponse<Bytes>| {
        let send = respond.send_response(Response::new(()), false).ok()?;
        Some(Tunnel::new(send, body))
    };
    let inbound = match tunnels {
        Tunnels::Workload(inbound) => inbound,
        Tunnels::Gateway(gateway) => {
            if !gateway.serves(target) {
                let e = Refused::NotServed(target);
                return refuse(respond, StatusCode::FORBIDDEN, format!("{e}\n"));
            }
            if let Some(tunnel) = open(&mut respond) {
                let from = crate::gateway::Client {
                    addr: downstream,
                    principal: peer,
                };
                gateway::connection(&gateway, tunnel, from, target.port()).await;
            }
            return;
        }
    };
    let accepted = match inbound.accept(target, peer.as_deref(), downstream).await {
        Ok(a) => a,
        Err(e @ (Refused::NotServed(_) | Refused::Denied(_))) => {
            return refuse(respond, StatusCode::FORBIDDEN, format!("{e}\n"));
        }
        Err(e @ Refused::App { .. }) => {
            return refuse(respond, StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
        }
    };
    let baggage = head.headers.get("baggage").and_then(|v| v.to_str().ok());
    let peer = PeerMeta::new(peer, baggage);
    if let Some(tunnel) = open(&mut respond) {
        inbound
            .serve(accepted, tunnel, target, peer, downstream)
            .await;
    }
}

/// One HBONE stream as a byte stream, each way the body of its CONNECT:
/// writes go onto the stream at once (HTTP/2 framing and flow control are
/// the connection's), reads take what the peer sent, returning its window.
/// Dropped, it ends its side of the stream as a shutdown does.
#[derive(Debug)]
pub struct Tunnel {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not yet read.
    buf: Bytes,
    /// Where writes are copied for the stream. A frame's bytes are split
    /// off it and, once the connection has sent them, its allocation is
    /// reused for the next write.
    out: BytesMut,
    /// END_STREAM is sent.
    ended: bool,
}

/// A write buffer larger than this is not kept for the next write: an
/// idle stream holds at most this much.
const KEEP_OUT: usize = 4 * 1024;

impl Tunnel {
    fn new(send: SendStream<Bytes>, recv: RecvStream) -> Tunnel {
        Tunnel {
            send,
            recv,
            buf: Bytes::new(),
            out: BytesMut::new(),
            ended: false,
        }
    }

    /// Sends as much of `bufs` as the stream has capacity for, copied
    /// into one buffer (the connection cuts it into frames).
    fn send_from(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        // Capacity is asked for only with bytes to send: what an idle
        // stream holds is held from the whole connection.
        self.send.reserve_capacity(len);
        let mut capacity = self.send.capacity();
        while capacity == 0 {
            capacity = match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            };
        }
        let n = capacity.min(len);
        // Reclaims the last write's allocation when its frame is gone.
        self.out.reserve(n);
        for b in bufs {
            let take = b.len().min(n - self.out.len());
            self.out.extend_from_slice(&b[..take]);
        }
        let data = self.out.split().freeze();
        if data.len() > KEEP_OUT {
            self.out = BytesMut::new();
        }
        self.send.send_data(data, false).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }
}

/// An HTTP/2 error as an I/O error whose cause it stays (the response
/// flags tell a reset stream by it).
fn io_error(e: h2::Error) -> std::io::Error {
    if e.is_io() {
        if let Some(io) = e.into_io() {
            return io;
        }
        return std::io::Error::other("HTTP/2 connection I/O error");
    }
    std::io::Error::other(e)
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while this.buf.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.buf = data;
                }
                // The peer ended its side.
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => {
                    return Poll::Ready(match e.reason() {
                        // Closed, not failed.
                        Some(Reason::NO_ERROR | Reason::CANCEL) => Ok(()),
                        _ => Err(io_error(e)),
                    });
                }
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().send_from(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().send_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // The connection's task writes what the stream holds.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            this.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tunnel over plain HTTP/2 in memory: the client's end and the
    /// server's.
    async fn tunnel_pair() -> (Tunnel, Tunnel) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(b).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            let send = respond.send_response(Response::new(()), false).unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            Tunnel::new(send, req.into_body())
        });
        let (sender, conn) = h2::client::handshake(a).await.unwrap();
        tokio::spawn(conn);
        let mut sender = sender.ready().await.unwrap();
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri("127.0.0.1:80")
            .body(())
            .unwrap();
        let (resp, send) = sender.send_request(req, false).unwrap();
        let server = server.await.unwrap();
        let client = Tunnel::new(send, resp.await.unwrap().into_body());
        (client, server)
    }

    /// Writes of every size arrive whole and in order, whether the
    /// tunnel's kept buffer is reused (a write after the last frame was
    /// sent), grown, or let go after a large write.
    #[tokio::test]
    async fn writes_arrive_whole_across_the_kept_buffer() {
        let (mut client, mut server) = tunnel_pair().await;
        let sizes = [100, 100, 1200, 100, KEEP_OUT + 1, 300, 40_000, 50, KEEP_OUT];
        let mut sent = Vec::new();
        let mut first = 0;
        for (i, n) in sizes.into_iter().enumerate() {
            let chunk: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            client.write_all(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
            // The allocation the second write went into is the first's.
            if i < 2 {
                let start = client.out.as_ptr() as usize - n;
                if i == 0 {
                    first = start;
                } else {
                    assert_eq!(start, first, "the second write reuses the buffer");
                }
            }
            // Lets the connection send the frame, so the next write can
            // reclaim its buffer.
            tokio::task::yield_now().await;
            if n > KEEP_OUT {
                client.out.reserve(1);
                assert!(
                    client.out.capacity() < KEEP_OUT,
                    "a large write's buffer is let go"
                );
            }
        }
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes differ");
    }
}
