//! `corral bench front` as a process in front of moto: it prints its
//! endpoint, serves its stats, throttles what its slots do not admit, and
//! prints its final stats as JSON when told to stop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use corral_testkit::s3::S3Server;

/// moto treats a request without `Authorization` as anonymous; it never
/// checks the signature.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=corral-test/20260101/us-east-1/s3/aws4_request, \
    SignedHeaders=host, Signature=0";

/// A `corral bench front`, killed on drop.
struct FrontProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    endpoint: String,
}

impl FrontProcess {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["bench", "front"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(endpoint) = line.trim().strip_prefix("front listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the front did not start: {line:?}");
        };
        Self {
            endpoint: endpoint.to_owned(),
            child,
            stdout,
        }
    }

    /// SIGTERM, then everything it printed after its first line.
    fn terminate(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        rest
    }
}

impl Drop for FrontProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn one_slot_admits_one_of_two_puts_and_the_stats_say_so() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("bench-front").unwrap();
    let upstream = s3.addr().to_string();
    let front = FrontProcess::start(&[
        "--upstream",
        &upstream,
        "--slots",
        "1",
        "--latency",
        "300ms",
        "--duration",
        "20s",
    ]);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let stats = http
        .get(format!("{}/stats", front.endpoint))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["received"], 0, "{stats}");
    assert_eq!(stats["slots"], 1, "{stats}");

    let put = |key: &str| {
        http.put(format!("{}/{bucket}/{key}", front.endpoint))
            .header("authorization", DUMMY_AUTHORIZATION)
            .header("content-type", "application/octet-stream")
            .body(format!("body of {key}"))
            .send()
    };
    let (first, second) = tokio::join!(put("k1"), put("k2"));
    let mut statuses = Vec::new();
    for response in [first.unwrap(), second.unwrap()] {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        if status == 503 {
            assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503]);

    let rest = front.terminate();
    let stats: serde_json::Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(stats["received"], 2, "{stats}");
    assert_eq!(stats["forwarded"], 1, "{stats}");
    assert_eq!(stats["throttled"], 1, "{stats}");
}
