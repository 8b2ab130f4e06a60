//! A minimal std-only HTTP/1.1 client, for setting up and inspecting the
//! state of the test servers ([`crate::s3`], [`crate::gcs`],
//! [`crate::azure`]) independently of the code under test, and from
//! synchronous code that may run inside a tokio runtime.
//!
//! One request per connection (`Connection: close`); the whole response is
//! read before it is returned.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The request, as `METHOD /path`, for error messages.
    request: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response if its status is 2xx.
    ///
    /// # Errors
    ///
    /// [`StatusError`], with the body, otherwise.
    pub fn ok(self) -> Result<Self, StatusError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(StatusError {
                request: self.request,
                status: self.status,
                body: String::from_utf8_lossy(&self.body).into_owned(),
            })
        }
    }
}

/// A response whose status is not 2xx; see [`Response::ok`].
#[derive(Debug, Clone)]
pub struct StatusError {
    /// The request, as `METHOD /path`.
    pub request: String,
    /// The response's status.
    pub status: u16,
    /// The response's body, lossily decoded.
    pub body: String,
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} answered {}: {}",
            self.request, self.status, self.body
        )
    }
}

impl StdError for StatusError {}

/// A request that could not be sent or whose response could not be read.
#[derive(Debug)]
pub(crate) struct Failed {
    /// The request and the step that failed.
    pub(crate) context: String,
    /// What went wrong.
    pub(crate) source: io::Error,
}

/// Sends one request to `addr` and reads the whole response. `Host`,
/// `Connection: close` and `Content-Length` are sent besides `headers`.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, Failed> {
    let name = format!("{method} {path}");
    let failed = |what: &str| {
        let context = format!("{name}: {what}");
        move |source| Failed { context, source }
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(failed("connect"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(failed("set timeouts"))?;
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(failed("send"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(failed("receive"))?;
    parse_response(&raw, method == "HEAD")
        .map(|mut response| {
            response.request = name.clone();
            response
        })
        .map_err(|problem| Failed {
            context: format!("{name}: {problem}"),
            source: io::Error::from(io::ErrorKind::InvalidData),
        })
}

/// Splits a message's head into its first line and its headers (names
/// lowercased); `None` if it is not UTF-8.
pub(crate) fn parse_head(head: &[u8]) -> Option<(&str, Vec<(String, String)>)> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((first, headers))
}

/// Parses a whole `Connection: close` response.
fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response has no end of headers")?;
    let (status_line, headers) = parse_head(&raw[..end]).ok_or("the headers are not UTF-8")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
        request: String::new(),
    };

    let rest = &raw[end + 4..];
    if head_only || status == 204 || status == 304 {
        return Ok(response);
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(rest)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        response.body = rest
            .get(..length)
            .ok_or_else(|| format!("body of {} bytes, expected {length}", rest.len()))?
            .to_vec();
    } else {
        response.body = rest.to_vec();
    }
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("a chunk is cut short")?);
        rest = rest.get(size + 2..).ok_or("a chunk is cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_with_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Amz-Meta-A: b\r\n\r\nhello";
        let response = parse_response(raw, false).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-amz-meta-a"), Some("b"));
        assert_eq!(response.body, b"hello");
    }

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw, false).unwrap().body, b"hello");
    }

    #[test]
    fn a_head_response_has_no_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let response = parse_response(raw, true).unwrap();
        assert_eq!(response.header("Content-Length"), Some("5"));
        assert!(response.body.is_empty());
    }

    #[test]
    fn rejects_a_truncated_response() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", false).is_err());
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello";
        assert!(parse_response(short, false).is_err());
    }
}
