//! `corral serve`'s settings: the defaults, overridden by the config file,
//! then the environment, then flags.
//!
//! One struct, [`Overrides`], is both the flags (with their `CORRAL_*`
//! variables, which clap reads) and the file's keys, so the two cannot
//! drift apart. Each field is `None` unless its source sets it; [`resolve`]
//! lays the sources over [`Settings::default`] in order of precedence.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::builder::BoolishValueParser;
use corral_sched::{AdaptiveConfig, LimitConfig, QueueConfig, SchedConfig};
use corral_server::ServerConfig;
use corral_store::{AzureOptions, GcsOptions, S3Options, SpoolConfig, StoreConfig};
use serde::{Deserialize, Deserializer};

use crate::cli::ServeArgs;
use crate::units::{ByteSize, Span};

/// Spooled files uploaded at once: each holds one upload buffer, and the
/// scheduler decides how many backend calls they make.
const SPOOL_WORKERS: usize = 4;

/// The adaptive limit's floor on a local directory. Its calls are this
/// process's own system calls, on the CPUs that also serve the requests:
/// each call more in flight adds latency as well as throughput, the model
/// of a knee does not fit (see `corral_sched::limit::adaptive`, "the floor
/// is 2"), and the limit sank to 2 or 3, where the disk idles between
/// `fsync`s. Measured with tus-js-client sending 200 x 1 MiB, 8 at once,
/// on two cores: 496 and 530 MiB/s with the floor at 2, 563 to 586 at any
/// fixed limit from 4 to 64 (`docs/BENCHMARKS.md`). There is no remote
/// capacity to protect; memory is bounded by `--upload-memory` whatever
/// the limit.
const LOCAL_CONCURRENCY_MIN: usize = 8;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Human => "human",
            Self::Json => "json",
        })
    }
}

