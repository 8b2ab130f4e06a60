//! The fair queue: waiting jobs, served fairly by bytes across tenants and,
//! within a tenant, across groups (requests).
//!
//! # Why byte-fair, and why virtual time
//!
//! Fairness by job count would let a tenant of 64 MiB parts take 1000 times
//! the backend share of a tenant of 64 KiB files; fairness is therefore by
//! bytes (each job's *cost*). The classic tool is deficit round robin (DRR):
//! each active flow gets a quantum of bytes per round and is served while
//! its deficit covers its next job. DRR is O(1) only while the quantum is
//! at least the largest job; with jobs from 1 byte to 64 MiB it either
//! spins through empty rounds or degrades to plain round robin. Start-time
//! fair queueing gives the same long-run shares with O(log n) work per job
//! whatever the sizes: each flow carries a virtual time, advanced by the
//! cost of each job it is served, and the flow with the smallest virtual
//! time goes next. A flow that becomes active starts at the current virtual
//! time, so idling earns no credit to burst with later. This is DRR with an
//! infinitely fine quantum; the queue applies it twice, across tenants, then
//! across the groups of the chosen tenant, so a 1-file request is never
//! stuck behind a 10,000-file batch, even of the same tenant.
//!
//! No crate offers a two-level, cost-weighted queue with O(1) removal of
//! arbitrary entries (a cancelled job leaves at once), so it is written
//! here.
//!
//! Removal is lazy: a removed entry leaves a stale id in its group's FIFO,
//! skipped when reached, so cancelling one job of 10,000 costs O(1).

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Identifies an entry of the queue.
pub(crate) type EntryId = u64;

/// The fair queue. `T` is what waits: for the scheduler, the channel on
/// which the job's permit is sent.
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    entries: HashMap<EntryId, Entry<T>>,
    groups: HashMap<u64, GroupQueue>,
    tenants: HashMap<u64, TenantQueue>,
    /// Tenants with entries, by virtual time.
    active: BTreeSet<(u64, u64)>,
    /// The virtual time of the most recently served tenant.
    clock: u64,
    next_id: EntryId,
    bytes: u64,
}

#[derive(Debug)]
struct Entry<T> {
    group: u64,
    cost: u64,
    item: T,
}

#[derive(Debug)]
struct GroupQueue {
    tenant: u64,
    vtime: u64,
    /// Entry ids in arrival order, including removed ones (skipped).
    fifo: VecDeque<EntryId>,
    /// Live entries in `fifo`.
    live: usize,
}

#[derive(Debug, Default)]
struct TenantQueue {
    vtime: u64,
    /// Groups with entries, by virtual time.
    active: BTreeSet<(u64, u64)>,
    /// The virtual time of this tenant's most recently served group.
    clock: u64,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            groups: HashMap::new(),
            tenants: HashMap::new(),
            active: BTreeSet::new(),
            clock: 0,
            next_id: 0,
            bytes: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The summed cost of the entries waiting.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Queues `item` for `group` of `tenant`, costing `cost`.
    pub(crate) fn push(&mut self, tenant: u64, group: u64, cost: u64, item: T) -> EntryId {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, Entry { group, cost, item });
        self.bytes += cost;

