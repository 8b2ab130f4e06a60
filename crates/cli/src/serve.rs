//! `corral serve`: config -> tracing -> store -> bind -> serve until a
//! signal.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use corral_sched::{LimitConfig, Scheduler};
use corral_server::AppState;
use corral_store::{Spool, SpoolError, Store};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::auth;
use crate::cli::ServeArgs;
use crate::config::{self, LogFormat, Settings};

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let print_config = args.print_config;
    let settings = config::resolve(args)?;
    if print_config {
        let mut stdout = std::io::stdout().lock();
        return match write!(stdout, "{settings}").and_then(|()| stdout.flush()) {
            // A reader that has seen enough (`| head -1`) is no failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            written => written.context("cannot print the settings"),
        };
    }
    init_tracing(settings.log_format)?;
    raise_open_files_limit(settings.max_connections);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(settings))
}

/// Descriptors corral needs besides its connections: the listener, the
/// spool's and the journal's files, files being written to the local
/// disk, connections to the storage backend (up to the scheduler's
/// limit).
const OTHER_DESCRIPTORS: u64 = 1024;

/// Raises the open-files limit to the hard limit, and warns if it leaves
/// no room for `max_connections`: beyond, `accept` fails with `EMFILE` and
/// connections wait unanswered.
fn raise_open_files_limit(max_connections: usize) {
    match crate::nofile::raise() {
        Ok(Some(limit)) if limit < max_connections as u64 + OTHER_DESCRIPTORS => {
            tracing::warn!(
                open_files_limit = limit,
                max_connections,
                "the open-files limit leaves room for fewer connections than \
                 --max-connections: raise the hard limit (LimitNOFILE= in systemd, \
                 ulimit -Hn) or lower --max-connections"
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
}

fn init_tracing(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("CORRAL_LOG") {
        Ok(spec) => log_filter(&spec).context("CORRAL_LOG")?,
        Err(_) => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours for a terminal only: not in a file, a pipe or a journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// The filter `spec` asks for (`info`, `warn,corral_store=debug`), refusing
/// a word that is not a level: `EnvFilter` would take `verbose` for the
/// name of a module to log, and log nothing at all.
fn log_filter(spec: &str) -> anyhow::Result<EnvFilter> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let plain = !directive.contains(['=', '[']);
        if plain
            && !LEVELS
                .iter()
                .any(|level| directive.eq_ignore_ascii_case(level))
        {
            anyhow::bail!(
                "{directive:?} is not a level: use one of {}, or MODULE=LEVEL \
                 (such as corral_store=debug)",
                LEVELS.join(", ")
            );
        }
    }
    EnvFilter::try_new(spec).map_err(|e| anyhow::anyhow!("{spec:?}: {e}"))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let auth = settings.auth.as_deref().map(auth::load).transpose()?;
    // The composition root: one scheduler for every backend call, handed
    // to the store that makes them and to the server that admits work.
    let scheduler = Scheduler::new(settings.sched_config()?);
    // The port first: a second corral started by mistake is most often
    // on the same port, and that is the message to see.
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| cannot_listen(e, settings.listen))?;
    let spool_dir = settings.spool_dir.display();
    let store = Store::open(&settings.store, settings.store_config()?, scheduler.clone())
        .await
        .map_err(|e| match e {
            corral_store::Error::InUse { .. } => another_corral(&e, &spool_dir),
            e => e.into(),
        })?;
    let spool = Spool::open(settings.spool_config(), store.clone())
        .await
        .map_err(|e| match e {
            SpoolError::InUse { .. } => another_corral(&e, &spool_dir),
            e => anyhow::Error::new(e).context(format!("cannot open the spool {spool_dir}")),
        })?;
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    println!(
        "corral listening on http://{address}, storing in {}",
        store.url()
    );
    tracing::info!(%address, store = store.url(), concurrency = %settings.concurrency, "serving");
    if !matches!(
        settings.concurrency,
        LimitConfig::Adaptive(_) | LimitConfig::Fixed(_)
    ) {
        tracing::warn!(
            concurrency = %settings.concurrency,
            "a baseline for benchmarks, not a limit: nothing protects the backend from a herd"
        );
    }
    let mut state = AppState::new(store, scheduler, settings.server_config()).with_spool(spool);
    if let Some(auth) = auth {
        state = state.with_auth(auth);
    }
    corral_server::run(listener, state, shutdown_signal())
        .await
        .context("the server failed")?;
    tracing::info!("stopped");
    Ok(())
}

fn cannot_listen(error: std::io::Error, address: std::net::SocketAddr) -> anyhow::Error {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another process (another corral?) is listening there: stop it, or choose \
             another --listen"
        }
        std::io::ErrorKind::PermissionDenied => {
            ": ports below 1024 need privileges: choose a port such as 8080"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            ": no interface of this machine has that address: use 127.0.0.1, 0.0.0.0 or \
             one of its own"
        }
        _ => "",
    };
    anyhow::anyhow!("cannot listen on {address} ({error}){hint}")
}

/// A journal of the spool directory is locked by another process.
fn another_corral(
    error: &dyn std::error::Error,
    spool_dir: &dyn std::fmt::Display,
) -> anyhow::Error {
    anyhow::anyhow!(
        "another corral is using the spool directory {spool_dir} ({error}): stop it, or \
         give this one its own --spool-dir"
    )
}

/// Completes on the first Ctrl-C or SIGTERM, and makes a second one end
/// the process at once (exit status 1), without waiting for the drain.
async fn shutdown_signal() {
    signal().await;
    tracing::info!("shutting down: finishing requests in progress (a second signal stops at once)");
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second signal: stopping without waiting for requests in progress");
        std::process::exit(1);
    });
}

/// Completes on the next Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