/// Settings as one source gives them; `None` where it is silent.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Overrides {
    /// Address to listen on: IP:PORT (`0.0.0.0:8080`, `[::1]:8080`),
    /// HOST:PORT (`localhost:8080`), or a port alone for the loopback
    /// address [default: 127.0.0.1:8080].
    #[arg(long, env = "CORRAL_LISTEN", value_name = "ADDR", value_parser = listen_address)]
    #[serde(default, deserialize_with = "parsed_with_listen_address")]
    pub(crate) listen: Option<SocketAddr>,

    /// Most connections served at once, idle keep-alive connections
    /// included; one beyond is answered 503 too_many_connections with
    /// Retry-After and closed. Each takes a file descriptor: corral raises
    /// its open-files limit to the hard limit at start, and warns if that
    /// is below this [default: 16384].
    #[arg(long, env = "CORRAL_MAX_CONNECTIONS", value_name = "N")]
    pub(crate) max_connections: Option<usize>,

    /// Where files are stored: a directory (`./corral-data`,
    /// `file:///srv/corral`), an S3 bucket (`s3://bucket/prefix`, credentials
    /// from the AWS environment variables), a GCS bucket (`gs://bucket/prefix`,
    /// credentials from GOOGLE_APPLICATION_CREDENTIALS), an Azure container
    /// (`az://container/prefix`, account from AZURE_STORAGE_ACCOUNT_NAME and
    /// AZURE_STORAGE_ACCOUNT_KEY) or `memory://` [default: ./corral-data].
    #[arg(long, env = "CORRAL_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,

    /// S3 endpoint, for S3-compatible stores such as MinIO or Ceph
    /// (`http://127.0.0.1:9000`) [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long, env = "CORRAL_S3_ENDPOINT", value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,

    /// S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "CORRAL_S3_REGION", value_name = "REGION")]
    pub(crate) s3_region: Option<String>,

    /// Use path-style S3 requests (endpoint/bucket/key), as most
    /// S3-compatible stores want.
    #[arg(long, env = "CORRAL_S3_PATH_STYLE", value_parser = BoolishValueParser::new())]
    #[serde(default)]
    pub(crate) s3_path_style: bool,

    /// Allow a plain http:// S3 endpoint.
    #[arg(long, env = "CORRAL_S3_ALLOW_HTTP", value_parser = BoolishValueParser::new())]
    #[serde(default)]
    pub(crate) s3_allow_http: bool,

    /// Do not send SHA-256 checksums with S3 objects and parts
    /// (x-amz-checksum-sha256), for S3-compatible stores that refuse them.
    /// With checksums the store itself rejects bytes damaged on the way.
    #[arg(long, env = "CORRAL_S3_NO_CHECKSUMS", value_parser = BoolishValueParser::new())]
    #[serde(default)]
    pub(crate) s3_no_checksums: bool,

    /// How often to abort multipart uploads that crashed processes left
    /// under the store's prefix (on S3; staging files on local disk), which
    /// cloud providers bill until aborted; also done at startup. `0s`
    /// turns it off [default: 1h].
    #[arg(long, env = "CORRAL_ORPHAN_SWEEP", value_name = "DURATION")]
    pub(crate) orphan_sweep: Option<Span>,

    /// How old an unfinished multipart upload must be for the sweep to
    /// abort it; longer than any upload takes, so that processes sharing
    /// a prefix never abort each other's [default: 1d].
    #[arg(long, env = "CORRAL_ORPHAN_AGE", value_name = "DURATION")]
    pub(crate) orphan_age: Option<Span>,

    /// Limit on storage calls in flight, process-wide: `adaptive` finds
    /// the backend's capacity by itself; `fixed:N` holds N. (`unbounded`
    /// and `per-request:N`, naive designs for `corral bench` to compare
    /// against, are accepted only by a build with `--features bench`.)
    /// [default: adaptive].
    #[arg(long, env = "CORRAL_CONCURRENCY", value_name = "SPEC")]
    #[serde(default, deserialize_with = "parsed")]
    pub(crate) concurrency: Option<LimitConfig>,

    /// Lowest limit the adaptive strategy may set; also the MIN of
    /// `--concurrency adaptive:MIN-MAX`; 1 only for a backend that takes
    /// one call at a time [default: 8 on a local directory, else 2].
    #[arg(long, env = "CORRAL_CONCURRENCY_MIN", value_name = "N")]
    pub(crate) concurrency_min: Option<usize>,

    /// Highest limit the adaptive strategy may set; also the MAX of
    /// `--concurrency adaptive:MIN-MAX` [default: 256].
    #[arg(long, env = "CORRAL_CONCURRENCY_MAX", value_name = "N")]
    pub(crate) concurrency_max: Option<usize>,

    /// Most storage calls waiting for a slot; beyond, new requests get 429
    /// with Retry-After [default: 10000].
    #[arg(long, env = "CORRAL_MAX_QUEUED_JOBS", value_name = "N")]
    pub(crate) max_queued_jobs: Option<usize>,

    /// Most bytes of storage calls waiting for a slot; beyond, new requests
    /// get 429 with Retry-After [default: 4GiB].
    #[arg(long, env = "CORRAL_MAX_QUEUED_BYTES", value_name = "SIZE")]
    pub(crate) max_queued_bytes: Option<ByteSize>,

    /// Largest file in a batch; larger ones get 413 [default: 5GiB].
    #[arg(long, env = "CORRAL_MAX_FILE_SIZE", value_name = "SIZE")]
    pub(crate) max_file_size: Option<ByteSize>,

    /// Largest request body of a batch; larger ones get 413 [default: 20GiB].
    #[arg(long, env = "CORRAL_MAX_BATCH_SIZE", value_name = "SIZE")]
    pub(crate) max_batch_size: Option<ByteSize>,

    /// Most files in one batch; more get 413 [default: 1000].
    #[arg(long, env = "CORRAL_MAX_FILES", value_name = "N")]
    pub(crate) max_files: Option<usize>,

    /// Largest resumable upload (`/api/uploads`, tus and the IETF draft);
    /// larger ones get 413 [default: 5GiB].
    #[arg(long, env = "CORRAL_TUS_MAX_SIZE", value_name = "SIZE")]
    pub(crate) tus_max_size: Option<ByteSize>,

    /// Most resumable uploads a tenant may have open on this instance;
    /// beyond, a creation gets 429 tenant_busy [default: 1000].
    #[arg(long, env = "CORRAL_MAX_OPEN_UPLOADS", value_name = "N")]
    pub(crate) max_open_uploads: Option<usize>,

    /// How long after its creation a resumable upload is removed, finished
    /// or not (`Upload-Expires`); at most --orphan-age [default: 1d].
    #[arg(long, env = "CORRAL_UPLOAD_EXPIRY", value_name = "DURATION")]
    pub(crate) upload_expiry: Option<Span>,

    /// How long an instance holds a resumable upload it is writing unless
    /// it renews the hold: other instances sharing the store refuse the
    /// upload (423) meanwhile, and take it over once an instance that died
    /// lets it expire; more than --body-timeout [default: 90s].
    #[arg(long, env = "CORRAL_UPLOAD_LEASE", value_name = "DURATION")]
    pub(crate) upload_lease: Option<Span>,

    /// How long an upload may send nothing before it gets 408 [default: 30s].
    #[arg(long, env = "CORRAL_BODY_TIMEOUT", value_name = "DURATION")]
    pub(crate) body_timeout: Option<Span>,

    /// How long requests in progress may run on after SIGTERM or Ctrl-C
    /// before their work is cancelled; also `--shutdown-timeout`
    /// [default: 30s].
    #[arg(
        long,
        visible_alias = "shutdown-timeout",
        env = "CORRAL_SHUTDOWN_GRACE",
        value_name = "DURATION"
    )]
    #[serde(alias = "shutdown_timeout")]
    pub(crate) shutdown_grace: Option<Span>,

    /// Memory all uploads in progress may buffer together; an upload
    /// reserves its share before its body is read, and waits for it when
    /// none is left (see --upload-queue) [default: 512MiB].
    #[arg(long, env = "CORRAL_UPLOAD_MEMORY", value_name = "SIZE")]
    pub(crate) upload_memory: Option<ByteSize>,

    /// Most uploads that may wait, unread, for upload memory, first come
    /// first served; beyond, 429 with Retry-After [default: 1000].
    #[arg(long, env = "CORRAL_UPLOAD_QUEUE", value_name = "N")]
    pub(crate) upload_queue: Option<usize>,

    /// Longest an upload waits for upload memory before it gets 429 with
    /// Retry-After (which never asks for longer than this); keep it below
    /// the 30 s after which common clients give up on an upload that makes
    /// no progress [default: 20s].
    #[arg(long, env = "CORRAL_UPLOAD_WAIT", value_name = "DURATION")]
    pub(crate) upload_wait: Option<Span>,

    /// Directory where asynchronous uploads (`Prefer: respond-async`) are
    /// spooled and journaled until stored, and where synchronous batches
    /// in progress are journaled (batches.redb); jobs left there resume,
    /// and batches left unfinished are rolled back, when corral starts
    /// again [default: ./corral-spool].
    #[arg(long, env = "CORRAL_SPOOL_DIR", value_name = "DIR")]
    pub(crate) spool_dir: Option<PathBuf>,

    /// Most bytes of asynchronous uploads the spool may hold, not yet
    /// stored; beyond, asynchronous uploads get 429 [default: 10GiB].
    #[arg(long, env = "CORRAL_SPOOL_MAX", value_name = "SIZE")]
    pub(crate) spool_max: Option<ByteSize>,

    /// How long the record of an asynchronous upload is kept once it
    /// ended; `GET /api/jobs/{id}` answers 404 after [default: 7d].
    #[arg(long, env = "CORRAL_KEEP_JOBS", value_name = "DURATION")]
    pub(crate) keep_jobs: Option<Span>,

    /// Files up to this size are stored in one call; larger ones are
    /// multipart uploads [default: 16MiB].
    #[arg(long, env = "CORRAL_MULTIPART_THRESHOLD", value_name = "SIZE")]
    pub(crate) multipart_threshold: Option<ByteSize>,

    /// Size of each part of a multipart upload, at least 5MiB for S3; grown
    /// for a file that would otherwise need more than 10,000 parts. An
    /// upload in progress holds at most max(threshold, part size) in memory
    /// [default: 8MiB].
    #[arg(long, env = "CORRAL_PART_SIZE", value_name = "SIZE")]
    pub(crate) part_size: Option<ByteSize>,

    /// Memory for reads of hot keys: concurrent GETs and HEADs of one key
    /// share one backend call, and files up to 1MiB read in the last 2 s
    /// are served from memory; 0 turns it off [default: 64MiB].
    #[arg(long, env = "CORRAL_READ_CACHE", value_name = "SIZE")]
    pub(crate) read_cache: Option<ByteSize>,

    /// How logs are written on stderr (their level is CORRAL_LOG's, see
    /// below) [default: human].
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,

    /// The auth file: tenants, the SHA-256 of their bearer tokens, and
    /// their limits (see `corral token`). Every /api request must then carry
    /// `Authorization: Bearer <token>`, and acts for that token's tenant.
    /// Without it, requests act for one anonymous tenant, and corral
    /// listens on loopback addresses only [default: none].
    #[arg(long, env = "CORRAL_AUTH", value_name = "FILE")]
    pub(crate) auth: Option<PathBuf>,

    /// Allow listening on a non-loopback address without --auth: anyone
    /// who reaches corral can read and write every file. Only behind a
    /// proxy that authenticates.
    #[arg(long, env = "CORRAL_INSECURE_NO_AUTH", value_parser = BoolishValueParser::new())]
    #[serde(default)]
    pub(crate) insecure_no_auth: bool,
}

