//! What the HTTP tests share: a corral server on a real socket, and helpers
//! to talk to it.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use corral_sched::{SchedConfig, Scheduler};
use corral_server::{AppState, Auth, ServerConfig, TenantSpec, token_sha256};
use corral_store::{Spool, SpoolConfig, Store, StoreConfig};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A corral server on a port of its own, storing in a directory of its own.
pub struct Server {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The bucket, when the server stores in the test S3 server.
    pub bucket: Option<String>,
    pub store: Store,
    pub client: reqwest::Client,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
    /// The spool directory, when the server takes asynchronous uploads.
    pub spool_dir: Option<tempfile::TempDir>,
}

/// How a test server stores: the store's settings and its scheduler's, as
/// `corral serve` builds them. A plain [`StoreConfig`] gets the default
/// scheduler.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    pub store: StoreConfig,
    pub sched: SchedConfig,
}

impl From<StoreConfig> for Storage {
    fn from(store: StoreConfig) -> Self {
        Self {
            store,
            sched: SchedConfig::default(),
        }
    }
}

impl Storage {
    /// The store and the scheduler it was opened with.
    pub async fn open(self, url: &str) -> (Store, Scheduler) {
        let scheduler = Scheduler::new(self.sched);
        let store = Store::open(url, self.store, scheduler.clone())
            .await
            .unwrap();
        (store, scheduler)
    }
}

impl Server {
    pub async fn start() -> Self {
        Self::with(ServerConfig::default(), StoreConfig::default()).await
    }

    pub async fn with(config: ServerConfig, storage: impl Into<Storage>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap().to_owned();
        Self::on(&url, dir, config, storage).await
    }

    /// A server storing in a fresh bucket of the test S3 server (moto).
    pub async fn on_s3(config: ServerConfig, storage: impl Into<Storage>) -> Self {
        let endpoint = corral_testkit::s3::S3Server::require().endpoint();
        Self::on_s3_at(&endpoint, config, storage).await
    }

    /// On a bucket of the test S3 server, reached through `endpoint` (the
    /// server itself, or a front before it).
    pub async fn on_s3_at(
        endpoint: &str,
        config: ServerConfig,
        storage: impl Into<Storage>,
    ) -> Self {
        use corral_testkit::s3;
        let mut storage = storage.into();
        let store_config = &mut storage.store;
        let bucket = s3::S3Server::require().new_bucket("http").unwrap();
        store_config.s3 = corral_store::S3Options::compatible(
            endpoint,
            s3::REGION,
            s3::ACCESS_KEY_ID,
            s3::SECRET_ACCESS_KEY,
        );
        // moto dates every multipart upload in 2010: a sweep would take the
        // test's own uploads for abandoned ones.
        store_config.orphan_sweep = None;
        let url = format!("s3://{bucket}/data");
        let mut server = Self::on(&url, tempfile::tempdir().unwrap(), config, storage).await;
        server.bucket = Some(bucket);
        server
    }

    /// What the bucket holds, asked of S3 directly: object keys and the
    /// keys of multipart uploads still open.
    pub fn s3_leftovers(&self) -> (Vec<String>, Vec<String>) {
        let server = corral_testkit::s3::S3Server::require();
        let bucket = self.bucket.as_deref().expect("an S3 server");
        let keys = |query: &str| {
            let answer = server
                .request("GET", &format!("/{bucket}?{query}"), &[], b"")
                .unwrap();
            assert_eq!(
                answer.status,
                200,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            text.split("<Key>")
                .skip(1)
                .filter_map(|rest| rest.split("</Key>").next().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        (keys("list-type=2"), keys("uploads"))
    }

    /// Waits until the bucket holds no object and no open multipart
    /// upload, or fails after ten seconds.
    pub async fn assert_nothing_left_in_s3(&self) {
        for _ in 0..200 {
            let (objects, uploads) = self.s3_leftovers();
            if objects.is_empty() && uploads.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "left behind in S3 (objects, open uploads): {:?}",
            self.s3_leftovers()
        );
    }

    pub async fn on(
        url: &str,
        dir: tempfile::TempDir,
        config: ServerConfig,
        storage: impl Into<Storage>,
    ) -> Self {
        let (store, scheduler) = storage.into().open(url).await;
        let state = AppState::new(store.clone(), scheduler, config);
        Self::serve(dir, store, state).await
    }

    /// A server on local disk that asks for the bearer tokens of `auth`.
    pub async fn with_auth(config: ServerConfig, auth: Auth) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, scheduler) = Storage::default().open(dir.path().to_str().unwrap()).await;
        let state = AppState::new(store.clone(), scheduler, config).with_auth(auth);
        Self::serve(dir, store, state).await
    }

    /// A server on local disk that spools asynchronous uploads, at most
    /// `spool_max` bytes, in a directory of its own; with `auth` if given.
    pub async fn with_spool(config: ServerConfig, spool_max: u64, auth: Option<Auth>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, scheduler) = Storage::default().open(dir.path().to_str().unwrap()).await;
        let spool_dir = tempfile::tempdir().unwrap();
        let spool_config = SpoolConfig {
            dir: spool_dir.path().to_owned(),
            max_bytes: spool_max,
            keep_jobs: std::time::Duration::from_secs(3600),
            workers: 2,
        };
        let spool = Spool::open(spool_config, store.clone()).await.unwrap();
        let mut state = AppState::new(store.clone(), scheduler, config).with_spool(spool);
        if let Some(auth) = auth {
            state = state.with_auth(auth);
        }
        let mut server = Self::serve(dir, store, state).await;
        server.spool_dir = Some(spool_dir);
        server
    }

