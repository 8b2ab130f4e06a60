//! [`Uploads`]: what the upload handlers share, held in the router's
//! state: the protocol's settings, the requests in progress on each upload,
//! and the uploads each tenant has open. Apart from the handlers, so that
//! the state does not depend on them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use corral_store::resumable::expires;

use super::inflight::Inflight;
use crate::admission::refusal::Refusal;
use crate::tus::{Protocol, Reply, TusConfig};

/// What the upload handlers share.
#[derive(Debug)]
pub(crate) struct Uploads {
    /// What the protocol layer advertises and enforces.
    pub(crate) tus: TusConfig,
    /// The requests in progress on each upload.
    pub(super) inflight: Arc<Inflight>,
    /// The uploads each tenant has open, by its root: those this instance
    /// created and that have not finished, been terminated or expired.
    open: Mutex<HashMap<String, HashSet<String>>>,
    /// How many, every tenant's: for the metrics.
    open_count: Arc<AtomicUsize>,
    /// The most each tenant may have open.
    max_open: usize,
}

impl Uploads {
    pub(crate) fn new(tus: TusConfig, max_open: usize) -> Self {
        Self {
            tus,
            inflight: Arc::default(),
            open: Mutex::default(),
            open_count: Arc::default(),
            max_open,
        }
    }

    /// Refuses a creation of `tenant`'s when it has its limit of uploads
    /// open, forgetting those expired meanwhile.
    pub(super) fn admit(&self, tenant: &str) -> Result<(), Refusal> {
        let mut open = self.open.lock().expect("never poisoned");
        let Some(ids) = open.get_mut(tenant) else {
            return Ok(());
        };
        let now = SystemTime::now();
        let expiry = self.tus.expiry;
        let before = ids.len();
        ids.retain(|id| expires(id, expiry).is_some_and(|expires| expires > now));
        (self.open_count).fetch_sub(before - ids.len(), Ordering::Relaxed);
        match ids.len() < self.max_open {
            true => Ok(()),
            false => Err(Refusal::TenantUploads {
                open: ids.len(),
                limit: self.max_open,
            }),
        }
    }

    /// The number of uploads open, every tenant's, kept up to date.
    pub(crate) fn open_count(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open_count)
    }

    /// Counts `id` as open for `tenant`, or no more.
    pub(super) fn set_open(&self, tenant: &str, id: &str, is_open: bool) {
        let mut open = self.open.lock().expect("never poisoned");
        match is_open {
            true => {
                if open
                    .entry(tenant.to_owned())
                    .or_default()
                    .insert(id.to_owned())
                {
                    self.open_count.fetch_add(1, Ordering::Relaxed);
                }
            }
            false => {
                if let Some(ids) = open.get_mut(tenant) {
                    if ids.remove(id) {
                        self.open_count.fetch_sub(1, Ordering::Relaxed);
                    }
                    if ids.is_empty() {
                        open.remove(tenant);
                    }
                }
            }
        }
    }

    pub(super) fn reply(&self, protocol: Protocol) -> Reply<'_> {
        Reply {
            protocol,
            config: &self.tus,
            now: SystemTime::now(),
        }
    }
}
