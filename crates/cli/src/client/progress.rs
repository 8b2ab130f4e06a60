//! What the user sees: progress bars on a terminal (stderr), and one line
//! per file on stdout, plain (tab-separated) or JSON.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How files are reported on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `key<TAB>size<TAB>sha256<TAB>path`.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The bars, and the lines printed between them.
pub(super) struct Progress {
    multi: MultiProgress,
    /// Every byte sent, files done, rate and ETA.
    overall: ProgressBar,
    sent: Arc<AtomicU64>,
    pace: Option<Pace>,
    format: Format,
}

/// A counter of bytes sent: the overall bar, the bar of one file if it
/// has one, and the total; with `--limit-rate`, the pace too. Cheap to
/// clone.
#[derive(Clone)]
pub(super) struct Meter {
    sent: Arc<AtomicU64>,
    bars: Vec<ProgressBar>,
    pace: Option<Pace>,
}

/// At most `rate` bytes a second, all bodies together, since `start`.
#[derive(Clone, Copy)]
struct Pace {
    start: Instant,
    rate: u64,
}

impl Meter {
    /// Counts `n` more bytes sent; with a pace, returns when they are due.
    pub(super) async fn add(&self, n: u64) {
        let total = self.sent.fetch_add(n, Ordering::Relaxed) + n;
        for bar in &self.bars {
            bar.inc(n);
        }
        if let Some(pace) = self.pace {
            let due = pace.start + Duration::from_secs_f64(total as f64 / pace.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

impl Progress {
    /// Bars for `bytes` in `files`, drawn on stderr when it is a terminal
    /// and `quiet` is false; hidden otherwise.
    /// With `rate`, bodies are sent at most that many bytes a second.
    pub(super) fn new(
        bytes: u64,
        files: u64,
        format: Format,
        quiet: bool,
        rate: Option<u64>,
    ) -> Self {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(bytes));
        overall.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("the template is valid"),
        );
        overall.set_message(format!("0/{files} files"));
        overall.enable_steady_tick(Duration::from_millis(200));
        Self {
            multi,
            overall,
            sent: Arc::default(),
            pace: rate.filter(|&r| r > 0).map(|rate| Pace {
                start: Instant::now(),
                rate,
            }),
            format,
        }
    }

    /// The meter of a batch: the overall bar only.
    pub(super) fn meter(&self) -> Meter {
        Meter {
            sent: self.sent.clone(),
            bars: vec![self.overall.clone()],
            pace: self.pace,
        }
    }

    /// A bar of its own for a large file named `name` of `size` bytes, and
    /// its meter; the bar goes when the returned bar is finished.
    pub(super) fn file(&self, name: &str, size: u64) -> (ProgressBar, Meter) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("  {bar:30} {bytes}/{total_bytes} {wide_msg}")
                .expect("the template is valid"),
        );
        bar.set_message(name.to_owned());
        let meter = Meter {
            sent: self.sent.clone(),
            bars: vec![self.overall.clone(), bar.clone()],
            pace: self.pace,
        };
        (bar, meter)
    }

    /// Bytes sent so far (all attempts).
    pub(super) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sets the count of files done, of `of`.
    pub(super) fn files_done(&self, done: u64, of: u64) {
        self.overall.set_message(format!("{done}/{of} files"));
    }

    /// Prints `line` on stdout, above the bars.
    pub(super) fn line(&self, line: &impl Serialize, plain: impl FnOnce() -> String) {
        let text = match self.format {
            Format::Json => serde_json::to_string(line).expect("a line serializes"),
            Format::Plain => plain(),
        };
        self.multi.suspend(|| println!("{text}"));
    }

    /// Prints `text` on stderr, above the bars.
    pub(super) fn note(&self, text: &str) {
        self.multi.suspend(|| eprintln!("{text}"));
    }

    /// The output format.
    pub(super) fn format(&self) -> Format {
        self.format
    }

    /// Removes the bars.
    pub(super) fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// `bytes` as a person reads them: `1.5 MiB`.
pub(super) fn human(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
