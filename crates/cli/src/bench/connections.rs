//! `corral bench connections`: many connections held open at once on one
//! `corral serve` (local disk), a mix of idle keep-alive connections and
//! slow uploads, and what they cost in memory.
//!
//! 1. corral starts; its resident memory (`VmRSS` of the child) is read:
//!    the baseline.
//! 2. `--connections` minus `--uploads` idle connections are opened, each
//!    sending one `GET /healthz` and keeping the connection; `VmRSS` is
//!    read again: the rise over the baseline, divided by their number, is
//!    the memory of one idle connection.
//! 3. `--uploads` slow uploads are opened beside them, each a `POST
//!    /api/files` of one `--upload-size` file whose body trickles over
//!    `--trickle`. Once all have sent their head, corral's own count of
//!    open connections (`corral_http_connections`, the scrape's own
//!    excluded) and `VmRSS` are read: every connection is held at once.
//! 4. Every upload must end `201`, then every idle connection must answer
//!    another `GET /healthz` with `200`; anything else is an error. The
//!    peak, `VmHWM`, is read last.
//!
//! The clients are raw sockets speaking HTTP/1.1, each a task of this
//! process: a pooled HTTP client would not hold ten thousand connections
//! to one host. corral closes a connection that sends nothing for
//! `--body-timeout` (30 s by default, idle keep-alive connections
//! included); the connections here are held longer, so it serves with
//! `--body-timeout 2m` (and `--upload-lease 3m`, which must be longer).
//! Everything stops by `--deadline`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::compare::{Corral, Store};
use super::figures::{Cmp, Row, print_table};
use super::tus::{Memory, memory};
use crate::units::{ByteSize, Span};

/// `corral bench connections`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectionsArgs {
    /// Connections held open at once, idle ones and slow uploads.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub(crate) connections: usize,
    /// How many of them are slow uploads; the others are idle.
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub(crate) uploads: usize,
    /// Size of each slow upload's file.
    #[arg(long, default_value = "4KiB", value_name = "SIZE")]
    pub(crate) upload_size: ByteSize,
    /// How long each slow upload takes to send its body.
    #[arg(long, default_value = "20s", value_name = "DURATION")]
    pub(crate) trickle: Span,
    /// The longest the whole run may take.
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub(crate) deadline: Span,
    /// Where corral's log and data go (removed at the end).
    #[arg(long, default_value = "bench-out/connections")]
    pub(crate) out: PathBuf,
}

/// The target: memory per idle connection, in KiB.
const IDLE_TARGET_KIB: f64 = 20.0;

/// Connections being opened at once.
const OPENING: usize = 128;

/// How often a slow upload sends a piece of its body.
const TRICKLE_EVERY: Duration = Duration::from_millis(500);

/// The longest one read or write of a client may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n";
const BOUNDARY: &str = "corral-bench-connections";

