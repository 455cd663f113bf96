//! The vhost-user device over rings the guest wrote: descriptor tables, available rings and
//! buffers laid out in guest memory by the input, that memory sometimes two adjacent regions
//! (so that queue areas and buffers straddle them and the fallback chain walker runs), and the
//! device's own event handler (`NetBackend::handle_event`) run for TX kicks, RX kicks and host
//! events, as the vhost-user worker runs it. Between events the guest may rewrite any memory
//! and post more chains.
//!
//! The engine behind the rings has no flow tables (nothing reaches a host socket); it answers
//! ARP, DHCP, ICMP and NDP, which is what makes RX reservations and commits, with and without
//! mergeable buffers.

use netcore::EngineOptions;
use netplan::NetPlan;
use vhost_net_user::device::{HOST_EVENT, NetBackend, RX_QUEUE, TX_QUEUE};
use vhost_net_user::ring::GuestMem;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;

use crate::bytes::Input;

/// Guest memory: 64 KiB, as one region or two adjacent ones split at a page boundary.
const MEM_SIZE: u64 = 0x10000;

/// One queue as the guest set it up.
struct Queue {
    size: u16,
    desc: u64,
    avail: u64,
    /// Heads posted so far: the avail index.
    posted: u16,
}

impl Queue {
    /// Reads the queue's layout from the input; areas are aligned as virtio asks.
    fn layout(input: &mut Input<'_>) -> Queue {
        let how = input.u8();
        let size = if how & 0x80 != 0 {
            input.u16() // anything, even invalid
        } else {
            1 << (how % 9)
        };
        Queue {
            size,
            desc: u64::from(input.u16()) & !0xf,
            avail: u64::from(input.u16()) & !1,
            posted: 0,
        }
    }

    /// Writes up to `size` descriptors from the input.
    fn descriptors(&self, input: &mut Input<'_>, mem: &GuestMem) {
        let n = usize::from(input.u8()).min(usize::from(self.size));
        for i in 0..n {
            let how = input.u8();
            let addr = match how & 3 {
                3 => u64::from(input.u32()) << 32 | u64::from(input.u32()),
                _ => u64::from(input.u16()),
            };
            let len = match how >> 2 & 3 {
                0 => u32::from(input.u8()),
                3 => input.u32(),
                _ => u32::from(input.u16()),
            };
            // NEXT (1), WRITE (2), INDIRECT (4) mostly, anything sometimes.
            let flags = if how & 0x80 != 0 {
                input.u16()
            } else {
                u16::from(how >> 4 & 7)
            };
            let next = if how & 0x40 != 0 {
                input.u16()
            } else {
                (i as u16).wrapping_add(1)
            };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            let at = self.desc + 16 * i as u64;
            let _ = mem.write_slice(&raw, GuestAddress(at));
        }
    }

    /// Posts `count` heads (from the input, or in order) and moves the avail index on, as a
    /// driver does; sometimes claims more than it wrote.
    fn post(&mut self, input: &mut Input<'_>, mem: &GuestMem) {
        let how = input.u8();
        let count = u16::from(how & 0x3f);
        let size = self.size.max(1);
        for k in 0..count {
            let head = if how & 0x40 != 0 {
                u16::from(input.u8())
            } else {
                k % size
            };
            let slot = self.posted.wrapping_add(k) % size;
            let at = self.avail + 4 + 2 * u64::from(slot);
            let _ = mem.write_slice(&head.to_le_bytes(), GuestAddress(at));
        }
        self.posted = self.posted.wrapping_add(count);
        let idx = if how & 0x80 != 0 {
            input.u16()
        } else {
            self.posted
        };
        let _ = mem.write_slice(&idx.to_le_bytes(), GuestAddress(self.avail + 2));
    }

    /// The vring the device sees; its used ring at an address from the input.
    fn vring(&self, input: &mut Input<'_>, mem: &GuestMem, event_idx: bool) -> VringRwLock {
        let used = u64::from(input.u16()) & !3;
        let vring = VringRwLock::new(GuestMemoryAtomic::new(mem.clone()), 1024)
            .expect("a vring of 1024 entries at most");
        vring.set_queue_size(self.size);
        let _ = vring.set_queue_info(self.desc, self.avail, used);
        vring.set_queue_event_idx(event_idx);
        vring.set_queue_ready(true);
        vring
    }
}

/// Runs one scenario; see the module comment.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let features = input.u8();
    let split = u64::from(input.u8() % 16) * 0x1000;
    let mem = if split == 0 {
        GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
    } else {
        GuestMem::from_ranges(&[
            (GuestAddress(0), split as usize),
            (GuestAddress(split), (MEM_SIZE - split) as usize),
        ])
    }
    .expect("guest memory");

    let mut acked = 0u64;
    for (bit, feature) in [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_RING_F_EVENT_IDX,
    ]
    .into_iter()
    .enumerate()
    {
        if features & (1 << bit) != 0 {
            acked |= 1 << feature;
        }
    }
    let event_idx = features & (1 << 5) != 0;

    let mut queues = [Queue::layout(&mut input), Queue::layout(&mut input)];
    for q in &queues {
        q.descriptors(&mut input, &mem);
    }
    let vrings = [
        queues[RX_QUEUE].vring(&mut input, &mem, event_idx),
        queues[TX_QUEUE].vring(&mut input, &mem, event_idx),
    ];

    let options = EngineOptions {
        max_flows: 0,
        control: Default::default(),
        ..EngineOptions::default()
    };
    let mut plan = NetPlan::slirp_default();
    plan.mtu = if features & 0x40 != 0 { 9000 } else { 1500 };
    let backend = NetBackend::new(plan, options, None, 1).expect("device");
    backend.acked_features(acked);
    backend.set_event_idx(event_idx);
    backend
        .update_memory(GuestMemoryAtomic::new(mem.clone()))
        .expect("memory");

    let mut events = 0;
    while !input.is_empty() && events < 32 {
        let op = input.u8();
        match op % 8 {
            // The guest writes memory: frames, descriptors, anything.
            0 | 1 => {
                let at = u64::from(input.u16());
                let bytes = input.chunk();
                let _ = mem.write_slice(bytes, GuestAddress(at));
            }
            2 => queues[usize::from(op >> 3 & 1)].descriptors(&mut input, &mem),
            3 => queues[usize::from(op >> 3 & 1)].post(&mut input, &mem),
            4 | 5 => {
                events += 1;
                let _ = backend.handle_event(TX_QUEUE as u16, EventSet::IN, &vrings, 0);
            }
            6 => {
                events += 1;
                let _ = backend.handle_event(RX_QUEUE as u16, EventSet::IN, &vrings, 0);
            }
            _ => {
                events += 1;
                let _ = backend.handle_event(HOST_EVENT, EventSet::IN, &vrings, 0);
            }
        }
    }
}