/// The address `--listen` means: `IP:PORT`, `HOST:PORT` (the host's first
/// address, IPv4 first; `localhost` is the IPv4 loopback without asking
/// the resolver) or `PORT` (on the IPv4 loopback, as the default).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::{Ipv4Addr, ToSocketAddrs};
    let text = text.trim();
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let syntax = "use IP:PORT (127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080), HOST:PORT \
                  (localhost:8080) or a port (8080)";
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port: {syntax}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} in {text:?} is not a port (0 to 65535): {syntax}"))?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?} in {text:?} ({e}): {syntax}"))?
        .collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{host:?} in {text:?} has no address: {syntax}"))
}

fn parsed_with_listen_address<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    listen_address(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// The settings `corral serve` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) max_connections: usize,
    pub(crate) store: String,
    pub(crate) s3_endpoint: Option<String>,
    pub(crate) s3_region: Option<String>,
    pub(crate) s3_path_style: bool,
    pub(crate) s3_allow_http: bool,
    pub(crate) s3_no_checksums: bool,
    /// `0s`: never.
    pub(crate) orphan_sweep: Span,
    pub(crate) orphan_age: Span,
    pub(crate) concurrency: LimitConfig,
    /// Overrides the adaptive range of `concurrency` when set.
    pub(crate) concurrency_min: Option<usize>,
    pub(crate) concurrency_max: Option<usize>,
    pub(crate) max_queued_jobs: usize,
    pub(crate) max_queued_bytes: ByteSize,
    pub(crate) max_file_size: ByteSize,
    pub(crate) max_batch_size: ByteSize,
    pub(crate) max_files: usize,
    pub(crate) tus_max_size: ByteSize,
    pub(crate) max_open_uploads: usize,
    pub(crate) upload_expiry: Span,
    pub(crate) upload_lease: Span,
    pub(crate) body_timeout: Span,
    pub(crate) shutdown_grace: Span,
    pub(crate) upload_memory: ByteSize,
    pub(crate) upload_queue: usize,
    pub(crate) upload_wait: Span,
    pub(crate) spool_dir: PathBuf,
    pub(crate) spool_max: ByteSize,
    pub(crate) keep_jobs: Span,
    pub(crate) multipart_threshold: ByteSize,
    pub(crate) part_size: ByteSize,
    pub(crate) read_cache: ByteSize,
    pub(crate) log_format: LogFormat,
    pub(crate) auth: Option<PathBuf>,
    pub(crate) insecure_no_auth: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let server = ServerConfig::default();
        let store = StoreConfig::default();
        let sched = SchedConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: server.max_connections,
            store: "./corral-data".to_owned(),
            s3_endpoint: None,
            s3_region: None,
            s3_path_style: false,
            s3_allow_http: false,
            s3_no_checksums: false,
            orphan_sweep: Span(store.orphan_sweep.unwrap_or_default()),
            orphan_age: Span(store.orphan_age),
            concurrency: sched.limit,
            concurrency_min: None,
            concurrency_max: None,
            max_queued_jobs: sched.queue.max_jobs,
            max_queued_bytes: ByteSize(sched.queue.max_bytes),
            max_file_size: ByteSize(server.max_file_size),
            max_batch_size: ByteSize(server.max_batch_size),
            max_files: server.max_files,
            tus_max_size: ByteSize(server.tus_max_size),
            max_open_uploads: server.max_open_uploads,
            upload_expiry: Span(store.upload_expiry),
            upload_lease: Span(store.upload_lease),
            body_timeout: Span(server.body_timeout),
            shutdown_grace: Span(server.shutdown_grace),
            upload_memory: ByteSize(server.upload_memory),
            upload_queue: server.upload_queue,
            upload_wait: Span(server.upload_wait),
            spool_dir: PathBuf::from("./corral-spool"),
            spool_max: ByteSize(10 << 30),
            keep_jobs: Span(std::time::Duration::from_secs(7 * 24 * 3600)),
            multipart_threshold: ByteSize(store.multipart_threshold as u64),
            part_size: ByteSize(store.part_size as u64),
            read_cache: ByteSize(store.read_cache as u64),
            log_format: LogFormat::Human,
            auth: None,
            insecure_no_auth: false,
        }
    }
}

