//! corral's scheduler: every call a corral process makes to a storage
//! backend passes through one [`Scheduler`] per backend, shared by every
//! request (see `DESIGN.md`, "The problem, in numbers"). It
//!
//! - keeps a process-wide, adaptive limit on calls in flight ([`limit`]);
//! - queues waiting calls fairly by bytes across tenants and requests
//!   ([`QueueConfig`]), bounded in jobs and bytes;
//! - refuses new work early, with a suggested wait, when the queue is full
//!   ([`Refused::Overloaded`]);
//! - retries transient failures with jittered backoff under a budget
//!   ([`RetryConfig`]);
//! - tells a backend that is down from one that is busy, and refuses work
//!   at once while it is down ([`breaker`]);
//! - gives each request a [`Group`] with errgroup semantics: the first
//!   failure or the request's end cancels its other calls;
//! - shuts down gracefully ([`Scheduler::shutdown`]).
//!
//! This crate knows nothing of HTTP or storage: it schedules futures, in
//! the caller's own task, and is tested in virtual time.

mod admission;
pub mod breaker;
mod error;
mod group;
pub mod limit;
mod metrics;
mod permit;
mod queue;
mod retry;
mod scheduler;
mod shared;
#[cfg(test)]
mod testing;

pub use admission::{QueueConfig, Refused};
pub use breaker::{BreakerConfig, Health};
pub use error::{Error, JobError, Result};
pub use group::Group;
pub use limit::{AdaptiveConfig, AdaptiveConfigBuilder, LimitConfig, Outcome};
pub use metrics::{CounterSnapshot, HistogramSnapshot, LATENCY_BUCKETS, Stats};
pub use retry::{Class, Classify, RetryConfig};
pub use scheduler::{SchedConfig, Scheduler};
