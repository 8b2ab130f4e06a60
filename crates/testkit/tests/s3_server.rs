//! The S3 test server: it installs and starts by itself, speaks S3 over plain
//! HTTP, is shared safely between threads, and dies with its owner.

use std::net::TcpStream;
use std::thread;

use corral_testkit::s3::S3Server;

#[test]
fn an_object_round_trips_over_plain_http() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("round-trip").unwrap();
    let path = format!("/{bucket}/dir/hello.txt");
    let bytes = b"hello, corral\n\x00\xff";

    s3.request("PUT", &path, &[("x-amz-meta-sha256", "abc123")], bytes)
        .unwrap()
        .ok()
        .unwrap();

    let got = s3.request("GET", &path, &[], &[]).unwrap().ok().unwrap();
    assert_eq!(got.body, bytes);
    let head = s3.request("HEAD", &path, &[], &[]).unwrap().ok().unwrap();
    assert_eq!(head.header("x-amz-meta-sha256"), Some("abc123"));
    assert_eq!(head.header("content-length"), Some("16"));

    let list = s3
        .request("GET", &format!("/{bucket}?list-type=2"), &[], &[])
        .unwrap()
        .ok()
        .unwrap();
    let list = String::from_utf8(list.body).unwrap();
    assert!(list.contains("<Key>dir/hello.txt</Key>"), "{list}");
}

#[test]
fn a_missing_object_is_an_error_that_says_so() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("missing").unwrap();
    let error = s3
        .request("GET", &format!("/{bucket}/nope"), &[], &[])
        .unwrap()
        .ok()
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("404") && message.contains("NoSuchKey"),
        "{message}"
    );
}

#[test]
fn an_invalid_bucket_name_is_rejected() {
    let error = S3Server::require().create_bucket("ab").unwrap_err();
    assert!(error.to_string().contains("InvalidBucketName"), "{error}");
}

#[test]
fn parallel_callers_share_one_server() {
    let endpoints: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let s3 = S3Server::require();
                    s3.new_bucket("parallel").unwrap();
                    s3.endpoint()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        endpoints.iter().all(|e| *e == endpoints[0]),
        "{endpoints:?}"
    );
}

#[test]
fn own_servers_start_in_parallel_and_stop_on_drop() {
    let servers: Vec<S3Server> = thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| S3Server::start().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(servers[0].addr(), servers[1].addr());

    // Each is its own S3: a bucket in one is not in the other.
    servers[0].create_bucket("only-in-the-first").unwrap();
    let other = servers[1]
        .request("GET", "/only-in-the-first?list-type=2", &[], &[])
        .unwrap();
    assert_eq!(other.status, 404);

    let addrs: Vec<_> = servers.iter().map(S3Server::addr).collect();
    drop(servers);
    for addr in addrs {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still answers");
    }
}