        let tenant_queue = self.tenants.entry(tenant).or_default();
        let group_queue = self.groups.entry(group).or_insert_with(|| GroupQueue {
            tenant,
            vtime: 0,
            fifo: VecDeque::new(),
            live: 0,
        });
        group_queue.fifo.push_back(id);
        group_queue.live += 1;
        if group_queue.live == 1 {
            // Becoming active: no credit for the time spent idle.
            group_queue.vtime = group_queue.vtime.max(tenant_queue.clock);
            tenant_queue.active.insert((group_queue.vtime, group));
            if tenant_queue.active.len() == 1 {
                tenant_queue.vtime = tenant_queue.vtime.max(self.clock);
                self.active.insert((tenant_queue.vtime, tenant));
            }
        }
        id
    }

    /// Accounts for a job of `tenant` costing `cost` that is served at once
    /// because nothing waits: the virtual times move exactly as if it had
    /// been pushed and popped, without an entry.
    pub(crate) fn pass(&mut self, tenant: u64, cost: u64) {
        debug_assert!(self.entries.is_empty(), "only when nothing waits");
        // With nothing waiting no group has state, and a group's clock
        // would start and end at its tenant's: only the tenant's moves.
        let tenant_queue = self.tenants.entry(tenant).or_default();
        tenant_queue.vtime = tenant_queue.vtime.max(self.clock);
        self.clock = tenant_queue.vtime;
        tenant_queue.vtime += cost;
        self.forget_if_idle(tenant);
    }

    /// Gives back `cost`, charged to `group` of `tenant` for an attempt
    /// that was throttled or failed: it did no work, and its retry must
    /// queue where the attempt stood.
    ///
    /// Without it, a retried job waited behind every group that became
    /// active since: a group's virtual time had moved past the clock, and
    /// the clock moves only when a group with a later virtual time is
    /// served, which new groups, starting at the clock, kept from
    /// happening. Under a herd of uploads (a new group per file stored,
    /// see `Group::detached`) a throttled file waited until the herd
    /// ended, its request's body unread, and clients gave up after 30 s.
    pub(crate) fn refund(&mut self, tenant: u64, group: u64, cost: u64) {
        if let Some(group_queue) = self.groups.get_mut(&group) {
            let tenant_queue = self.tenants.get_mut(&tenant);
            let active = tenant_queue.filter(|_| group_queue.live > 0);
            let old = (group_queue.vtime, group);
            group_queue.vtime = group_queue.vtime.saturating_sub(cost);
            if let Some(tenant_queue) = active {
                tenant_queue.active.remove(&old);
                tenant_queue.active.insert((group_queue.vtime, group));
            }
        }
        if let Some(tenant_queue) = self.tenants.get_mut(&tenant) {
            let old = (tenant_queue.vtime, tenant);
            tenant_queue.vtime = tenant_queue.vtime.saturating_sub(cost);
            if self.active.remove(&old) {
                self.active.insert((tenant_queue.vtime, tenant));
            }
        }
    }

    /// Takes entry `id` out of the queue, if it is still there.
    pub(crate) fn remove(&mut self, id: EntryId) -> Option<T> {
        let entry = self.entries.remove(&id)?;
        self.bytes -= entry.cost;
        let group = self
            .groups
            .get_mut(&entry.group)
            .expect("an entry's group exists while the entry does");
        group.live -= 1;
        if group.live == 0 {
            group.fifo.clear();
            let (tenant, vtime) = (group.tenant, group.vtime);
            self.deactivate_group(tenant, vtime, entry.group);
        }
        Some(entry.item)
    }

    /// Takes every entry of `group` out of the queue.
    pub(crate) fn remove_group(&mut self, group: u64) -> Vec<T> {
        let Some(queue) = self.groups.get(&group) else {
            return Vec::new();
        };
        let ids: Vec<EntryId> = queue.fifo.iter().copied().collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Takes every entry of `group` out of the queue and forgets its
    /// fairness state: the group is gone.
    pub(crate) fn forget_group(&mut self, group: u64) -> Vec<T> {
        let removed = self.remove_group(group);
        self.groups.remove(&group);
        removed
    }

    fn deactivate_group(&mut self, tenant: u64, vtime: u64, group: u64) {
        let tenant_queue = self
            .tenants
            .get_mut(&tenant)
            .expect("a group's tenant exists while the group does");
        tenant_queue.active.remove(&(vtime, group));
        if tenant_queue.active.is_empty() {
            self.active.remove(&(tenant_queue.vtime, tenant));
            self.forget_if_idle(tenant);
        }
    }

    /// Drops the state of an idle tenant that owes nothing: its next entry
    /// would start at the current virtual time anyway.
    fn forget_if_idle(&mut self, tenant: u64) {
        if self.tenants[&tenant].active.is_empty() && self.tenants[&tenant].vtime <= self.clock {
            self.tenants.remove(&tenant);
        }
    }

    /// Takes the next entry in fair order, skipping groups for which
    /// `eligible` says no. Returns the entry's group and cost with it.
    pub(crate) fn pop(&mut self, eligible: impl Fn(u64) -> bool) -> Option<(T, u64, u64)> {
        let (tenant, group) = self.next(&eligible)?;
        let group_queue = self.groups.get_mut(&group).expect("active groups exist");
        let id = loop {
            let id = group_queue
                .fifo
                .pop_front()
                .expect("an active group has a live entry");
            if self.entries.contains_key(&id) {
                break id;
            }
        };
        let entry = self.entries.remove(&id).expect("checked just above");
        self.bytes -= entry.cost;

        // Advance virtual times: the group's within its tenant, the
        // tenant's across tenants.
        let tenant_queue = self.tenants.get_mut(&tenant).expect("active tenants exist");
        tenant_queue.active.remove(&(group_queue.vtime, group));
        tenant_queue.clock = group_queue.vtime;
        group_queue.vtime += entry.cost;
        group_queue.live -= 1;
        if group_queue.live > 0 {
            tenant_queue.active.insert((group_queue.vtime, group));
        } else {
            // Kept, with its virtual time, until the group is forgotten: a
            // request queues one part at a time, and byte fairness between
            // requests needs what each was served to be remembered.
            group_queue.fifo.clear();
        }
        self.active.remove(&(tenant_queue.vtime, tenant));
        self.clock = tenant_queue.vtime;
        tenant_queue.vtime += entry.cost;
        if tenant_queue.active.is_empty() {
            self.forget_if_idle(tenant);
        } else {
            self.active.insert((tenant_queue.vtime, tenant));
        }
        Some((entry.item, entry.group, entry.cost))
    }

    /// The tenant and group to serve next.
    fn next(&self, eligible: &impl Fn(u64) -> bool) -> Option<(u64, u64)> {
        self.active.iter().find_map(|&(_, tenant)| {
            self.tenants[&tenant]
                .active
                .iter()
                .find(|&&(_, group)| eligible(group))
                .map(|&(_, group)| (tenant, group))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut FairQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop(|_| true).map(|(item, _, _)| item)).collect()
    }

    #[test]
    fn tenants_alternate_by_bytes() {
        let mut queue = FairQueue::default();
        for _ in 0..3 {
            queue.push(1, 10, 100, "a");
        }
        for _ in 0..3 {
            queue.push(2, 20, 100, "b");
        }
        assert_eq!(drain(&mut queue), ["a", "b", "a", "b", "a", "b"]);
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.bytes(), 0);
    }

    #[test]
    fn a_big_job_costs_its_tenant_as_much_as_many_small_ones() {
        let mut queue = FairQueue::default();
        queue.push(1, 10, 400, "big");
        queue.push(1, 10, 400, "big");
        for _ in 0..8 {
            queue.push(2, 20, 100, "small");
        }
        let order = drain(&mut queue);
        // After one big job (400), the small tenant catches up with four.
        assert_eq!(
            &order[..6],
            ["big", "small", "small", "small", "small", "big"]
        );
    }

    #[test]
    fn requests_of_one_tenant_share_by_bytes_even_one_job_at_a_time() {
        // Two requests of one tenant, each with one job queued at a time
        // (as uploads queue their parts): 8 MiB parts and 1 KiB parts.
        let mut queue = FairQueue::default();
        let (big, small) = (8 << 20, 1 << 10);
        queue.push(1, 10, big, "big");
        queue.push(1, 11, small, "small");
        let mut served = [0u64, 0];
        // Long enough for several of the big parts.
        for _ in 0..30_000 {
            let (item, group, cost) = queue.pop(|_| true).unwrap();
            served[usize::from(group == 11)] += cost;
            queue.push(1, group, if item == "big" { big } else { small }, item);
        }
        // The small request is served until it has had as many bytes.
        let ratio = served[0] as f64 / served[1] as f64;
        assert!(
            (0.5..=2.0).contains(&ratio),
            "bytes served big/small: {ratio}"
        );
    }

    #[test]
    fn a_retried_job_keeps_its_place_among_groups_that_came_since() {
        let mut queue = FairQueue::default();
        // Group 1's job is served, and throttled: it will be retried.
        queue.push(1, 1, 100, "retried");
        assert_eq!(queue.pop(|_| true).unwrap().0, "retried");
        queue.refund(1, 1, 100);
        // Meanwhile a new group arrives every time one is served, as a
        // herd's files do; the retry comes back among them.
        for group in 2..5 {
            queue.push(1, group, 100, "new");
        }
        queue.push(1, 1, 100, "retried");
        let mut order = Vec::new();
        for group in 5..50 {
            order.push(queue.pop(|_| true).unwrap().0);
            queue.push(1, group, 100, "new");
        }
        let position = order.iter().position(|&i| i == "retried");
        assert!(
            position.is_some_and(|p| p <= 3),
            "the retry waited behind {position:?} new groups"
        );
    }

    #[test]
    fn groups_share_their_tenants_turn() {
        let mut queue = FairQueue::default();
        for _ in 0..100 {
            queue.push(1, 10, 1, "batch");
        }
        queue.push(1, 11, 1, "single");
        let order = drain(&mut queue);
        let position = order.iter().position(|&i| i == "single").unwrap();
        assert!(
            position <= 1,
            "the single job waited for {position} batch jobs"
        );
    }

    #[test]
    fn a_late_tenant_is_served_at_once_and_gets_no_credit_for_idling() {
        let mut queue = FairQueue::default();
        for _ in 0..1000 {
            queue.push(1, 10, 1, "old");
        }
        for _ in 0..500 {
            queue.pop(|_| true);
        }
        for _ in 0..3 {
            queue.push(2, 20, 1, "new");
        }
        let order = drain(&mut queue);
        assert_eq!(&order[..6], ["new", "old", "new", "old", "new", "old"]);
    }

    #[test]
    fn removal_is_immediate_and_skipped_on_pop() {
        let mut queue = FairQueue::default();
        let a = queue.push(1, 10, 5, "a");
        queue.push(1, 10, 7, "b");
        let c = queue.push(2, 20, 11, "c");
        assert_eq!(queue.remove(a), Some("a"));
        assert_eq!(queue.remove(a), None);
        assert_eq!((queue.len(), queue.bytes()), (2, 18));
        assert_eq!(queue.remove(c), Some("c"));
        assert_eq!(drain(&mut queue), ["b"]);
    }

    #[test]
    fn removing_a_group_empties_it_in_one_step() {
        let mut queue = FairQueue::default();
        for _ in 0..1000 {
            queue.push(1, 10, 3, "gone");
        }
        queue.push(2, 20, 1, "kept");
        assert_eq!(queue.remove_group(10).len(), 1000);
        assert_eq!((queue.len(), queue.bytes()), (1, 1));
        assert_eq!(drain(&mut queue), ["kept"]);
    }

    /// The virtual-time state that decides future order.
    fn clocks<T>(queue: &FairQueue<T>) -> (u64, Vec<(u64, u64, u64)>) {
        let mut tenants: Vec<_> = queue
            .tenants
            .iter()
            .map(|(&tenant, q)| (tenant, q.vtime, q.clock))
            .collect();
        tenants.sort_unstable();
        (queue.clock, tenants)
    }

    #[test]
    fn passing_an_empty_queue_is_pushing_and_popping() {
        let mut pushed = FairQueue::default();
        let mut passed = FairQueue::default();
        // A contended past, so that tenants owe different amounts.
        for queue in [&mut pushed, &mut passed] {
            for _ in 0..3 {
                queue.push(1, 10, 50, "a");
            }
            queue.push(2, 20, 400, "b");
            drain(queue);
        }
        for (tenant, group, cost) in [(1, 11, 7), (3, 30, 0), (2, 21, 900), (1, 12, 5), (3, 31, 2)]
        {
            pushed.push(tenant, group, cost, "x");
            pushed.pop(|_| true).unwrap();
            passed.pass(tenant, cost);
            assert_eq!(clocks(&pushed), clocks(&passed));
        }
        for queue in [&mut pushed, &mut passed] {
            for tenant in 1..=3 {
                for _ in 0..4 {
                    queue.push(
                        tenant,
                        tenant * 100,
                        300,
                        ["", "a", "b", "c"][tenant as usize],
                    );
                }
            }
        }
        assert_eq!(drain(&mut pushed), drain(&mut passed));
    }

    #[test]
    fn ineligible_groups_are_passed_over() {
        let mut queue = FairQueue::default();
        queue.push(1, 10, 1, "capped");
        queue.push(1, 11, 1, "free");
        let (item, group, _) = queue.pop(|group| group != 10).unwrap();
        assert_eq!((item, group), ("free", 11));
        assert!(queue.pop(|group| group != 10).is_none());
        assert_eq!(queue.len(), 1);
    }
}
