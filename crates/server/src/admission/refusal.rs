//! [`Refusal`]: why new work was refused, and when to come back (the rule
//! for `Retry-After` is in the [module docs](super)).

use std::fmt;
use std::time::Duration;

use axum::http::StatusCode;
use corral_sched::Refused;
use corral_store::SpoolError;

/// The wait suggested to a client refused by a full spool: workers free it
/// as fast as the backend takes files, which this cannot foresee.
const SPOOL_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How long a tenant at its limit of open resumable uploads waits: one of
/// them finishing is a matter of its client, which corral cannot foresee.
const UPLOADS_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long a connection refused at the limit of connections waits: one
/// frees when a client closes one, which corral cannot foresee, and an
/// idle one is closed after the body timeout at the latest.
const CONNECTIONS_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The wait suggested to a client whose request met transient backend
/// failures until its retries ran out: long enough for a blip to pass.
pub(crate) const BACKEND_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The wait suggested while nothing has been served yet to learn a rate
/// from.
const NO_RATE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest wait suggested.
const MAX_RETRY_AFTER: f64 = 60.0;

/// Why new work was refused, and when to come back.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Refusal {
    /// The scheduler's queue of backend calls is full.
    QueueFull {
        /// When to try again.
        retry_after: Duration,
    },
    /// The upload memory is spent, and its waiting room is full or the
    /// wait ran out.
    MemorySpent {
        /// When to try again.
        retry_after: Duration,
    },
    /// The tenant's uploads in progress already hold as many bytes as its
    /// limit allows.
    TenantMemory {
        /// Bytes its uploads hold now.
        held: u64,
        /// Its limit.
        limit: u64,
        /// When to try again.
        retry_after: Duration,
    },
    /// The tenant's asynchronous uploads already fill its share of the
    /// spool.
    TenantSpool {
        /// Its bytes waiting to be stored now.
        used: u64,
        /// Its limit.
        limit: u64,
    },
    /// The tenant has as many resumable uploads open as its limit allows
    /// (on this instance): one must finish, be terminated or expire.
    TenantUploads {
        /// Its uploads open now.
        open: usize,
        /// Its limit.
        limit: usize,
    },
    /// The spool holds its budget of asynchronous uploads not yet stored.
    SpoolFull {
        /// Bytes waiting now.
        used: u64,
        /// The budget.
        max: u64,
    },
    /// The storage backend is down, or failed transiently until the
    /// request's retries ran out.
    BackendUnavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// The server is shutting down and takes no new work.
    ShuttingDown,
    /// The server holds as many connections as it may
    /// (`--max-connections`): a new one is answered and closed before any
    /// request is read.
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
}

impl Refusal {
    /// The refusal of the scheduler's `refused`.
    pub(crate) fn of_scheduler(refused: Refused) -> Self {
        match refused {
            Refused::Overloaded { retry_after } => Self::QueueFull { retry_after },
            Refused::Unavailable { retry_after } => Self::BackendUnavailable { retry_after },
            _ => Self::ShuttingDown,
        }
    }

    /// The refusal a spool `error` stands for, if it is one.
    pub(crate) fn of_spool(error: SpoolError) -> Result<Self, SpoolError> {
        match error {
            SpoolError::Full { used, max } => Ok(Self::SpoolFull { used, max }),
            SpoolError::TenantFull { used, max, .. } => Ok(Self::TenantSpool { used, limit: max }),
            error => Err(error),
        }
    }

