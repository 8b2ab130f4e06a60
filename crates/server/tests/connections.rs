//! The most connections served at once (`max_connections`), over real
//! sockets: held idle keep-alive connections fill it, one more is told
//! `503 too_many_connections`, and a place freed lets the next one in.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Server, read_answer};
use corral_server::ServerConfig;
use corral_store::StoreConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTH: &str = "GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n";

/// A connection that was served one request and is kept alive.
async fn kept_alive(addr: SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(HEALTH.as_bytes()).await.unwrap();
    let head = read_one(&mut socket).await;
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    socket
}

/// Reads one answer of a kept-alive connection (its head, and a body of
/// `content-length` bytes); its head, in lower case.
async fn read_one(socket: &mut TcpStream) -> String {
    let mut read = Vec::new();
    let mut buf = [0; 1024];
    let end = loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&read));
        read.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
    let length: usize = (head.lines())
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    while read.len() < end + length {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0);
        read.extend_from_slice(&buf[..n]);
    }
    head
}

/// The whole answer to `request` on a new connection, read until the
/// server closes it.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut socket).await
}

fn metric(metrics: &str, series: &str) -> f64 {
    (metrics.lines())
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_connection_beyond_the_limit_gets_503_until_one_of_those_held_closes() {
    let config = ServerConfig {
        max_connections: 4,
        ..ServerConfig::default()
    };
    let server = Server::with(config, StoreConfig::default()).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(kept_alive(server.addr).await);
    }

    // The fifth is answered, whether its request came or not.
    let close = "GET /healthz HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n";
    let mut refused = 0;
    for request in [close, ""] {
        let answer = exchange(server.addr, request).await;
        refused += 1;
        let (head, body) = answer.split_once("\r\n\r\n").expect(&answer);
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        let head = head.to_ascii_lowercase();
        for line in [
            "retry-after: 5",
            "connection: close",
            "content-type: application/json",
        ] {
            assert!(head.contains(&format!("\r\n{line}\r\n")), "{head}");
        }
        assert!(head.contains("\r\ndate: "), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("retry after 5 s"), "{message}");
    }

    // Those held are still served.
    for socket in &mut held {
        socket.write_all(HEALTH.as_bytes()).await.unwrap();
        let head = read_one(socket).await;
        assert!(head.starts_with("http/1.1 200 "), "{head}");
    }

    // One closes: its place goes to the next connection, once the server
    // has seen it close.
    drop(held.pop());
    let mut served = false;
    for _ in 0..200 {
        let answer = exchange(server.addr, close).await;
        if answer.starts_with("HTTP/1.1 200 ") {
            served = true;
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "no place was freed");

    // Three held and the one scraping.
    let metrics = exchange(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
    let reason = r#"corral_refusals_total{reason="too_many_connections"}"#;
    assert_eq!(metric(&metrics, reason), f64::from(refused));
    assert_eq!(metric(&metrics, "corral_http_connections"), 4.0);
    assert_eq!(metric(&metrics, "corral_http_connections_limit"), 4.0);
    drop(held);
    server.stop().await;
}
