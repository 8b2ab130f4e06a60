//! Admission: every refusal of new work comes from here.
//!
//! A connection meets one gate before any of its requests is read: the
//! most connections served at once ([`Connections`], `too_many_connections`,
//! answered by [`crate::run`] straight on the socket). Then a request meets
//! up to four gates before its body is read, in this order, and each may
//! refuse it:
//!
//! 1. the scheduler ([`Admitted`]): its queue of backend calls is full
//!    (`overloaded`), the backend is down (`backend_unavailable`), or the
//!    server is stopping (`shutting_down`);
//! 2. for a batch stored now, its tenant's share of upload memory
//!    (`tenant_busy`), then the upload memory itself, whose waiting room is
//!    full or whose wait ran out (`overloaded`; see [`crate::memory`]);
//! 3. for a batch spooled to disk instead, its tenant's share of the spool
//!    (`tenant_busy`) or the spool's whole budget (`spool_full`).
//!
//! Every refusal is a [`Refusal`], answered in one shape: `429` when the
//! server is busy and `503` when it cannot work (the backend is down, the
//! server is stopping) or holds all the connections it may, a JSON body `{"error": {"code", "message"}}`, and
//! `Retry-After`. It is counted once, by reason, in
//! `corral_refusals_total{reason}` (counted where the answer is made, see [`crate::metrics`]).
//!
//! # The rule for `Retry-After`
//!
//! A refused client should come back when it would be let in. Where a gate
//! knows what is ahead of the request and how fast it has been served
//! lately (the scheduler's queue, the upload memory), the wait is the time
//! to serve it at that rate ([`wait`]), 1 to 60 s, and 5 s while nothing
//! has been served yet; the upload memory also spreads it over its second
//! half, so that uploads refused together do not come back together, and
//! asks for no longer than an upload may wait in line (`--upload-wait`). Where
//! a gate cannot foresee it, the wait is fixed: the spool empties as fast
//! as the backend takes its files (10 s), a backend that is down is probed
//! again at a known time (the time to the probe), a call that failed
//! transiently until its retries ran out may pass (5 s), so may a place
//! among the connections, which frees when a client closes one (5 s), and a stopping
//! server is worth asking again at once, of another instance (1 s). The
//! header carries whole seconds, rounded up, at least 1.

pub(crate) mod connection;
pub(crate) mod refusal;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use corral_sched::Group;
use corral_store::JobWriter;

pub(crate) use connection::Connections;
pub use refusal::Refusal;

use crate::app::AppState;
use crate::auth::Held;
use crate::error::ApiError;
use crate::memory::Reservation;
use crate::tenant::Tenant;

/// A request let in by the scheduler: its tenant, and the group its
/// backend calls are made in.
///
/// Extracting it is the scheduler's admission check. It runs before the
/// body is read, so an overloaded server answers `429` with `Retry-After`
/// at once, and a stopping one `503`. Dropping it (the request ends, or the
/// client went away and the handler was dropped) cancels the request's
/// backend calls.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) tenant: Tenant,
    pub(crate) group: Group,
}

impl FromRequestParts<AppState> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let tenant = Tenant::from_request_parts(parts, state).await?;
        let scheduler = &state.scheduler;
        let root = tenant.root().as_str();
        // A batch spooled to disk is stored later: a backend that is down
        // now does not stop it.
        let spooled = state.spool.is_some() && prefers_async(&parts.headers);
        let group = match spooled {
            true => scheduler.group_while_down(root),
            false => scheduler.group(root),
        };
        let group = group.map_err(Refusal::of_scheduler)?;
        Ok(Self { tenant, group })
    }
}

/// Whether the request asks to be answered before its files are stored
/// (`Prefer: respond-async`, RFC 7240).
pub(crate) fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            let token = preference.split(';').next().unwrap_or_default().trim();
            token.eq_ignore_ascii_case("respond-async")
        })
}

/// Where an admitted batch may put its bytes.
#[derive(Debug)]
pub(crate) enum Room {
    /// In the spool, as they arrive.
    Spool(JobWriter),
    /// In upload buffers: memory reserved within the tenant's share and
    /// the server's budget, held until the request ends.
    Memory(Held, Reservation),
}

/// Admits a batch of `length` bytes (if known) whose files may buffer up to
/// `buffer` bytes: into the spool if the request asked to be answered
/// early and the server spools, else into upload memory (last, as it may
/// wait).
///
/// # Errors
///
/// [`ApiError::Refused`] by the gate that refused it;
/// [`ApiError::TooLargeForSpool`] for a batch no spool budget can ever
/// take; a spool that failed.
pub(crate) async fn admit_batch(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    length: Option<u64>,
    buffer: u64,
) -> Result<Room, ApiError> {
    if let Some(spool) = state.spool.as_ref().filter(|_| prefers_async(headers)) {
        let (root, own) = (tenant.root().as_str(), tenant.policy().max_spooled_bytes());
        // Larger than all the spool may ever hold for it: a 429 would send
        // the client back for nothing, again and again.
        let limit = own.map_or(spool.max_bytes(), |own| own.min(spool.max_bytes()));
        if let Some(size) = length.filter(|&size| size > limit) {
            return Err(ApiError::TooLargeForSpool { size, limit });
        }
        let writer = spool.begin(root, own, length.unwrap_or(0)).await?;
        return Ok(Room::Spool(writer));
    }
    let need = length.map_or(buffer, |length| length.min(buffer));
    let (held, reservation) = admit_memory(state, tenant, need).await?;
    Ok(Room::Memory(held, reservation))
}

/// Reserves `need` bytes of upload memory for a request of `tenant`:
/// within its share first, then the server's budget (last, as it may
/// wait). Both are held until the returned pair is dropped.
///
/// # Errors
///
/// [`Refusal::TenantMemory`] past the tenant's share; the budget's
/// refusal (see [`crate::memory`]).
pub(crate) async fn admit_memory(
    state: &AppState,
    tenant: &Tenant,
    need: u64,
) -> Result<(Held, Reservation), Refusal> {
    let memory = &state.upload_memory;
    let held = tenant
        .policy()
        .hold(need)
        .map_err(|(held, limit)| Refusal::TenantMemory {
            held,
            limit,
            retry_after: memory.estimate(held),
        })?;
    Ok((held, memory.reserve(need).await?))
}
