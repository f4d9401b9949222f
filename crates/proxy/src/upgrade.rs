//! HTTP/1.1 upgrades (WebSocket) through the proxy: when the upstream
//! answers 101, the two upgraded connections are joined and bytes flow
//! both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Takes the downstream side of an upgrade the request asks for.
pub fn requested<B>(req: &mut Request<B>) -> Option<OnUpgrade> {
    let asks = req.version() == http::Version::HTTP_11
        && req.headers().contains_key(hyper::header::UPGRADE);
    asks.then(|| hyper::upgrade::on(&mut *req))
}

/// When the upstream answered 101 to an upgrade request, joins the two
/// connections.
pub fn bridge<B>(downstream: Option<OnUpgrade>, resp: &mut Response<B>) {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let Some(downstream) = downstream else {
        return;
    };
    let upstream = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        if let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) {
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        }
    });
}
