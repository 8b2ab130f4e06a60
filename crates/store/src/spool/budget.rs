//! The byte budget: how many file bytes the spool holds not yet stored, in
//! all and by tenant, and the one check that a batch may take more of
//! them. A [`Budget`] is only counters under a lock, with no disk and no
//! journal, so that a batch being written and the workers storing files
//! give bytes back through the same two calls, [`Budget::reserve`] and
//! [`Budget::release`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::error::SpoolError;
use super::job::Job;

/// File bytes waiting in the spool, in all and by tenant.
#[derive(Debug, Default)]
pub(super) struct Usage {
    pub(super) total: u64,
    pub(super) by_tenant: HashMap<String, u64>,
}

impl Usage {
    /// The bytes `jobs` still hold: their files not yet stored or failed.
    pub(super) fn of(jobs: &[Job]) -> Self {
        let mut usage = Self::default();
        for job in jobs {
            let bytes = job.pending_bytes();
            usage.total += bytes;
            *usage.by_tenant.entry(job.tenant.clone()).or_default() += bytes;
        }
        usage
    }
}

/// The spool's budget of bytes not yet stored, and each tenant's within it.
#[derive(Debug)]
pub(super) struct Budget {
    max_bytes: u64,
    /// File bytes in the spool (or reserved by batches being spooled) not
    /// yet stored.
    used: Mutex<Usage>,
}

impl Budget {
    /// A budget of `max_bytes`, of which `usage` is taken.
    pub(super) fn new(max_bytes: u64, usage: Usage) -> Self {
        Self {
            max_bytes,
            used: Mutex::new(usage),
        }
    }

    /// File bytes waiting in the spool now.
    pub(super) fn used(&self) -> u64 {
        self.usage().total
    }

    pub(super) fn usage(&self) -> MutexGuard<'_, Usage> {
        (self.used.lock()).expect("no panic while holding the lock")
    }

    /// Takes `bytes` of the budget for `tenant`, whose own budget is
    /// `tenant_max` if any.
    /// The most bytes the spool may hold.
    pub(super) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub(super) fn reserve(
        &self,
        tenant: &str,
        bytes: u64,
        tenant_max: Option<u64>,
    ) -> Result<(), SpoolError> {
        let max = self.max_bytes;
        let mut usage = self.usage();
        let total = usage.total.saturating_add(bytes);
        if total > max {
            return Err(SpoolError::Full {
                used: usage.total,
                max,
            });
        }
        let mine = usage.by_tenant.get(tenant).copied().unwrap_or(0);
        if let Some(tenant_max) = tenant_max
            && mine.saturating_add(bytes) > tenant_max
        {
            return Err(SpoolError::TenantFull {
                tenant: tenant.to_owned(),
                used: mine,
                max: tenant_max,
            });
        }
        usage.total = total;
        usage.by_tenant.insert(tenant.to_owned(), mine + bytes);
        Ok(())
    }

    /// Gives `bytes` of `tenant`'s back.
    pub(super) fn release(&self, tenant: &str, bytes: u64) {
        let mut usage = self.usage();
        debug_assert!(usage.total >= bytes, "released more than reserved");
        usage.total = usage.total.saturating_sub(bytes);
        if let Some(mine) = usage.by_tenant.get_mut(tenant) {
            *mine = mine.saturating_sub(bytes);
            if *mine == 0 {
                usage.by_tenant.remove(tenant);
            }
        }
    }
}
