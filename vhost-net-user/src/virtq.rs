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
//! An area that does not lie inside one region (possible only where guest memory is several
//! adjacent regions) is read through guest memory's region lookup instead, with the same
//! checks: every chain goes through this walker, none through virtio-queue's (which follows
//! indirect tables).

use std::sync::atomic::Ordering;

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::QueueT;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory,
    VolatileSlice,
};

/// Guest memory as the daemon maps it.
pub type GuestMem = GuestMemoryMmap<()>;

/// Why a descriptor chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("write-only descriptor in a transmit chain")]
    WriteOnlyInTx,
    #[error("read-only descriptor in a receive chain")]
    ReadOnlyInRx,
    #[error("descriptor outside guest memory")]
    OutOfMemory,
    #[error("chain shorter than the virtio-net header")]
    TooShort,
    #[error("chain longer than the largest frame")]
    TooLong,
    #[error("descriptor chain links outside the table or loops")]
    BadLink,
    #[error("indirect descriptor, a feature not offered")]
    Indirect,
}

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

/// One driver area, read where it lies.
#[derive(Debug)]
enum Area<'m> {
    /// Inside one region: mapped once, each read one bounds check.
    Mapped(VolatileSlice<'m, ()>),
    /// Across adjacent regions: each read looks its address up in guest memory.
    Spanning {
        mem: &'m GuestMem,
        start: GuestAddress,
    },
}

impl<'m> Area<'m> {
    fn resolve(mem: &'m GuestMem, start: GuestAddress, len: usize) -> Option<Self> {
        if let Ok(slice) = mem.get_slice(start, len) {
            return Some(Area::Mapped(slice));
        }
        mem.check_range(start, len)
            .then_some(Area::Spanning { mem, start })
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> Option<u16> {
        let value = match self {
            Area::Mapped(slice) => slice.load::<u16>(offset, order).ok()?,
            Area::Spanning { mem, start } => mem
                .load::<u16>(start.checked_add(offset as u64)?, order)
                .ok()?,
        };
        Some(u16::from_le(value))
    }

    fn descriptor(&self, offset: usize) -> Option<Descriptor> {
        match self {
            Area::Mapped(slice) => slice.get_ref::<Descriptor>(offset).ok().map(|r| r.load()),
            Area::Spanning { mem, start } => mem.read_obj(start.checked_add(offset as u64)?).ok(),
        }
    }
}

/// The descriptor table and available ring of one queue, for one batch.
#[derive(Debug)]
pub struct DriverAreas<'m> {
    descriptors: Area<'m>,
    avail: Area<'m>,
    layout: Layout,
    /// The avail index last read: heads before it need no new read.
    avail_idx: Option<u16>,
}

impl<'m> DriverAreas<'m> {
    /// Resolves `queue`'s areas in `mem` (mapped where each lies inside one region); `None` if
    /// the queue is not ready or an area is not all in guest memory.
    pub fn resolve(queue: &impl QueueT, mem: &'m GuestMem) -> Option<Self> {
        let layout = Layout::of(queue);
        if !queue.ready() || layout.size == 0 {
            return None;
        }
        let entries = usize::from(layout.size);
        let descriptors = Area::resolve(
            mem,
            GuestAddress(layout.descriptors),
            entries * DESCRIPTOR_LEN,
        )?;
        let avail = Area::resolve(
            mem,
            GuestAddress(layout.avail),
            AVAIL_RING_HEADER_LEN + entries * AVAIL_ENTRY_LEN,
        )?;
        Some(DriverAreas {
            descriptors,
            avail,
            layout,
            avail_idx: None,
        })
    }

    /// Whether both areas are mapped, each inside one region (the fast case).
    pub fn is_mapped(&self) -> bool {
        matches!(
            (&self.descriptors, &self.avail),
            (Area::Mapped(_), Area::Mapped(_))
        )
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
            let idx = self.avail.load_u16(2, Ordering::Acquire)?;
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
        let head = self.avail.load_u16(at, Ordering::Relaxed)?;
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
        self.descriptors
            .descriptor(usize::from(index) * DESCRIPTOR_LEN)
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
        let flags = desc.flags();
        if flags & VRING_DESC_F_INDIRECT as u16 != 0 {
            return Some(Err(ChainError::Indirect));
        }
        if flags & VRING_DESC_F_NEXT as u16 != 0 {
            self.next = Some(desc.next());
        }
        Some(Ok(Desc {
            addr: desc.addr(),
            len: desc.len(),
            write_only: flags & VRING_DESC_F_WRITE as u16 != 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::Queue;
    use virtio_queue::mock::MockSplitQueue;

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
    fn a_queue_set_up_anew_gives_no_heads() {
        let mem = memory();
        let (ring, mut queue) = queue(&mem);
        post(&ring, &[1]);
        let mut areas = DriverAreas::resolve(&queue, &mem).unwrap();
        assert!(areas.is_mapped());
        queue.set_desc_table_address(Some(0x8000), None);
        assert_eq!(areas.pop_head(&mut queue), None);
        assert_eq!(queue.next_avail(), 0);
    }

    /// Areas across two regions are read through guest memory, with the same checks.
    #[test]
    fn areas_across_regions_are_walked_with_the_same_checks() {
        let split =
            GuestMem::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x10000)])
                .unwrap();
        // The descriptor table (128 bytes) starts 64 bytes before the second region.
        let ring = MockSplitQueue::create(&split, GuestAddress(0xfc0), SIZE);
        let mut queue = ring.create_queue::<Queue>().unwrap();
        write_desc(&ring, 0, Descriptor::new(0x4000, 100, NEXT, 6));
        write_desc(&ring, 6, Descriptor::new(0x5000, 200, WRITE, 0));
        write_desc(
            &ring,
            2,
            Descriptor::new(0x4000, 16, VRING_DESC_F_INDIRECT as u16, 0),
        );
        write_desc(&ring, 3, Descriptor::new(0x4000, 1, NEXT, 3));
        post(&ring, &[0, 2, 3]);
        let mut areas = DriverAreas::resolve(&queue, &split).unwrap();
        assert!(!areas.is_mapped());
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
        assert_eq!(areas.pop_head(&mut queue), Some(2));
        assert_eq!(walk(&areas, 2), [Err(ChainError::Indirect)]);
        assert_eq!(areas.pop_head(&mut queue), Some(3));
        assert_eq!(walk(&areas, 3).last(), Some(&Err(ChainError::BadLink)));
        assert_eq!(areas.pop_head(&mut queue), None);
        // An area not all in guest memory gives no view at all.
        queue.set_desc_table_address(Some(0x10fc0), None);
        assert!(DriverAreas::resolve(&queue, &split).is_none());
    }
}