impl Settings {
    /// Lays `overrides` over `self`.
    fn apply(&mut self, overrides: Overrides) {
        let Overrides {
            listen,
            max_connections,
            store,
            s3_endpoint,
            s3_region,
            s3_path_style,
            s3_allow_http,
            s3_no_checksums,
            orphan_sweep,
            orphan_age,
            concurrency,
            concurrency_min,
            concurrency_max,
            max_queued_jobs,
            max_queued_bytes,
            max_file_size,
            max_batch_size,
            max_files,
            tus_max_size,
            max_open_uploads,
            upload_expiry,
            upload_lease,
            body_timeout,
            shutdown_grace,
            upload_memory,
            upload_queue,
            upload_wait,
            spool_dir,
            spool_max,
            keep_jobs,
            multipart_threshold,
            part_size,
            read_cache,
            log_format,
            auth,
            insecure_no_auth,
        } = overrides;
        set(&mut self.listen, listen);
        set(&mut self.max_connections, max_connections);
        set(&mut self.store, store);
        // Optional settings: a source that names one sets it.
        set(&mut self.s3_endpoint, s3_endpoint.map(Some));
        set(&mut self.s3_region, s3_region.map(Some));
        self.s3_path_style |= s3_path_style;
        self.s3_allow_http |= s3_allow_http;
        self.s3_no_checksums |= s3_no_checksums;
        set(&mut self.orphan_sweep, orphan_sweep);
        set(&mut self.orphan_age, orphan_age);
        set(&mut self.concurrency, concurrency);
        set(&mut self.concurrency_min, concurrency_min.map(Some));
        set(&mut self.concurrency_max, concurrency_max.map(Some));
        set(&mut self.max_queued_jobs, max_queued_jobs);
        set(&mut self.max_queued_bytes, max_queued_bytes);
        set(&mut self.max_file_size, max_file_size);
        set(&mut self.max_batch_size, max_batch_size);
        set(&mut self.max_files, max_files);
        set(&mut self.tus_max_size, tus_max_size);
        set(&mut self.max_open_uploads, max_open_uploads);
        set(&mut self.upload_expiry, upload_expiry);
        set(&mut self.upload_lease, upload_lease);
        set(&mut self.body_timeout, body_timeout);
        set(&mut self.shutdown_grace, shutdown_grace);
        set(&mut self.upload_memory, upload_memory);
        set(&mut self.upload_queue, upload_queue);
        set(&mut self.upload_wait, upload_wait);
        set(&mut self.spool_dir, spool_dir);
        set(&mut self.spool_max, spool_max);
        set(&mut self.keep_jobs, keep_jobs);
        set(&mut self.multipart_threshold, multipart_threshold);
        set(&mut self.part_size, part_size);
        set(&mut self.read_cache, read_cache);
        set(&mut self.log_format, log_format);
        set(&mut self.auth, auth.map(Some));
        self.insecure_no_auth |= insecure_no_auth;
    }