    /// The HTTP status: `429` when the server is busy, `503` when it
    /// cannot work.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BackendUnavailable { .. }
            | Self::ShuttingDown
            | Self::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The error code clients read (stable: part of the API).
    pub fn code(&self) -> &'static str {
        match self {
            Self::QueueFull { .. } | Self::MemorySpent { .. } => "overloaded",
            Self::TenantMemory { .. } | Self::TenantSpool { .. } | Self::TenantUploads { .. } => {
                "tenant_busy"
            }
            Self::SpoolFull { .. } => "spool_full",
            Self::BackendUnavailable { .. } => "backend_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::TooManyConnections { .. } => "too_many_connections",
        }
    }

    /// Which gate refused: the `reason` label of `corral_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::QueueFull { .. } => "queue_full",
            Self::MemorySpent { .. } => "memory_spent",
            Self::TenantMemory { .. } => "tenant_memory",
            Self::TenantSpool { .. } => "tenant_spool",
            Self::TenantUploads { .. } => "tenant_uploads",
            Self::SpoolFull { .. } => "spool_full",
            Self::BackendUnavailable { .. } => "backend_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::TooManyConnections { .. } => "too_many_connections",
        }
    }

    /// Every reason, for the metric's families to start at zero.
    pub(crate) const REASONS: [&'static str; 9] = [
        "queue_full",
        "memory_spent",
        "tenant_memory",
        "tenant_spool",
        "tenant_uploads",
        "spool_full",
        "backend_unavailable",
        "shutting_down",
        "too_many_connections",
    ];

    /// When to come back (see the [module docs](self)).
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::QueueFull { retry_after }
            | Self::MemorySpent { retry_after }
            | Self::TenantMemory { retry_after, .. }
            | Self::BackendUnavailable { retry_after } => *retry_after,
            Self::TenantSpool { .. } | Self::SpoolFull { .. } => SPOOL_RETRY_AFTER,
            Self::TenantUploads { .. } => UPLOADS_RETRY_AFTER,
            Self::ShuttingDown => Duration::from_secs(1),
            Self::TooManyConnections { .. } => CONNECTIONS_RETRY_AFTER,
        }
    }

    /// `Retry-After`'s value: whole seconds, rounded up, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        (self.retry_after().as_secs_f64().ceil() as u64).max(1)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.retry_after_seconds();
        match self {
            Self::QueueFull { .. } | Self::MemorySpent { .. } => {
                write!(f, "the server is overloaded: retry after {seconds} s")
            }
            Self::TenantMemory { held, limit, .. } => write!(
                f,
                "this tenant's uploads in progress hold {held} bytes, its limit is {limit}: \
                 retry after {seconds} s"
            ),
            Self::TenantSpool { used, limit } => write!(
                f,
                "this tenant's asynchronous uploads hold {used} bytes of the spool, its limit \
                 is {limit}: retry after {seconds} s"
            ),
            Self::TenantUploads { open, limit } => write!(
                f,
                "this tenant has {open} resumable uploads open, its limit is {limit}: finish or \
                 terminate one (DELETE its URL), or retry after {seconds} s"
            ),
            Self::SpoolFull { used, max } => write!(
                f,
                "the spool for asynchronous uploads is full ({used} of {max} bytes wait to be \
                 stored): retry after {seconds} s"
            ),
            Self::BackendUnavailable { .. } => write!(
                f,
                "the storage backend is unavailable: retry after {seconds} s"
            ),
            Self::ShuttingDown => f.write_str("the server is shutting down"),
            Self::TooManyConnections { limit } => write!(
                f,
                "the server holds as many connections as it may ({limit}): close an idle \
                 connection of yours, or retry after {seconds} s"
            ),
        }
    }
}

/// The time to serve `ahead` (bytes, calls) at `per_second`: 1 to 60 s, and
/// 5 s while nothing has been served yet. The rule of every gate that can
/// estimate (see the [module docs](self)).
pub(crate) fn wait(ahead: f64, per_second: f64) -> Duration {
    if per_second <= 0.0 {
        return NO_RATE_RETRY_AFTER;
    }
    let seconds = (ahead / per_second).ceil();
    Duration::from_secs_f64(seconds.clamp(1.0, MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_the_time_to_serve_what_is_ahead_within_bounds() {
        assert_eq!(wait(10.0, 0.0), NO_RATE_RETRY_AFTER);
        assert_eq!(wait(10.0, 5.0), Duration::from_secs(2));
        assert_eq!(wait(1.0, 1000.0), Duration::from_secs(1));
        assert_eq!(wait(1e9, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn every_refusal_has_a_status_a_code_a_reason_and_a_wait_of_whole_seconds() {
        let wait = Duration::from_millis(1500);
        let refusals = [
            Refusal::QueueFull { retry_after: wait },
            Refusal::MemorySpent { retry_after: wait },
            Refusal::TenantMemory {
                held: 1,
                limit: 1,
                retry_after: wait,
            },
            Refusal::TenantSpool { used: 1, limit: 1 },
            Refusal::TenantUploads { open: 1, limit: 1 },
            Refusal::SpoolFull { used: 1, max: 1 },
            Refusal::BackendUnavailable { retry_after: wait },
            Refusal::ShuttingDown,
            Refusal::TooManyConnections { limit: 1 },
        ];
        let reasons: Vec<_> = refusals.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, Refusal::REASONS);
        for refusal in &refusals {
            assert!(
                [
                    StatusCode::TOO_MANY_REQUESTS,
                    StatusCode::SERVICE_UNAVAILABLE
                ]
                .contains(&refusal.status()),
                "{refusal:?}"
            );
            assert!(refusal.retry_after_seconds() >= 1, "{refusal:?}");
            let text = refusal.to_string();
            assert!(
                refusal == &Refusal::ShuttingDown
                    || text.ends_with(&format!("retry after {} s", refusal.retry_after_seconds())),
                "{text}"
            );
        }
        assert_eq!(
            Refusal::QueueFull { retry_after: wait }.retry_after_seconds(),
            2
        );
        assert_eq!(
            Refusal::ShuttingDown.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