    /// The entries of the spool directory other than its journal.
    pub fn spooled(&self) -> Vec<PathBuf> {
        let dir = self.spool_dir.as_ref().expect("a spool").path();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| !path.ends_with("journal.redb"))
            .collect();
        entries.sort();
        entries
    }

    /// Waits until the spool holds nothing but its journal, or fails after
    /// ten seconds.
    pub async fn assert_nothing_spooled(&self) {
        for _ in 0..200 {
            if self.spooled().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("left in the spool: {:?}", self.spooled());
    }

    async fn serve(dir: tempfile::TempDir, store: Store, state: AppState) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(corral_server::run(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            dir,
            bucket: None,
            store,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            spool_dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn upload(&self, form: Form) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/api/files"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        json(response).await
    }

    /// Posts a multipart body made by hand (see [`multipart`]).
    pub async fn post_multipart(&self, boundary: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let response = self
            .client
            .post(self.url("/api/files"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        json(response).await
    }

    /// The files the holder of `token` (none: the anonymous tenant) has:
    /// each one's name (its key's last segment) and the SHA-256 of what a
    /// `GET` returns, sorted.
    pub async fn stored_files(&self, token: Option<&str>) -> Vec<(String, String)> {
        let authorized = |request: reqwest::RequestBuilder| match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let listing = authorized(self.client.get(self.url("/api/files?limit=1000")));
        let (status, listing) = json(listing.send().await.unwrap()).await;
        assert_eq!(status, 200, "{listing}");
        let mut files = Vec::new();
        for file in listing["files"].as_array().unwrap() {
            let key = file["key"].as_str().unwrap();
            let response = authorized(self.client.get(self.file_url(key)))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{key}");
            let body = response.bytes().await.unwrap();
            let name = key.rsplit('/').next().unwrap().to_owned();
            files.push((name, sha256(&body)));
        }
        files.sort();
        files
    }

    pub async fn get(&self, key: &str) -> reqwest::Response {
        self.client.get(self.file_url(key)).send().await.unwrap()
    }

    pub async fn head(&self, key: &str) -> reqwest::Response {
        self.client.head(self.file_url(key)).send().await.unwrap()
    }

    pub async fn delete(&self, key: &str) -> reqwest::Response {
        self.client.delete(self.file_url(key)).send().await.unwrap()
    }

    /// `method` on `path`, with no body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        let request = self.client.request(method, self.url(path));
        request.send().await.unwrap()
    }

    /// Asserts that an upload is still stored: the server survived what
    /// the test did to it.
    pub async fn assert_still_serving(&self) {
        let form = Form::new().part("f", file("after.txt", b"ok".to_vec()));
        let (status, body) = self.upload(form).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub fn file_url(&self, key: &str) -> String {
        let mut url = reqwest::Url::parse(&self.url("/api/files/")).unwrap();
        url.path_segments_mut()
            .unwrap()
            .pop_if_empty()
            .extend(key.split('/'));
        url.to_string()
    }

    /// Every regular file under the data directory: objects, metadata
    /// documents and the staging files of unfinished uploads.
    pub fn files_on_disk(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(self.dir.path(), &mut found);
        found
    }

    /// Waits until the data directory holds no file at all, or fails after
    /// ten seconds (cleanups of a request that vanished run in the
    /// background).
    pub async fn assert_nothing_left(&self) {
        for _ in 0..200 {
            if self.files_on_disk().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("left behind: {:?}", self.files_on_disk());
    }

    /// Stops the server as a signal would, and waits until it has.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub async fn json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value)
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic bytes that do not compress or repeat.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn file(name: &str, content: Vec<u8>) -> Part {
    Part::bytes(content).file_name(name.to_owned())
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

pub fn small_parts() -> StoreConfig {
    StoreConfig {
        multipart_threshold: 1 << 20,
        part_size: 1 << 20,
        ..StoreConfig::default()
    }
}

/// A multipart body made by hand, for requests reqwest will not send.
pub fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, file_name, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file_name {
            Some(name) => format!("form-data; name=\"{field}\"; filename=\"{name}\""),
            None => format!("form-data; name=\"{field}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// Sends a request by hand and returns the socket, to read the answer from.
pub async fn send_raw(addr: SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    socket
}

/// Reads an HTTP answer until the server closes or 10 s pass.
pub async fn read_answer(socket: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A tenant with one token and no limits of its own.
pub fn tenant(name: &str, token: &str) -> TenantSpec {
    TenantSpec {
        name: name.to_owned(),
        token_sha256: vec![token_sha256(token)],
        max_batch_size: None,
        max_upload_memory: None,
        max_spooled_bytes: None,
    }
}
