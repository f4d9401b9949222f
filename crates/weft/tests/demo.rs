//! `weft demo` as a user runs it: a child process that brings up the
//! bookshop mesh, checked from outside through real sockets, then stopped
//! with SIGTERM, after which nothing of it is left listening.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{get, request, start_demo, temp};

const GATEWAY: &str = "127.0.10.10:8080";
const PAGE: &str = "http://127.0.10.10:8080/productpage";

/// The reviews version named in a product page.
fn reviews_version(page: &str) -> Option<&'static str> {
    ["reviews-v1", "reviews-v2", "reviews-v3"]
        .into_iter()
        .find(|v| page.contains(v))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("config dir");
    for e in std::fs::read_dir(from).expect("examples/demo").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn the_demo_serves_the_bookshop_with_every_practice_and_leaves_nothing_behind() {
    let dir = temp("demo");
    let config = dir.join("mesh");
    copy_dir(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo"),
        &config,
    );
    let started = Instant::now();
    let demo = start_demo(&["--config-dir", config.to_str().unwrap_or_default()]);
    println!("ready after {:?}", started.elapsed());
    let pid = demo.0.id();
    // The product page through the ingress gateway.
    let (status, page) = get(GATEWAY, PAGE).expect("the gateway answers");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("William Shakespeare"), "{page}");

    // The 90/10 canary of reviews.
    let mut v2 = 0;
    for _ in 0..200 {
        let (status, page) = get(GATEWAY, PAGE).expect("page");
        assert_eq!(status, 200);
        match reviews_version(&page) {
            Some("reviews-v2") => v2 += 1,
            Some("reviews-v1") => {}
            other => panic!("unexpected reviews {other:?} in {page}"),
        }
    }
    assert!((6..=36).contains(&v2), "{v2} of 200 went to v2");

    // details may not call reviews: only productpage may.
    let (status, body) = request("127.0.10.31:15001", "GET", "http://reviews:9080/reviews/0")
        .expect("the details sidecar answers");
    assert_eq!(status, 403, "{body}");

    // Plaintext to a sidecar's inbound port is refused (STRICT).
    let plaintext = TcpStream::connect("127.0.10.41:15006").and_then(|mut tcp| {
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.write_all(b"GET /reviews/0 HTTP/1.1\r\nhost: reviews\r\n\r\n")?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer)?;
        Ok(answer)
    });
    assert!(
        plaintext.as_ref().map_or(true, |a| !a.contains(" 200 ")),
        "{plaintext:?}"
    );

    // An external host nobody registered is blocked at the caller's sidecar.
    let (status, _) = request("127.0.10.21:15001", "GET", "http://example.com/")
        .expect("the productpage sidecar answers");
    assert_eq!(status, 502);

    // The registered external API is reached through the egress gateway,
    // by details only: the page shows what it answered, the gateway
    // counted it, and productpage, whom no policy lets out, gets 403.
    assert!(page.contains("Dover Publications"), "{page}");
    let egress = get(
        "127.0.10.11:15090",
        "http://127.0.10.11:15090/stats/prometheus",
    )
    .expect("egress gateway metrics")
    .1;
    assert!(
        egress
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains(r#"destination_service="books.example.com""#)
                && l.contains(r#"response_code="200""#)),
        "{egress}"
    );
    let (status, body) = request(
        "127.0.10.21:15001",
        "GET",
        "http://books.example.com/books/v1/volumes",
    )
    .expect("the productpage sidecar answers");
    assert_eq!(status, 403, "{body}");

    // Istio's metrics at the destination, with the mTLS identity.
    let metrics = get(
        "127.0.10.42:15090",
        "http://127.0.10.42:15090/stats/prometheus",
    )
    .expect("metrics")
    .1;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(r#"reporter="destination""#)
                && l.contains(r#"source_workload="productpage-v1""#)
        })
        .unwrap_or_else(|| panic!("no request from productpage counted at reviews-v2:\n{metrics}"));
    assert!(
        line.contains(r#"destination_workload="reviews-v2""#),
        "{line}"
    );
    assert!(
        line.contains(r#"connection_security_policy="mutual_tls""#),
        "{line}"
    );
    assert!(line.contains(r#"response_code="200""#), "{line}");

    // The configuration is live: move the canary all the way to v2.
    let vs = std::fs::read_to_string(config.join("20-reviews.yaml")).expect("read");
    let moved = vs
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    std::fs::write(config.join("20-reviews.yaml"), moved).expect("edit");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pages: Vec<Option<&str>> = (0..10)
            .map(|_| get(GATEWAY, PAGE).and_then(|(_, p)| reviews_version(&p)))
            .collect();
        if pages.iter().all(|v| *v == Some("reviews-v2")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the canary did not move: {pages:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The fault for one test user: v2's call to ratings gets a 503.
    let as_jason = |tcp: &mut TcpStream| -> std::io::Result<String> {
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.write_all(
            b"GET /productpage HTTP/1.1\r\nhost: shop\r\nend-user: jason\r\nconnection: close\r\n\r\n",
        )?;
        let mut page = String::new();
        tcp.read_to_string(&mut page)?;
        Ok(page)
    };
    let page = TcpStream::connect(GATEWAY)
        .and_then(|mut tcp| as_jason(&mut tcp))
        .expect("page for jason");
    assert!(page.contains("ratings answered 503"), "{page}");
    let (_, page) = get(GATEWAY, PAGE).expect("page");
    assert!(
        page.contains("stars"),
        "others still get their ratings: {page}"
    );

    // SIGTERM stops every child and frees every port.
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut demo = demo;
    let deadline = Instant::now() + Duration::from_secs(20);
    while demo.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    for addr in [
        GATEWAY,
        "127.0.10.1:15012",
        "127.0.10.21:9080",
        "127.0.10.21:15001",
        "127.0.10.42:15008",
        "127.0.10.51:15021",
    ] {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still listens");
    }

    // A demo killed outright leaves its children; the next one stops them
    // and comes up on the same ports.
    let mut crashed = start_demo(&["--config-dir", config.to_str().unwrap_or_default()]);
    let _ = crashed.0.kill();
    let _ = crashed.0.wait();
    assert_eq!(
        get(GATEWAY, PAGE).map(|r| r.0),
        Some(200),
        "the orphans still serve"
    );
    let _again = start_demo(&["--config-dir", config.to_str().unwrap_or_default()]);
    assert_eq!(get(GATEWAY, PAGE).map(|r| r.0), Some(200));
}
