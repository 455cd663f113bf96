//! The driver's areas of a split virtqueue (virtio 1.x, 2.7): the descriptor table and the
//! available ring, resolved once per batch.
//!
//! virtio-queue resolves every guest address anew: a region lookup and a checked slice for the
//! avail index, the ring entry and each descriptor, several per 4 KiB receive buffer. A batch
//! here maps both areas once, each as a volatile slice inside one memory region, and then reads
//! an entry with one bounds check. Guest memory stays untrusted: values are copied out with
//! volatile loads and checked before use (head and `next` indices inside the table, chains no
//! longer than the table, no indirect descriptors, which we do not offer).
//!
//! A queue whose areas do not each lie inside one region (possible only where guest memory is
//! several adjacent regions) gets no view: the caller takes its heads through virtio-queue and
//! walks its chains with [`UnmappedChainWalk`], which reads each descriptor on its own and
//! checks it as the mapped walk does.

use std::sync::atomic::Ordering;

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::QueueT;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, VolatileMemory, VolatileSlice};

use crate::ring::{ChainError, GuestMem};

/// The available ring: `flags` and `idx` (2 bytes each), then one 2-byte head per entry.
const AVAIL_RING_HEADER_LEN: usize = 4;
const AVAIL_ENTRY_LEN: usize = 2;
const DESCRIPTOR_LEN: usize = std::mem::size_of::<Descriptor>();

/// The driver's `used_event` (EVENT_IDX): the 2 bytes after the last available-ring entry.
/// Read on its own rather than through [`DriverAreas`], since it is wanted once per batch,
/// after the used index is published.
pub fn used_event(queue: &impl QueueT, mem: &GuestMem) -> Option<u16> {
    let offset = AVAIL_RING_HEADER_LEN + usize::from(queue.size()) * AVAIL_ENTRY_LEN;
    let addr = GuestAddress(queue.avail_ring()).checked_add(offset as u64)?;
    mem.load::<u16>(addr, Ordering::Acquire)
        .ok()
        .map(u16::from_le)
}

/// One descriptor as read, before any check beyond the table bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: GuestAddress,
    pub len: u32,
    pub write_only: bool,
}

/// Where a queue's areas were when a view was made of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    descriptors: u64,
    avail: u64,
    size: u16,
}

impl Layout {
    fn of(queue: &impl QueueT) -> Layout {
        Layout {
            descriptors: queue.desc_table(),
            avail: queue.avail_ring(),
            size: queue.size(),
        }
    }
}

/// The descriptor table and available ring of one queue, for one batch.
#[derive(Debug)]
pub struct DriverAreas<'m> {
    descriptors: VolatileSlice<'m, ()>,
    avail: VolatileSlice<'m, ()>,
    layout: Layout,
    /// The avail index last read: heads before it need no new read.
    avail_idx: Option<u16>,
}

impl<'m> DriverAreas<'m> {
    /// Maps `queue`'s areas in `mem`; `None` if the queue is not ready or an area does not lie
    /// inside one region.
    pub fn resolve(queue: &impl QueueT, mem: &'m GuestMem) -> Option<Self> {
        let layout = Layout::of(queue);
        if !queue.ready() || layout.size == 0 {
            return None;
        }
        let entries = usize::from(layout.size);
        let descriptors = mem
            .get_slice(GuestAddress(layout.descriptors), entries * DESCRIPTOR_LEN)
            .ok()?;
        let avail = mem
            .get_slice(
                GuestAddress(layout.avail),
                AVAIL_RING_HEADER_LEN + entries * AVAIL_ENTRY_LEN,
            )
            .ok()?;
        Some(DriverAreas {
            descriptors,
            avail,
            layout,
            avail_idx: None,
        })
    }

    /// Takes the next available head from `queue`, moving its `next_avail` on. `None` when the
    /// driver has posted nothing more, when it claims more than the ring holds (a broken or
    /// hostile driver: nothing is taken), or when the queue was set up anew since the view was
    /// made.
    pub fn pop_head(&mut self, queue: &mut impl QueueT) -> Option<u16> {
        if !queue.ready() || Layout::of(queue) != self.layout {
            return None;
        }
        let next = queue.next_avail();
        if self.avail_idx.is_none_or(|idx| idx == next) {
            // Acquire: the entries and descriptors the index covers are read after it.
            let idx = u16::from_le(self.avail.load::<u16>(2, Ordering::Acquire).ok()?);
            if idx.wrapping_sub(next) > self.layout.size {
                log::debug!("avail index {idx} is more than a ring ahead of {next}");
                return None;
            }
            self.avail_idx = Some(idx);
            if idx == next {
                return None;
            }
        }
        let at = AVAIL_RING_HEADER_LEN + usize::from(next % self.layout.size) * AVAIL_ENTRY_LEN;
        let head = u16::from_le(self.avail.load::<u16>(at, Ordering::Relaxed).ok()?);
        queue.set_next_avail(next.wrapping_add(1));
        Some(head)
    }