    /// Checks what no single setting can check alone.
    fn validate(&self) -> anyhow::Result<()> {
        if self.part_size.0 == 0 {
            anyhow::bail!("part-size must be at least 1 byte");
        }
        if self.max_connections == 0 {
            anyhow::bail!("max-connections must be at least 1");
        }
        if self.max_files == 0 {
            anyhow::bail!("max-files must be at least 1");
        }
        if self.upload_lease.0 <= self.body_timeout.0 {
            anyhow::bail!(
                "upload-lease ({}) must be more than body-timeout ({}): a request waiting for \
                 its client's next bytes would lose its upload to another instance",
                self.upload_lease,
                self.body_timeout
            );
        }
        if self.upload_expiry.0 > self.orphan_age.0 {
            anyhow::bail!(
                "upload-expiry ({}) must be at most orphan-age ({}): the orphan sweep would \
                 abort the parts of resumable uploads still open",
                self.upload_expiry,
                self.orphan_age
            );
        }
        if let Some(endpoint) = &self.s3_endpoint
            && endpoint.starts_with("http://")
            && !self.s3_allow_http
        {
            anyhow::bail!(
                "s3-endpoint {endpoint} is plain HTTP, which corral refuses unless told: add \
                 --s3-allow-http (CORRAL_S3_ALLOW_HTTP=true), or use an https:// endpoint"
            );
        }
        if (self.store.starts_with("s3://") || self.store.starts_with("gs://"))
            && self.part_size.0 < 5 << 20
        {
            anyhow::bail!(
                "part-size ({}) is below 5MiB, the smallest part S3 and GCS accept",
                self.part_size
            );
        }
        let per_upload = self.multipart_threshold.0.max(self.part_size.0) + (1 << 20);
        if self.upload_memory.0 < per_upload {
            anyhow::bail!(
                "upload-memory ({}) is less than one upload may buffer ({}: the larger of \
                 multipart-threshold and part-size, plus 1MiB): no upload could start",
                self.upload_memory,
                ByteSize(per_upload)
            );
        }
        self.limit()?;
        if !cfg!(feature = "bench")
            && matches!(
                self.concurrency,
                LimitConfig::Unbounded | LimitConfig::PerRequest(_)
            )
        {
            anyhow::bail!(
                "concurrency {} is a baseline for `corral bench` to compare against, not a \
                 limit to serve with: use `adaptive` or `fixed:N` (a build with `--features \
                 bench` accepts it)",
                self.concurrency
            );
        }
        if !self.listen.ip().is_loopback() && self.auth.is_none() && !self.insecure_no_auth {
            anyhow::bail!(
                "refusing to listen on {} without authentication: anyone who can reach it \
                 could read and write every file. Give an auth file (--auth tokens.toml, \
                 see `corral token`), listen on a loopback address (such as 127.0.0.1), or \
                 pass --insecure-no-auth if a proxy in front of corral authenticates requests",
                self.listen
            );
        }
        Ok(())
    }

