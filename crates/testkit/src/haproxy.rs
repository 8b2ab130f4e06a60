//! A real load balancer on 127.0.0.1 before several `corral serve`
//! instances: [HAProxy], Debian's package, installed and started by this
//! crate with no manual step.
//!
//! # Why HAProxy
//!
//! A fleet of corral instances is reached through a load balancer, and how
//! the fleet behaves depends on it: how it spreads requests, when it stops
//! sending to an instance that is draining or dead, what it does with a
//! request it could not deliver. A bench of the fleet therefore runs the
//! load balancer an operator would, with the very configuration
//! [`config`] writes, which `docs/DEPLOY.md` shows.
//!
//! # Install
//!
//! `/usr/sbin/haproxy` (or the program `CORRAL_HAPROXY` names). Missing,
//! it is installed with `apt-get install haproxy`, which needs root, under
//! the machine's apt lock, as [`crate::browser`] installs Chromium.
//!
//! # Lifetimes
//!
//! [`Haproxy::start`] gives the caller a load balancer of its own, on a
//! port of its own, in the foreground (`-db`) under the wrapper that kills
//! it when its owner goes; dropping the value stops it and removes its
//! configuration file.
//!
//! [HAProxy]: https://www.haproxy.org/

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::process::Process;

pub use crate::emulator::{Error, Result};

/// The program, in error messages.
const NAME: &str = "HAProxy";
/// Where Debian's package puts it.
const HAPROXY: &str = "/usr/sbin/haproxy";
/// The Debian packages that provide it.
const PACKAGES: [&str; 1] = ["haproxy"];
/// How long to wait for another process's apt to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(600);
/// How many ports are tried before giving up.
const ATTEMPTS: usize = 5;
/// What HAProxy says (with `-V`) once it has read its configuration and
/// is about to serve.
const STARTED: &str = "Using epoll() as the polling mechanism";

/// One instance behind the load balancer.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its share of new requests, relative to the others' (HAProxy's
    /// `weight`, 1 to 256).
    pub weight: u32,
}

/// A running HAProxy on 127.0.0.1 before [`Server`]s.
#[derive(Debug)]
pub struct Haproxy {
    addr: SocketAddr,
    /// HAProxy, killed when this process exits or the value is dropped.
    process: Process,
    /// Its configuration file; removed on drop.
    config: PathBuf,
}

/// The configuration for a load balancer on `listen` before `servers`.
///
/// - **Spreading**: `balance leastconn` with each server's weight: a new
///   connection goes to the instance with the fewest in progress for its
///   weight, so a slow instance gets less, not the same.
/// - **Readiness and drain**: each instance's `GET /readyz` every second;
///   two failures take it out (an instance that begins shutting down
///   answers `503` at once and finishes what it has), one success puts it
///   back. A connection refused or reset before the request was sent is
///   retried on another instance (`retry-on conn-failure`, `option
///   redispatch`); a request that reached an instance is never sent twice,
///   since an upload is not idempotent: its client retries it.
/// - **Time**: uploads may be slow, so the client and server timeouts are
///   long (5 minutes); connecting to an instance on 127.0.0.1 or a LAN
///   takes far under the 2 s allowed.
pub fn config(listen: SocketAddr, servers: &[Server]) -> String {
    let mut text = format!(
        "\
global
    maxconn 8192

defaults
    mode http
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout http-request 30s
    timeout queue 30s
    retries 2
    retry-on conn-failure
    option redispatch

frontend corral
    bind {listen}
    default_backend instances

backend instances
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 1s fall 2 rise 1
"
    );
    for (i, server) in servers.iter().enumerate() {
        let _ = writeln!(
            text,
            "    server corral{} {} weight {}",
            i + 1,
            server.addr,
            server.weight
        );
    }
    text
}

impl Haproxy {
    /// The HAProxy binary, installing Debian's package first if it is
    /// missing (unless `CORRAL_HAPROXY` names one).
    ///
    /// # Errors
    ///
    /// If it is missing and this process is not root (naming the command
    /// to run), or apt-get fails.
    pub fn install() -> Result<PathBuf> {
        if let Some(path) = env::var_os("CORRAL_HAPROXY") {
            return Ok(PathBuf::from(path));
        }
        let haproxy = PathBuf::from(HAPROXY);
        crate::install::apt(&haproxy, &PACKAGES, LOCK_TIMEOUT).map_err(Error::installing(NAME))?;
        Ok(haproxy)
    }

    /// Installs HAProxy if needed and starts one of the caller's own on a
    /// free port of 127.0.0.1 before `servers`, configured by [`config`].
    ///
    /// # Errors
    ///
    /// As [`Haproxy::install`]; or if HAProxy refuses the configuration,
    /// exits before it is ready on every port tried, or does not accept a
    /// connection within 30 s.
    pub fn start(servers: &[Server]) -> Result<Self> {
        let binary = Self::install()?;
        crate::emulator::on_free_port(ATTEMPTS, |port| {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let path = config_path();
            fs::write(&path, config(addr, servers)).map_err(|source| Error::Io {
                context: format!("cannot write {}", path.display()),
                source,
            })?;
            let launched = crate::emulator::launch(
                NAME,
                &binary,
                |command| {
                    command.args(["-db", "-V", "-f"]).arg(&path);
                },
                move |line| line.contains(STARTED).then_some(port),
                crate::emulator::accepts,
            );
            match launched {
                Ok((process, addr)) => Ok(Self {
                    addr,
                    process,
                    config: path,
                }),
                Err(error) => {
                    let _ = fs::remove_file(&path);
                    Err(error)
                }
            }
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last few KiB HAProxy printed: its alerts about servers going
    /// down and up.
    pub fn output(&self) -> String {
        self.process.output()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.process.stop();
        let _ = fs::remove_file(&self.config);
    }
}

/// A fresh path for a configuration file.
fn config_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    env::temp_dir().join(format!(
        "corral-haproxy-{}-{}.cfg",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_every_server_with_its_weight() {
        let servers = [
            Server {
                addr: "127.0.0.1:9001".parse().unwrap(),
                weight: 2,
            },
            Server {
                addr: "127.0.0.1:9002".parse().unwrap(),
                weight: 1,
            },
        ];
        let text = config("127.0.0.1:8080".parse().unwrap(), &servers);
        assert!(text.contains("bind 127.0.0.1:8080\n"));
        assert!(text.contains("server corral1 127.0.0.1:9001 weight 2\n"));
        assert!(text.contains("server corral2 127.0.0.1:9002 weight 1\n"));
        assert!(text.contains("option httpchk GET /readyz\n"));
    }

    #[test]
    fn the_deployment_guide_shows_the_configuration_the_bench_uses() {
        let guide = include_str!("../../../docs/DEPLOY.md");
        let servers = ["10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080"].map(|addr| Server {
            addr: addr.parse().unwrap(),
            weight: 1,
        });
        let text = config("0.0.0.0:80".parse().unwrap(), &servers);
        assert!(
            guide.contains(&format!("```haproxy\n{text}```")),
            "docs/DEPLOY.md should show:\n{text}"
        );
    }
}
