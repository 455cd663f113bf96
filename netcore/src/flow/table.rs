//! The flow table TCP, UDP and ping share: slots, an index by key, a limit, and the slots owed
//! work at the end of a batch.

use std::collections::HashMap;
use std::hash::Hash;

use crate::queue_pairs::Listing;

/// A flow that knows the key it is indexed by.
pub(crate) trait Keyed {
    type Key: Copy + Eq + Hash;
    fn key(&self) -> Self::Key;
}

/// Flows in reusable slots (a slot number is the flow's epoll token), found by key.
///
/// A slot is taken with [`FlowTable::reserve`] before the flow exists (its socket is
/// registered under the slot's token first) and then filled with [`FlowTable::insert`], or
/// handed back with [`FlowTable::release`] if that failed. Nothing allocates once the table
/// has grown to its working size: freed slots, the pending list and the list being visited
/// are all reused.
#[derive(Debug)]
pub(crate) struct FlowTable<F: Keyed> {
    slots: Vec<Option<F>>,
    free: Vec<usize>,
    index: HashMap<F::Key, usize>,
    limit: usize,
    /// Slots owed work at the end of the batch (an ACK, a retry once RX buffers come).
    pending: Vec<usize>,
    /// The list being visited at batch end, kept so that neither list allocates again.
    visiting: Vec<usize>,
    /// With several queue pairs: where this table records its keys for the other pairs'
    /// engines (see [`crate::queue_pairs`]).
    listing: Option<Listing<F::Key>>,
}

impl<F: Keyed> FlowTable<F> {
    pub(crate) fn new(limit: usize) -> Self {
        FlowTable {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            limit,
            pending: Vec::new(),
            visiting: Vec::new(),
            listing: None,
        }
    }

    /// Records this table's keys in `listing` from now on (set before any flow exists).
    pub(crate) fn set_listing(&mut self, listing: Listing<F::Key>) {
        self.listing = Some(listing);
    }

    /// The other queue pair whose engine holds the flow of `key`, when this table has none.
    /// Takes the directory's lock: call it only for a key [`FlowTable::find`] did not find.
    pub(crate) fn held_elsewhere(&self, key: &F::Key) -> Option<u16> {
        self.listing.as_ref()?.elsewhere(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether the limit leaves no room for another flow.
    pub(crate) fn is_full(&self) -> bool {
        self.index.len() >= self.limit
    }

    /// The slot of the flow with `key`.
    pub(crate) fn find(&self, key: &F::Key) -> Option<usize> {
        self.index.get(key).copied()
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&F> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut F> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// A slot for a new flow: one freed before, or a new one at the end.
    pub(crate) fn reserve(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        })
    }

    /// Gives back a slot [`FlowTable::reserve`] gave, unused.
    pub(crate) fn release(&mut self, slot: usize) {
        self.free.push(slot);
    }

    /// Puts `flow` in the reserved `slot`, indexed by its key.
    pub(crate) fn insert(&mut self, slot: usize, flow: F) {
        if let Some(listing) = &self.listing {
            listing.directory.claim(flow.key(), listing.pair);
        }
        self.index.insert(flow.key(), slot);
        self.slots[slot] = Some(flow);
    }

    /// Adds `flow` in a free slot once `watch` has registered its socket under that slot (the
    /// slot is its epoll token) and noted it in the flow if it keeps it; if `watch` fails, the
    /// table is as it was and the flow is dropped.
    pub(crate) fn add_watched<E>(
        &mut self,
        mut flow: F,
        watch: impl FnOnce(&mut F, usize) -> Result<(), E>,
    ) -> Result<usize, E> {
        let slot = self.reserve();
        if let Err(e) = watch(&mut flow, slot) {
            self.release(slot);
            return Err(e);
        }
        self.insert(slot, flow);
        Ok(slot)
    }

    /// Takes the flow out of `slot` (off the index and the pending list), freeing the slot.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<F> {
        let flow = self.slots.get_mut(slot)?.take()?;
        if let Some(listing) = &self.listing {
            listing.directory.release(&flow.key(), listing.pair);
        }
        self.index.remove(&flow.key());
        self.pending.retain(|&s| s != slot);
        self.free.push(slot);
        Some(flow)
    }

    /// Every slot number in use or not, for visits that may remove flows on the way.
    pub(crate) fn slots(&self) -> std::ops::Range<usize> {
        0..self.slots.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &F> {
        self.slots.iter().flatten()
    }

    /// Notes that `slot` is owed work at the end of the batch (once).
    pub(crate) fn mark_pending(&mut self, slot: usize) {
        if !self.pending.contains(&slot) {
            self.pending.push(slot);
        }
    }

    /// The slots owed work, to visit; slots marked during the visit wait for the next one.
    /// Hand the list back with [`FlowTable::end_visit`].
    pub(crate) fn start_visit(&mut self) -> Vec<usize> {
        let mut visiting = std::mem::take(&mut self.visiting);
        std::mem::swap(&mut visiting, &mut self.pending);
        visiting
    }

    pub(crate) fn end_visit(&mut self, mut visiting: Vec<usize>) {
        visiting.clear();
        self.visiting = visiting;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(u32);

    impl Keyed for Item {
        type Key = u32;
        fn key(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn slots_are_reused_and_the_index_follows_them() {
        let mut table = FlowTable::new(2);
        let a = table.reserve();
        table.insert(a, Item(10));
        let b = table.reserve();
        table.insert(b, Item(20));
        assert!(table.is_full());
        assert_eq!((table.find(&10), table.find(&20)), (Some(a), Some(b)));
        table.mark_pending(a);
        table.mark_pending(a);
        assert_eq!(table.remove(a), Some(Item(10)));
        assert_eq!(table.find(&10), None);
        assert!(
            table.start_visit().is_empty(),
            "a removed flow is owed nothing"
        );
        assert_eq!(table.reserve(), a, "the freed slot comes first");
        table.release(a);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(b), Some(&Item(20)));
    }

    #[test]
    fn slots_marked_during_a_visit_wait_for_the_next() {
        let mut table = FlowTable::new(4);
        for key in 0..3 {
            let slot = table.reserve();
            table.insert(slot, Item(key));
            table.mark_pending(slot);
        }
        let visiting = table.start_visit();
        assert_eq!(visiting, [0, 1, 2]);
        table.mark_pending(1);
        table.end_visit(visiting);
        let again = table.start_visit();
        assert_eq!(again, [1]);
        table.end_visit(again);
    }
}