    pub(crate) fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_file_size: self.max_file_size.0,
            max_batch_size: self.max_batch_size.0,
            max_files: self.max_files,
            tus_max_size: self.tus_max_size.0,
            max_open_uploads: self.max_open_uploads,
            body_timeout: self.body_timeout.0,
            shutdown_grace: self.shutdown_grace.0,
            upload_memory: self.upload_memory.0,
            upload_queue: self.upload_queue,
            upload_wait: self.upload_wait.0,
            max_connections: self.max_connections,
        }
    }

    pub(crate) fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            dir: self.spool_dir.clone(),
            max_bytes: self.spool_max.0,
            keep_jobs: self.keep_jobs.0,
            workers: SPOOL_WORKERS,
        }
    }

    /// The limit strategy, with `--concurrency-min/-max` applied to an
    /// adaptive one (which then starts where the new range puts it).
    ///
    /// # Errors
    ///
    /// The range the flags make is empty or starts at 0.
    fn limit(&self) -> anyhow::Result<LimitConfig> {
        let Some((adaptive, (min, max))) = self.adaptive_range() else {
            return Ok(self.concurrency);
        };
        // Each bound by its name, and where it came from unless a flag set it.
        let named = |name, flag: Option<usize>, value| match flag {
            Some(_) => format!("{name} ({value})"),
            None => format!("{name} ({value}, from concurrency {})", self.concurrency),
        };
        let config = AdaptiveConfig::builder()
            .min(min)
            .max(max)
            .probe_interval(adaptive.probe_interval())
            .build()
            .map_err(|error| match error {
                corral_sched::Error::AdaptiveMinZero => anyhow::anyhow!(
                    "{} must be at least 1",
                    named("concurrency-min", self.concurrency_min, min)
                ),
                corral_sched::Error::AdaptiveMinAboveMax { min, max } => anyhow::anyhow!(
                    "{} must be at most {}",
                    named("concurrency-min", self.concurrency_min, min),
                    named("concurrency-max", self.concurrency_max, max)
                ),
                other => other.into(),
            })?;
        Ok(LimitConfig::Adaptive(config))
    }

    /// The adaptive strategy, if it is the one, and its range before
    /// `--concurrency-min/-max`: the one `--concurrency` gives, but for
    /// plain `adaptive` on a local directory, whose floor is
    /// [`LOCAL_CONCURRENCY_MIN`] (or the maximum, if lower).
    fn adaptive_default_range(&self) -> Option<(AdaptiveConfig, (usize, usize))> {
        let LimitConfig::Adaptive(adaptive) = self.concurrency else {
            return None;
        };
        let (min, max) = (adaptive.min(), adaptive.max());
        let plain = adaptive == AdaptiveConfig::default();
        let max_set = self.concurrency_max.unwrap_or(max);
        let min = match plain && corral_store::is_local(&self.store) {
            true => LOCAL_CONCURRENCY_MIN.min(max_set),
            false => min,
        };
        Some((adaptive, (min, max)))
    }

    /// The adaptive strategy, if it is the one, and its range with
    /// `--concurrency-min/-max` applied.
    fn adaptive_range(&self) -> Option<(AdaptiveConfig, (usize, usize))> {
        let (adaptive, (min, max)) = self.adaptive_default_range()?;
        let min = self.concurrency_min.unwrap_or(min);
        let max = self.concurrency_max.unwrap_or(max);
        Some((adaptive, (min, max)))
    }

    /// How backend calls are scheduled: the limit and the queue.
    pub(crate) fn sched_config(&self) -> anyhow::Result<SchedConfig> {
        Ok(SchedConfig {
            limit: self.limit()?,
            queue: QueueConfig {
                max_jobs: self.max_queued_jobs,
                max_bytes: self.max_queued_bytes.0,
            },
            ..SchedConfig::default()
        })
    }

    pub(crate) fn store_config(&self) -> anyhow::Result<StoreConfig> {
        let size = |s: ByteSize, name| {
            usize::try_from(s.0).with_context(|| format!("{name} {s} is too large"))
        };
        Ok(StoreConfig {
            s3: S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                path_style: self.s3_path_style,
                allow_http: self.s3_allow_http,
                checksums: !self.s3_no_checksums,
                ..S3Options::default()
            },
            // From the environment (see `Store::open`).
            gcs: GcsOptions::default(),
            azure: AzureOptions::default(),
            orphan_sweep: Some(self.orphan_sweep.0).filter(|every| !every.is_zero()),
            orphan_age: self.orphan_age.0,
            upload_expiry: self.upload_expiry.0,
            upload_lease: self.upload_lease.0,
            multipart_threshold: size(self.multipart_threshold, "multipart-threshold")?,
            part_size: size(self.part_size, "part-size")?,
            read_cache: size(self.read_cache, "read-cache")?,
            // Beside the spool: both are this instance's local state.
            batch_journal: Some(self.spool_dir.join("batches.redb")),
            // Beside the journal, whose lock makes it this process's.
            instance_file: Some(self.spool_dir.join("instance.id")),
        })
    }
}

impl fmt::Display for Settings {
    /// The settings as a config file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "listen = \"{}\"", self.listen)?;
        writeln!(f, "max_connections = {}", self.max_connections)?;
        writeln!(f, "store = {:?}", self.store)?;
        if let Some(endpoint) = &self.s3_endpoint {
            writeln!(f, "s3_endpoint = {endpoint:?}")?;
        }
        if let Some(region) = &self.s3_region {
            writeln!(f, "s3_region = {region:?}")?;
        }
        writeln!(f, "s3_path_style = {}", self.s3_path_style)?;
        writeln!(f, "s3_allow_http = {}", self.s3_allow_http)?;
        writeln!(f, "s3_no_checksums = {}", self.s3_no_checksums)?;
        writeln!(f, "orphan_sweep = \"{}\"", self.orphan_sweep)?;
        writeln!(f, "orphan_age = \"{}\"", self.orphan_age)?;
        writeln!(f, "concurrency = \"{}\"", self.concurrency)?;
        // The adaptive range, as set or as the strategy gives it (then as
        // a comment, so that the file reads back to the same settings).
        let range = self.adaptive_default_range().map(|(_, range)| range);
        for (key, set, given) in [
            ("concurrency_min", self.concurrency_min, range.map(|r| r.0)),
            ("concurrency_max", self.concurrency_max, range.map(|r| r.1)),
        ] {
            match (set, given) {
                (Some(value), _) => writeln!(f, "{key} = {value}")?,
                (None, Some(value)) => {
                    let place = match corral_store::is_local(&self.store) {
                        true => " on a local directory",
                        false => "",
                    };
                    writeln!(
                        f,
                        "# {key} = {value}  (from concurrency = \"{}\"{place})",
                        self.concurrency
                    )?;
                }
                (None, None) => {}
            }
        }
        writeln!(f, "max_queued_jobs = {}", self.max_queued_jobs)?;
        writeln!(f, "max_queued_bytes = \"{}\"", self.max_queued_bytes)?;
        writeln!(f, "max_file_size = \"{}\"", self.max_file_size)?;
        writeln!(f, "max_batch_size = \"{}\"", self.max_batch_size)?;
        writeln!(f, "max_files = {}", self.max_files)?;
        writeln!(f, "tus_max_size = \"{}\"", self.tus_max_size)?;
        writeln!(f, "max_open_uploads = {}", self.max_open_uploads)?;
        writeln!(f, "upload_expiry = \"{}\"", self.upload_expiry)?;
        writeln!(f, "upload_lease = \"{}\"", self.upload_lease)?;
        writeln!(f, "body_timeout = \"{}\"", self.body_timeout)?;
        writeln!(f, "shutdown_grace = \"{}\"", self.shutdown_grace)?;
        writeln!(f, "upload_memory = \"{}\"", self.upload_memory)?;
        writeln!(f, "upload_queue = {}", self.upload_queue)?;
        writeln!(f, "upload_wait = \"{}\"", self.upload_wait)?;
        writeln!(f, "spool_dir = {:?}", self.spool_dir.display().to_string())?;
        writeln!(f, "spool_max = \"{}\"", self.spool_max)?;
        writeln!(f, "keep_jobs = \"{}\"", self.keep_jobs)?;
        writeln!(f, "multipart_threshold = \"{}\"", self.multipart_threshold)?;
        writeln!(f, "part_size = \"{}\"", self.part_size)?;
        writeln!(f, "read_cache = \"{}\"", self.read_cache)?;
        writeln!(f, "log_format = \"{}\"", self.log_format)?;
        if let Some(auth) = &self.auth {
            writeln!(f, "auth = {:?}", auth.display().to_string())?;
        }
        writeln!(f, "insecure_no_auth = {}", self.insecure_no_auth)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The settings `args` ask for: defaults, then the config file, then what
/// clap read from the environment and the flags (clap already ranks a flag
/// above its variable).
pub(crate) fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::default();
    if let Some(path) = &args.config {
        settings.apply(load(path)?);
    }
    settings.apply(args.overrides);
    settings.validate()?;
    Ok(settings)
}