    /// The descriptors of the chain starting at `head`, in order; the last item is an error if
    /// the chain links outside the table, loops, or uses an indirect table.
    pub fn chain(&self, head: u16) -> ChainWalk<'_, 'm> {
        ChainWalk {
            areas: self,
            next: Some(head),
            left: self.layout.size,
        }
    }

    fn descriptor(&self, index: u16) -> Option<Descriptor> {
        if index >= self.layout.size {
            return None;
        }
        let offset = usize::from(index) * DESCRIPTOR_LEN;
        self.descriptors
            .get_ref::<Descriptor>(offset)
            .ok()
            .map(|r| r.load())
    }
}

/// Walks one chain's descriptors through [`DriverAreas::chain`].
#[derive(Debug)]
pub struct ChainWalk<'a, 'm> {
    areas: &'a DriverAreas<'m>,
    next: Option<u16>,
    /// Descriptors the chain may still have: no chain is longer than the table.
    left: u16,
}

impl Iterator for ChainWalk<'_, '_> {
    type Item = Result<Desc, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.next.take()?;
        if self.left == 0 {
            return Some(Err(ChainError::BadLink));
        }
        self.left -= 1;
        let Some(desc) = self.areas.descriptor(index) else {
            return Some(Err(ChainError::BadLink));
        };
        Some(follow(desc, &mut self.next))
    }
}

/// One descriptor of a chain as read: refused if it names an indirect table, else its link
/// (if any) goes to `next`.
fn follow(desc: Descriptor, next: &mut Option<u16>) -> Result<Desc, ChainError> {
    let flags = desc.flags();
    if flags & VRING_DESC_F_INDIRECT as u16 != 0 {
        return Err(ChainError::Indirect);
    }
    if flags & VRING_DESC_F_NEXT as u16 != 0 {
        *next = Some(desc.next());
    }
    Ok(Desc {
        addr: desc.addr(),
        len: desc.len(),
        write_only: flags & VRING_DESC_F_WRITE as u16 != 0,
    })
}

/// Walks one chain of a queue whose descriptor table is not one mapped slice (it spans two
/// memory regions), reading each descriptor on its own, with the checks of [`ChainWalk`]:
/// virtio-queue's own walker would follow indirect tables (which we do not offer) of up to
/// 65535 descriptors each.
#[derive(Debug)]
pub struct UnmappedChainWalk<'m> {
    mem: &'m GuestMem,
    table: GuestAddress,
    size: u16,
    next: Option<u16>,
    left: u16,
}

impl<'m> UnmappedChainWalk<'m> {
    /// The chain at `head` in the table at `table` of `size` entries.
    pub fn new(mem: &'m GuestMem, table: u64, size: u16, head: u16) -> Self {
        UnmappedChainWalk {
            mem,
            table: GuestAddress(table),
            size,
            next: Some(head),
            left: size,
        }
    }
}

