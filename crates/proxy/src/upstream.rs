//! Pooled connections to applications. A request to an in-mesh endpoint
//! rides an HBONE tunnel; the HTTP connection inside the tunnel is kept and
//! reused for the next request to the same endpoint, so a busy route pays
//! for one tunnel (and one connection to the app) rather than one per
//! request. HTTP/1.1 and HTTP/2 upstreams have a client each.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use hyper::Uri;
use hyper::upgrade::Upgraded;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use weft_model::ProxyConfig;

use crate::hbone::{HBONE_PORT, Pool};
use crate::http::Body;
use crate::telemetry::baggage;

/// A connection to an application: through a tunnel or direct.
pub enum Conn {
    Tunnel(Upgraded),
    Tcp(TokioIo<TcpStream>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Tunnel(_) => "Conn::Tunnel",
            Conn::Tcp(_) => "Conn::Tcp",
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tunnel(t) => Pin::new(t).poll_read(cx, buf),
            Conn::Tcp(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tunnel(t) => Pin::new(t).poll_write(cx, buf),
            Conn::Tcp(t) => Pin::new(t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tunnel(t) => Pin::new(t).poll_flush(cx),
            Conn::Tcp(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tunnel(t) => Pin::new(t).poll_shutdown(cx),
            Conn::Tcp(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}

/// Opens connections for the pooled clients: the URI's authority is the
/// endpoint `ip:port`; whether it is in the mesh (and as whom) comes from
/// the current configuration.
#[derive(Clone, Debug)]
pub struct Connector {
    pool: Arc<Pool>,
    config: Arc<ArcSwap<ProxyConfig>>,
}

impl Connector {
    fn identity(&self, addr: SocketAddr) -> Option<String> {
        let config = self.config.load();
        config
            .clusters
            .values()
            .flat_map(|c| &c.endpoints)
            .find(|e| e.address == addr)
            .and_then(|e| e.identity.clone())
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("endpoint {uri} is not ip:port")))?;
            match this.identity(addr) {
                Some(identity) => {
                    let proxy = SocketAddr::new(addr.ip(), HBONE_PORT);
                    let tunnel = this
                        .pool
                        .connect(
                            proxy,
                            &identity,
                            addr,
                            &baggage(&this.config.load().workload),
                        )
                        .await
                        .map_err(std::io::Error::other)?;
                    Ok(Conn::Tunnel(tunnel))
                }
                None => {
                    let tcp = TcpStream::connect(addr).await?;
                    let _ = tcp.set_nodelay(true);
                    Ok(Conn::Tcp(TokioIo::new(tcp)))
                }
            }
        })
    }
}

/// The pooled clients of one proxy.
#[derive(Debug)]
pub struct Clients {
    pub http1: Client<Connector, Body>,
    pub http2: Client<Connector, Body>,
}

impl Clients {
    pub fn new(pool: Arc<Pool>, config: Arc<ArcSwap<ProxyConfig>>) -> Clients {
        let connector = Connector { pool, config };
        Clients {
            http1: Client::builder(TokioExecutor::new()).build(connector.clone()),
            http2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector),
        }
    }
}
