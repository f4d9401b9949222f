//! `weft demo-app`: the bookshop's applications, in the shape of Istio's
//! bookinfo. Plain HTTP servers that know nothing of the mesh: they call
//! each other by service name through their sidecar (`--proxy`, the
//! sidecar's outbound listener, with the service in the Host header).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Run one of the demo's applications (productpage, details, reviews,
/// ratings), or book-api, the stand-in for an external service outside the
/// mesh. productpage calls details and reviews; details calls book-api at
/// books.example.com; reviews v2 and v3 call ratings; v1 does not. Every
/// call goes through --proxy and carries the `end-user` header of the
/// request that caused it.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, value_enum)]
    service: Service,
    /// The application's version (reviews: v1 no stars, v2 black, v3 red).
    #[arg(long, value_name = "VERSION", default_value = "v1")]
    app_version: String,
    /// Where the application listens.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The sidecar's outbound listener, through which it calls others;
    /// without it, calls go straight to the service's name (transparent
    /// capture takes them), and book-api calls no one.
    #[arg(long, value_name = "ADDR")]
    proxy: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
    /// An external book API (a stand-in for Google's Books API, which
    /// Istio's bookinfo calls from details).
    BookApi,
}

/// The external host details calls, registered by a ServiceEntry.
const BOOK_API: &str = "books.example.com";

struct App {
    service: Service,
    version: String,
    proxy: Option<SocketAddr>,
}

type Body = Full<Bytes>;

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", args.listen))?;
    let app = Arc::new(App {
        service: args.service,
        version: args.app_version,
        proxy: args.proxy,
    });
    println!(
        "{:?} {} listening on {}",
        app.service, app.version, args.listen
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app.answer(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(value: &serde_json::Value) -> Response<Body> {
    respond(StatusCode::OK, "application/json", value.to_string())
}

impl App {
    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let user = req
            .headers()
            .get("end-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let path = req.uri().path().to_string();
        match (self.service, path.as_str()) {
            (_, "/health") => respond(StatusCode::OK, "text/plain", "ok\n".into()),
            (Service::Productpage, "/" | "/productpage") => self.productpage(user).await,
            (Service::Details, p) if p.starts_with("/details/") => self.details(user).await,
            (Service::BookApi, "/books/v1/volumes") => json(&serde_json::json!({
                "items": [{"volumeInfo": {
                    "title": "The Comedy of Errors", "publisher": "Dover Publications",
                    "pageCount": 96, "language": "en",
                }}],
            })),
            (Service::Ratings, p) if p.starts_with("/ratings/") => json(&serde_json::json!({
                "id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4},
            })),
            (Service::Reviews, p) if p.starts_with("/reviews/") => self.reviews(user).await,
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }

    /// GET `http://{host}{path}` through the sidecar; `host` is a
    /// service (`reviews:9080`) or an external name.
    async fn call(
        &self,
        host: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<(u16, String), String> {
        let tcp = match self.proxy {
            Some(proxy) => tokio::net::TcpStream::connect(proxy)
                .await
                .map_err(|e| format!("sidecar {proxy}: {e}"))?,
            None => {
                let to = if host.contains(':') {
                    host.to_string()
                } else {
                    format!("{host}:80")
                };
                tokio::net::TcpStream::connect(to.as_str())
                    .await
                    .map_err(|e| format!("{to}: {e}"))?
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::get(path).header(hyper::header::HOST, host);
        if let Some(u) = user {
            req = req.header("end-user", u);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(5), sender.send_request(req))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn reviews(&self, user: Option<String>) -> Response<Body> {
        let stars = match self.version.as_str() {
            "v2" => Some("black"),
            "v3" => Some("red"),
            _ => None,
        };
        let mut reviews = vec![
            serde_json::json!({"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."}),
            serde_json::json!({"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."}),
        ];
        let mut ratings_error = None;
        if let Some(color) = stars {
            match self
                .call("ratings:9080", "/ratings/0", user.as_deref())
                .await
            {
                Ok((200, body)) => {
                    let ratings: serde_json::Value =
                        serde_json::from_str(&body).unwrap_or_default();
                    for r in &mut reviews {
                        let name = r["reviewer"].as_str().unwrap_or_default().to_string();
                        r["rating"] =
                            serde_json::json!({"stars": ratings["ratings"][&name], "color": color});
                    }
                }
                Ok((status, _)) => ratings_error = Some(format!("ratings answered {status}")),
                Err(e) => ratings_error = Some(e),
            }
        }
        json(&serde_json::json!({
            "id": 0,
            "podname": format!("reviews-{}", self.version),
            "reviews": reviews,
            "ratingsError": ratings_error,
        }))
    }

    /// The book's details, with what the external book API says of its
    /// publisher and pages (or why it could not say).
    async fn details(&self, user: Option<String>) -> Response<Body> {
        let mut details = serde_json::json!({
            "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback",
            "language": "English", "isbn-10": "0486424618",
        });
        let path = "/books/v1/volumes?q=isbn:0486424618";
        match self.call(BOOK_API, path, user.as_deref()).await {
            Ok((200, body)) => {
                let found: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let info = &found["items"][0]["volumeInfo"];
                details["publisher"] = info["publisher"].clone();
                details["pages"] = info["pageCount"].clone();
            }
            Ok((status, body)) => {
                details["externalError"] =
                    format!("{BOOK_API} answered {status}: {}", body.trim()).into();
            }
            Err(e) => details["externalError"] = format!("{BOOK_API}: {e}").into(),
        }
        json(&details)
    }

    async fn productpage(&self, user: Option<String>) -> Response<Body> {
        let (details, reviews) = tokio::join!(
            self.call("details:9080", "/details/0", user.as_deref()),
            self.call("reviews:9080", "/reviews/0", user.as_deref())
        );
        let section = |name: &str, r: Result<(u16, String), String>| match r {
            Ok((200, body)) => format!("<h2>{name}</h2>\n<pre>{}</pre>\n", escape(&body)),
            Ok((status, body)) => format!(
                "<h2>{name}</h2>\n<p class=\"error\">{name} answered {status}: {}</p>\n",
                escape(body.trim())
            ),
            Err(e) => format!(
                "<h2>{name}</h2>\n<p class=\"error\">{name} unreachable: {}</p>\n",
                escape(&e)
            ),
        };
        let user_line = user
            .map(|u| format!("<p>signed in as {}</p>\n", escape(&u)))
            .unwrap_or_default();
        let page = format!(
            "<!doctype html>\n<html><head><title>The Comedy of Errors</title></head><body>\n<h1>The Comedy of Errors</h1>\n{user_line}{}{}</body></html>\n",
            section("details", details),
            section("reviews", reviews)
        );
        respond(StatusCode::OK, "text/html; charset=utf-8", page)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