impl Iterator for UnmappedChainWalk<'_> {
    type Item = Result<Desc, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.next.take()?;
        if self.left == 0 || index >= self.size {
            return Some(Err(ChainError::BadLink));
        }
        self.left -= 1;
        let desc = self
            .table
            .checked_add(u64::from(index) * DESCRIPTOR_LEN as u64)
            .and_then(|addr| self.mem.read_obj::<Descriptor>(addr).ok());
        let Some(desc) = desc else {
            return Some(Err(ChainError::OutOfMemory));
        };
        Some(follow(desc, &mut self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};

    const SIZE: u16 = 8;

    fn memory() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    /// A ready queue over a mock ring at 0; the test writes descriptors and heads itself. The
    /// mock starts the used ring `4 + SIZE` bytes into the avail ring, so tests post below
    /// slot `SIZE / 2`.
    fn queue(mem: &GuestMem) -> (MockSplitQueue<'_, GuestMem>, Queue) {
        let ring = MockSplitQueue::create(mem, GuestAddress(0), SIZE);
        let queue = ring.create_queue::<Queue>().unwrap();
        (ring, queue)
    }

    fn write_desc(ring: &MockSplitQueue<'_, GuestMem>, index: u16, desc: Descriptor) {
        ring.desc_table().store(index, desc.into()).unwrap();
    }

    fn post(ring: &MockSplitQueue<'_, GuestMem>, heads: &[u16]) {
        for (i, &head) in heads.iter().enumerate() {
            ring.avail().ring().ref_at(i).unwrap().store(head.to_le());
        }
        ring.avail().idx().store((heads.len() as u16).to_le());
    }

    fn walk(areas: &DriverAreas<'_>, head: u16) -> Vec<Result<Desc, ChainError>> {
        areas.chain(head).collect()
    }

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;

    #[test]
    fn heads_come_in_order_and_a_chain_follows_its_links() {
        let mem = memory();
        let (ring, mut queue) = queue(&mem);
        write_desc(&ring, 0, Descriptor::new(0x4000, 100, NEXT, 3));
        write_desc(&ring, 3, Descriptor::new(0x5000, 200, WRITE, 0));
        write_desc(&ring, 5, Descriptor::new(0x6000, 300, 0, 0));
        post(&ring, &[0, 5]);
        let mut areas = DriverAreas::resolve(&queue, &mem).unwrap();
        assert_eq!(areas.pop_head(&mut queue), Some(0));
        assert_eq!(
            walk(&areas, 0),
            [
                Ok(Desc {
                    addr: GuestAddress(0x4000),
                    len: 100,
                    write_only: false
                }),
                Ok(Desc {
                    addr: GuestAddress(0x5000),
                    len: 200,
                    write_only: true
                }),
            ]
        );
        assert_eq!(areas.pop_head(&mut queue), Some(5));
        assert_eq!(areas.pop_head(&mut queue), None);
        assert_eq!(queue.next_avail(), 2);
        // A head posted later is seen once the cached index runs out.
        post(&ring, &[0, 5, 0]);
        assert_eq!(areas.pop_head(&mut queue), Some(0));
    }

    #[test]
    fn loops_links_outside_the_table_and_indirect_tables_end_a_chain_with_an_error() {
        let mem = memory();
        let (ring, queue) = queue(&mem);
        write_desc(&ring, 0, Descriptor::new(0x4000, 1, NEXT, 1));
        write_desc(&ring, 1, Descriptor::new(0x4000, 1, NEXT, 0));
        write_desc(&ring, 2, Descriptor::new(0x4000, 1, NEXT, SIZE));
        write_desc(
            &ring,
            4,
            Descriptor::new(0x4000, 16, VRING_DESC_F_INDIRECT as u16, 0),
        );
        let areas = DriverAreas::resolve(&queue, &mem).unwrap();
        let looped = walk(&areas, 0);
        assert_eq!(looped.len(), usize::from(SIZE) + 1);
        assert_eq!(looped.last(), Some(&Err(ChainError::BadLink)));
        assert_eq!(walk(&areas, 2).last(), Some(&Err(ChainError::BadLink)));
        assert_eq!(walk(&areas, 4), [Err(ChainError::Indirect)]);
        assert_eq!(walk(&areas, SIZE), [Err(ChainError::BadLink)]);
    }

    #[test]
    fn an_avail_index_more_than_a_ring_ahead_takes_nothing() {
        let mem = memory();
        let (ring, mut queue) = queue(&mem);
        ring.avail().idx().store((SIZE + 1).to_le());
        let mut areas = DriverAreas::resolve(&queue, &mem).unwrap();
        assert_eq!(areas.pop_head(&mut queue), None);
        assert_eq!(queue.next_avail(), 0);
    }

    #[test]
    fn a_queue_set_up_anew_or_areas_across_regions_give_no_heads() {
        let mem = memory();
        let (ring, mut queue) = queue(&mem);
        post(&ring, &[1]);
        let mut areas = DriverAreas::resolve(&queue, &mem).unwrap();
        queue.set_desc_table_address(Some(0x8000), None);
        assert_eq!(areas.pop_head(&mut queue), None);
        assert_eq!(queue.next_avail(), 0);

        let split =
            GuestMem::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x10000)])
                .unwrap();
        // The descriptor table (128 bytes) starts 64 bytes before the second region.
        let ring = MockSplitQueue::create(&split, GuestAddress(0xfc0), SIZE);
        let queue = ring.create_queue::<Queue>().unwrap();
        assert!(DriverAreas::resolve(&queue, &split).is_none());
        // virtio-queue still serves such a queue: the caller's fallback.
        let mut queue = queue;
        assert!(queue.iter(&split).is_ok());
    }
}