/// Runs `corral bench connections` and prints its table.
pub(crate) fn run(args: &ConnectionsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.uploads <= args.connections,
        "--connections must be at least 1, and --uploads at most --connections"
    );
    let limit = crate::nofile::raise().context("raising the open-files limit")?;
    if let Some(limit) = limit {
        anyhow::ensure!(
            limit >= args.connections as u64 + 256,
            "the open-files limit ({limit}) is too low for {} connections: raise the hard \
             limit (ulimit -Hn)",
            args.connections
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("connections-")
        .tempdir_in(&args.out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(async {
        tokio::time::timeout(args.deadline.0, measure(args, scratch.path()))
            .await
            .map_err(|_| anyhow::anyhow!("not done within --deadline {}", args.deadline))?
    })?;
    let title = format!(
        "{} connections on one corral: {} idle keep-alive, {} slow uploads of {} over {}",
        args.connections,
        args.connections - args.uploads,
        args.uploads,
        args.upload_size,
        args.trickle
    );
    let (met, total) = print_table(&title, &rows);
    println!("\n{met} of {total} figures met their target.");
    Ok(())
}

async fn measure(args: &ConnectionsArgs, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let idle_count = args.connections - args.uploads;
    let extra = ["--body-timeout", "2m", "--upload-lease", "3m"].map(str::to_owned);
    let mut corral = Corral::start(
        &Store::Dir(dir.join("data")),
        &extra,
        &dir.join("corral.log"),
    )?;
    corral.wait_ready().await?;
    let pid = corral.pid();
    let addr: SocketAddr = corral
        .url
        .trim_start_matches("http://")
        .parse()
        .context("corral's address")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = memory(pid)?;

    eprintln!("== opening {idle_count} idle connections");
    let opened: Vec<anyhow::Result<TcpStream>> = futures::stream::iter(0..idle_count)
        .map(|_| open_idle(addr))
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let mut errors = Vec::new();
    let mut idle = Vec::new();
    for result in opened {
        match result {
            Ok(socket) => idle.push(socket),
            Err(error) => errors.push(format!("opening an idle connection: {error:#}")),
        }
    }
    let idle_opened = idle.len();
    // Let what the requests held be freed before reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_idle = memory(pid)?;

    eprintln!(
        "== opening {} slow uploads of {} over {}",
        args.uploads, args.upload_size, args.trickle
    );
    let started = Arc::new(AtomicUsize::new(0));
    let opening = Arc::new(Semaphore::new(OPENING));
    let uploads: Vec<_> = (0..args.uploads)
        .map(|i| {
            let upload = SlowUpload {
                addr,
                index: i,
                size: args.upload_size.0 as usize,
                trickle: args.trickle.0,
            };
            let (started, opening) = (Arc::clone(&started), Arc::clone(&opening));
            tokio::spawn(async move { upload.run(&started, &opening).await })
        })
        .collect();
    // Every upload has sent its head (or failed): all are held at once.
    while started.load(Ordering::Relaxed) < args.uploads
        && uploads.iter().any(|upload| !upload.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = open_connections(&corral.url).await;
    let at_all = memory(pid)?;

    let mut stored = 0;
    for upload in uploads {
        match upload.await {
            Ok(Ok(())) => stored += 1,
            Ok(Err(error)) => errors.push(format!("a slow upload: {error:#}")),
            Err(error) => errors.push(format!("a slow upload's task: {error}")),
        }
    }
    eprintln!("== asking every idle connection again");
    let answered: Vec<anyhow::Result<()>> = futures::stream::iter(&mut idle)
        .map(|socket| async move { request(socket, HEALTH, "200").await })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let mut alive = 0;
    for result in answered {
        match result {
            Ok(()) => alive += 1,
            Err(error) => errors.push(format!("an idle connection: {error:#}")),
        }
    }
    let last = memory(pid)?;
    drop(idle);
    drop(corral);
    for error in errors.iter().take(5) {
        eprintln!("   {error}");
    }
    Ok(rows(
        args,
        &Figures {
            baseline,
            with_idle,
            at_all,
            peak: last.peak,
            idle_opened,
            alive,
            stored,
            held,
            errors: errors.len(),
        },
    ))
}

/// What was measured.
struct Figures {
    baseline: Memory,
    with_idle: Memory,
    at_all: Memory,
    peak: u64,
    idle_opened: usize,
    alive: usize,
    stored: usize,
    /// corral's count of its open connections while all were held, the
    /// scrape's own excluded; `None` if it could not be read.
    held: Option<usize>,
    errors: usize,
}

fn rows(args: &ConnectionsArgs, figures: &Figures) -> Vec<Row> {
    let idle = args.connections - args.uploads;
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
    let kib = |bytes: f64| bytes / 1024.0;
    // Over every idle connection, or no figure.
    let per_idle = if idle > 0 && figures.idle_opened == idle {
        kib(figures.with_idle.rss as f64 - figures.baseline.rss as f64) / idle as f64
    } else {
        f64::NAN
    };
    let per_connection = if figures.held == Some(args.connections) {
        kib(figures.at_all.rss as f64 - figures.baseline.rss as f64) / args.connections as f64
    } else {
        f64::NAN
    };
    vec![
        Row::exactly(
            "connections open at once (corral_http_connections)",
            figures.held.unwrap_or(0),
            args.connections,
        ),
        Row::exactly("errors", figures.errors, 0),
        Row::all(
            "idle connections answering 200 after the hold",
            figures.alive,
            idle,
        ),
        Row::all("slow uploads stored (201)", figures.stored, args.uploads),
        Row::info("VmRSS of the idle server", mib(figures.baseline.rss)),
        Row::info(
            format!("VmRSS with {idle} idle connections"),
            mib(figures.with_idle.rss),
        ),
        Row::info(
            format!("VmRSS with all {} connections", args.connections),
            mib(figures.at_all.rss),
        ),
        Row::info("VmHWM (peak RSS) over the run", mib(figures.peak)),
        Row::info(
            "VmRSS rise per connection, all held",
            format!("{per_connection:.1} KiB"),
        ),
        Row::bound(
            "VmRSS rise per idle connection",
            per_idle,
            Cmp::Below,
            IDLE_TARGET_KIB,
            " KiB",
        ),
    ]
}

/// corral's count of its open connections, the scrape's own excluded.
async fn open_connections(url: &str) -> Option<usize> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let open: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("corral_http_connections "))?
        .trim()
        .parse()
        .ok()?;
    open.checked_sub(1)
}

/// A connection that was answered one `GET /healthz` and is kept alive.
async fn open_idle(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut socket = timed(TcpStream::connect(addr)).await?;
    request(&mut socket, HEALTH, "200").await?;
    Ok(socket)
}

/// Sends `request` on `socket` and reads one answer, which must have
/// `status`.
async fn request(socket: &mut TcpStream, request: &[u8], status: &str) -> anyhow::Result<()> {
    timed(socket.write_all(request)).await?;
    let head = read_answer(socket).await?;
    let got = head.split(' ').nth(1).unwrap_or_default();
    anyhow::ensure!(got == status, "answered {got}, not {status}");
    Ok(())
}

/// Reads one answer (its head and a body of `content-length` bytes); its
/// head.
async fn read_answer(socket: &mut TcpStream) -> anyhow::Result<String> {
    let mut read = Vec::new();
    let mut buf = [0; 2048];
    let end = loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = timed(socket.read(&mut buf)).await?;
        anyhow::ensure!(n > 0, "closed before an answer");
        read.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
    let length: usize = (head.lines())
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(Ok(0), |n| n.trim().parse())
        .context("a bad content-length")?;
    while read.len() < end + length {
        let n = timed(socket.read(&mut buf)).await?;
        anyhow::ensure!(n > 0, "closed within an answer");
        read.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

async fn timed<T>(io: impl Future<Output = std::io::Result<T>>) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .context("timed out")??)
}

/// One upload whose body trickles.
struct SlowUpload {
    addr: SocketAddr,
    index: usize,
    size: usize,
    trickle: Duration,
}

impl SlowUpload {
    /// Opens the connection (one of [`OPENING`] at once) and sends the
    /// head, counted in `started`; then trickles the body and reads the
    /// answer, which must be `201`.
    async fn run(self, started: &AtomicUsize, opening: &Semaphore) -> anyhow::Result<()> {
        let part = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"slow-{}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            self.index
        );
        let end = format!("\r\n--{BOUNDARY}--\r\n");
        let length = part.len() + self.size + end.len();
        let head = format!(
            "POST /api/files HTTP/1.1\r\nHost: corral\r\nContent-Type: multipart/form-data; \
             boundary={BOUNDARY}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{part}"
        );
        let mut socket = {
            let _opening = opening.acquire().await?;
            let mut socket = timed(TcpStream::connect(self.addr)).await?;
            timed(socket.write_all(head.as_bytes())).await?;
            socket
        };
        started.fetch_add(1, Ordering::Relaxed);
        let data: Vec<u8> = (0..self.size).map(|i| (i % 251) as u8).collect();
        let pieces = (self.trickle.as_millis() / TRICKLE_EVERY.as_millis()).max(1) as usize;
        let piece = self.size.div_ceil(pieces).max(1);
        let mut ticks = tokio::time::interval(TRICKLE_EVERY);
        for chunk in data.chunks(piece) {
            ticks.tick().await;
            timed(socket.write_all(chunk)).await?;
        }
        timed(socket.write_all(end.as_bytes())).await?;
        let head = read_answer(&mut socket).await?;
        let status = head.split(' ').nth(1).unwrap_or_default();
        anyhow::ensure!(status == "201", "answered {status}, not 201");
        Ok(())
    }
}