fn load(path: &Path) -> anyhow::Result<Overrides> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// A config file's text, laid over the defaults and checked as `corral
/// serve --config` does; with the invariant that the settings, printed as a
/// config file (`--print-config`), read back to the same settings. For the
/// fuzz targets.
///
/// # Errors
///
/// The message `corral serve` would print.
#[doc(hidden)]
pub fn fuzz_config(text: &str) -> Result<(), String> {
    let overrides: Overrides = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut settings = Settings::default();
    settings.apply(overrides);
    settings.validate().map_err(|e| format!("{e:#}"))?;
    let printed = settings.to_string();
    let again: Overrides = toml::from_str(&printed).expect("printed settings parse");
    let mut reread = Settings::default();
    reread.apply(again);
    assert_eq!(reread, settings, "{printed}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> ServeArgs {
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Serve(args) => *args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn shutdown_timeout_is_another_name_for_shutdown_grace() {
        let settings = resolve(args(&["corral", "serve", "--shutdown-timeout", "5s"])).unwrap();
        assert_eq!(settings.shutdown_grace.0, std::time::Duration::from_secs(5));
        let file: Overrides = toml::from_str("shutdown_timeout = \"7s\"").unwrap();
        let mut settings = Settings::default();
        settings.apply(file);
        assert_eq!(settings.shutdown_grace.0, std::time::Duration::from_secs(7));
    }

    #[test]
    fn defaults_are_loopback_and_local_disk() {
        let settings = Settings::default();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.store, "./corral-data");
        settings.validate().unwrap();
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("corral.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nstore = \"/srv/files\"\nmax_file_size = \"1GiB\"\n\
             part_size = 6291456\nbody_timeout = \"10s\"\nconcurrency = \"fixed:4\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let settings = resolve(args(&[
            "corral",
            "serve",
            "--config",
            file,
            "--store",
            "memory://",
        ]))
        .unwrap();
        assert_eq!(
            settings.listen.to_string(),
            "127.0.0.1:9000",
            "from the file"
        );
        assert_eq!(settings.store, "memory://", "the flag beats the file");
        assert_eq!(settings.max_file_size, ByteSize(1 << 30));
        assert_eq!(settings.part_size, ByteSize(6 << 20));
        assert_eq!(settings.body_timeout.to_string(), "10s");
        assert_eq!(settings.concurrency.to_string(), "fixed:4");
        assert_eq!(settings.max_files, 1000, "the default stays");
        assert_eq!(settings.max_connections, 16384, "the default stays");
    }

    #[test]
    fn max_connections_is_a_flag_and_a_key_and_at_least_one() {
        let settings = resolve(args(&["corral", "serve", "--max-connections", "64"])).unwrap();
        assert_eq!(settings.max_connections, 64);
        assert_eq!(settings.server_config().max_connections, 64);
        assert!(settings.to_string().contains("\nmax_connections = 64\n"));
        let file: Overrides = toml::from_str("max_connections = 32").unwrap();
        let mut settings = Settings::default();
        settings.apply(file);
        assert_eq!(settings.max_connections, 32);
        let zero = resolve(args(&["corral", "serve", "--max-connections", "0"]));
        let error = format!("{:#}", zero.unwrap_err());
        assert!(
            error.contains("max-connections must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn an_upload_lease_must_outlast_the_body_timeout() {
        let settings = resolve(args(&["corral", "serve", "--upload-lease", "40s"])).unwrap();
        assert_eq!(settings.store_config().unwrap().upload_lease.as_secs(), 40);
        let error = resolve(args(&[
            "corral",
            "serve",
            "--upload-lease",
            "30s",
            "--body-timeout",
            "30s",
        ]))
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("must be more than body-timeout"),
            "{error:#}"
        );
    }

    #[test]
    fn printed_settings_read_back_as_a_config_file() {
        let printed = Settings::default().to_string();
        let overrides: Overrides = toml::from_str(&printed).unwrap();
        let mut settings = Settings::default();
        settings.apply(overrides);
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn bad_files_and_values_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("corral.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let error = resolve(args(&[
            "corral",
            "serve",
            "--config",
            file.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("unknown field `lisen`"),
            "{error:#}"
        );
        let missing = resolve(args(&["corral", "serve", "--config", "/nonexistent.toml"]));
        assert!(format!("{:#}", missing.unwrap_err()).contains("cannot read config file"));
        for bad in [
            ["--max-file-size", "5 parsecs"],
            ["--concurrency", "fixed:0"],
            ["--listen", "localhost"],
            ["--listen", "localhost:http"],
            ["--listen", "70000"],
        ] {
            let argv = ["corral", "serve", bad[0], bad[1]];
            assert!(crate::cli::Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_adaptive_range_comes_from_the_spec_unless_the_flags_say_otherwise() {
        let range = |argv: &[&str]| match resolve(args(argv)).unwrap().limit().unwrap() {
            LimitConfig::Adaptive(adaptive) => (adaptive.min(), adaptive.max()),
            other => panic!("{other}"),
        };
        // Plain `adaptive`: a floor of its own on a local directory, the
        // strategy's elsewhere; a maximum under it lowers it too.
        assert_eq!(range(&["corral", "serve"]), (8, 256));
        assert_eq!(
            range(&["corral", "serve", "--store", "file:///tmp/x"]),
            (8, 256)
        );
        assert_eq!(
            range(&["corral", "serve", "--concurrency-max", "4"]),
            (4, 4)
        );
        let cloud = ["corral", "serve", "--store", "s3://bucket/prefix"];
        assert_eq!(range(&cloud), (2, 256));
        let spec = ["corral", "serve", "--concurrency", "adaptive:2-64"];
        assert_eq!(range(&spec), (2, 64));
        let flags = [&spec[..], &["--concurrency-max", "32"]].concat();
        assert_eq!(range(&flags), (2, 32));
        let refused = |argv: &[&str]| format!("{:#}", resolve(args(argv)).unwrap_err());
        let above = ["corral", "serve", "--concurrency-min", "300"];
        let error = refused(&above);
        assert!(
            error.contains(
                "concurrency-min (300) must be at most concurrency-max (256, from concurrency \
                 adaptive)"
            ),
            "{error}"
        );
        let zero = ["corral", "serve", "--concurrency-min", "0"];
        let error = refused(&zero);
        assert!(
            error.contains("concurrency-min (0) must be at least 1"),
            "{error}"
        );
        let below = [&spec[..], &["--concurrency-max", "1"]].concat();
        let error = refused(&below);
        assert!(
            error.contains(
                "concurrency-min (2, from concurrency adaptive:2-64) must be at most \
                 concurrency-max (1)"
            ),
            "{error}"
        );
    }

    #[test]
    fn only_a_bench_build_serves_with_the_baseline_limits() {
        for spec in ["unbounded", "per-request:3"] {
            let resolved = resolve(args(&["corral", "serve", "--concurrency", spec]));
            if cfg!(feature = "bench") {
                assert!(resolved.is_ok(), "{spec}: {:?}", resolved.err());
            } else {
                let error = format!("{:#}", resolved.unwrap_err());
                assert!(error.contains("--features bench"), "{spec}: {error}");
            }
        }
        for spec in ["adaptive", "fixed:8"] {
            resolve(args(&["corral", "serve", "--concurrency", spec])).unwrap();
        }
    }

    #[test]
    fn listen_takes_a_host_name_or_a_bare_port() {
        for (given, meant) in [
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("[::1]:9000", "[::1]:9000"),
            ("localhost:9000", "127.0.0.1:9000"),
            ("LOCALHOST:9000", "127.0.0.1:9000"),
            ("9000", "127.0.0.1:9000"),
        ] {
            let settings = resolve(args(&["corral", "serve", "--listen", given])).unwrap();
            assert_eq!(settings.listen.to_string(), meant, "{given}");
        }
        let file: Overrides = toml::from_str("listen = \"localhost:9001\"").unwrap();
        assert_eq!(file.listen.unwrap().to_string(), "127.0.0.1:9001");
        for bad in [
            "localhost",
            "localhost:http",
            "70000",
            "no-such-host.invalid:80",
        ] {
            let error = listen_address(bad).unwrap_err();
            assert!(
                error.contains("HOST:PORT") && error.contains(bad),
                "{error}"
            );
        }
    }

    #[test]
    fn non_loopback_needs_an_explicit_opt_in() {
        let error = resolve(args(&["corral", "serve", "--listen", "0.0.0.0:8080"])).unwrap_err();
        assert!(error.to_string().contains("--insecure-no-auth"));
        let settings = resolve(args(&[
            "corral",
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--insecure-no-auth",
        ]))
        .unwrap();
        assert!(settings.insecure_no_auth);
    }
}
