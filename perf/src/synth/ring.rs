//! The synthetic guest's device side: a vhost-user frontend (the `vhost` crate's), guest memory
//! in shared memory, and the driver half of two split virtqueues.
//!
//! Guest memory is one region backed by a file on tmpfs (`/dev/shm`), unlinked as soon as it is
//! mapped: the same shared memory pages a memfd gives QEMU's `memory-backend-memfd`, without
//! unsafe code here. Its layout:
//!
//! | offset | what |
//! |---|---|
//! | 0 | RX ring (descriptors, avail, used) |
//! | 64 KiB | TX ring |
//! | 128 KiB | TX header slots, 128 bytes each |
//! | 256 KiB | RX buffers, `rx_buffer` bytes each, one per RX descriptor |
//! | after them | the payload pattern that TX frames point into |
//!
//! RX descriptor `i` always describes RX buffer `i`: posting a buffer again only writes its index
//! into the avail ring. TX frames use descriptor pairs: slot `s` owns descriptors `2s` (virtio-net
//! header and frame headers, from its header slot) and `2s + 1` (payload, pointing straight into
//! the pattern, as a guest's TSO frame points at page fragments).
//!
//! Notifications: without `EVENT_IDX` the driver kicks after every batch it publishes (unless
//! the device set `VRING_USED_F_NO_NOTIFY`) and always takes interrupts; with it, it kicks only
//! when the device's `avail_event` asks and arms `used_event` just before it sleeps.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

pub const RX: usize = 0;
pub const TX: usize = 1;

const RX_RING: u64 = 0;
const TX_RING: u64 = 64 << 10;
const TX_HEADERS: u64 = 128 << 10;
/// Bytes per TX header slot: virtio-net header + Ethernet/IPv4/TCP headers with options.
pub const TX_HEADER_SLOT: u64 = 128;
const RX_BUFFERS: u64 = 256 << 10;
/// Largest queue this layout has room for.
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// Guest-physical addresses of one split virtqueue and the driver's position in it.
#[derive(Debug, Clone, Copy)]
struct SplitRing {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// Next avail ring slot to fill (free-running).
    next_avail: u16,
    /// The avail index the device was last told about (kicked) or was published at.
    published: u16,
    /// Next used ring element to read (free-running).
    next_used: u16,
}

impl SplitRing {
    fn at(base: u64, size: u16) -> SplitRing {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        // avail: flags, idx, ring[n], used_event; the used ring is 4-byte aligned.
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        SplitRing {
            size,
            desc,
            avail,
            used,
            next_avail: 0,
            published: 0,
            next_used: 0,
        }
    }

    fn used_event_addr(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }

    fn avail_event_addr(&self) -> u64 {
        self.used + 4 + 8 * u64::from(self.size)
    }
}

/// What the driver negotiates and how it lays out memory.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    /// Virtio feature bits to ack (the backend must offer them all).
    pub features: u64,
    pub queue_size: u16,
    /// Bytes per RX buffer (one descriptor each).
    pub rx_buffer: u32,
    /// Bytes of payload pattern TX frames may point into.
    pub pattern_len: usize,
}

/// A connected synthetic guest device.
pub struct Driver {
    mem: GuestMemoryMmap<()>,
    /// Kept open for the connection's lifetime; dropping it disconnects.
    _frontend: Frontend,
    kicks: [EventFd; 2],
    calls: [EventFd; 2],
    _errs: [EventFd; 2],
    epoll: Epoll,
    rings: [SplitRing; 2],
    event_idx: bool,
    config: DriverConfig,
    pattern: u64,
    /// Kicks sent and interrupts taken, per queue.
    pub kicks_sent: [u64; 2],
    pub wakeups: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("rings", &self.rings)
            .field("event_idx", &self.event_idx)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Guest memory in a tmpfs file, unlinked once mapped.
fn shared_memory(size: usize) -> Result<GuestMemoryMmap<()>, String> {
    use std::sync::atomic::AtomicUsize;
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!(
        "vnu-synthetic.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    file.set_len(size as u64)
        .map_err(|e| format!("sizing guest memory: {e}"))?;
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(0),
        size,
        Some(FileOffset::new(file, 0)),
    )])
    .map_err(|e| format!("mapping guest memory: {e}"))
}

fn vhost_err(what: &str) -> impl Fn(vhost::Error) -> String + '_ {
    move |e| format!("vhost-user {what}: {e}")
}

impl Driver {
    /// Connects to the backend at `socket` and sets the device up in the usual order (features,
    /// memory, rings, then enable), with every RX buffer posted.
    pub fn connect(socket: &Path, config: DriverConfig) -> Result<Driver, String> {
        let size = config.queue_size;
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(format!(
                "queue size {size}: a power of two up to {MAX_QUEUE_SIZE}"
            ));
        }
        let rx_bytes = u64::from(size) * u64::from(config.rx_buffer);
        let pattern = (RX_BUFFERS + rx_bytes).next_multiple_of(4096);
        let mem_size = (pattern + config.pattern_len as u64).next_multiple_of(1 << 20);
        let mem = shared_memory(mem_size as usize)?;

        let stream = UnixStream::connect(socket)
            .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
        let mut frontend = Frontend::from_stream(stream, 2);
        frontend.set_owner().map_err(vhost_err("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(vhost_err("GET_FEATURES"))?;
        let missing = config.features & !offered;
        if missing != 0 {
            return Err(format!(
                "the backend does not offer features {missing:#x} (offers {offered:#x})"
            ));
        }
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let mut features = config.features;
        if offered & protocol_bit != 0 {
            let protocol = frontend
                .get_protocol_features()
                .map_err(vhost_err("GET_PROTOCOL_FEATURES"))?;
            frontend
                .set_protocol_features(protocol & VhostUserProtocolFeatures::REPLY_ACK)
                .map_err(vhost_err("SET_PROTOCOL_FEATURES"))?;
            features |= protocol_bit;
        }
        frontend
            .set_features(features)
            .map_err(vhost_err("SET_FEATURES"))?;
        let region = mem.iter().next().ok_or("no guest memory region")?;
        let info = VhostUserMemoryRegionInfo::from_guest_region(region)
            .map_err(vhost_err("memory region"))?;
        frontend
            .set_mem_table(&[info])
            .map_err(vhost_err("SET_MEM_TABLE"))?;

        let new_fd = || EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"));
        let kicks = [new_fd()?, new_fd()?];
        let calls = [new_fd()?, new_fd()?];
        let errs = [new_fd()?, new_fd()?];
        let rings = [SplitRing::at(RX_RING, size), SplitRing::at(TX_RING, size)];
        for q in [RX, TX] {
            let ring = rings[q];
            let host = |a: u64| {
                mem.get_host_address(GuestAddress(a))
                    .map(|p| p as u64)
                    .map_err(|e| format!("ring address: {e}"))
            };
            frontend
                .set_vring_num(q, size)
                .map_err(vhost_err("SET_VRING_NUM"))?;
            frontend
                .set_vring_addr(
                    q,
                    &VringConfigData {
                        queue_max_size: size,
                        queue_size: size,
                        flags: 0,
                        desc_table_addr: host(ring.desc)?,
                        used_ring_addr: host(ring.used)?,
                        avail_ring_addr: host(ring.avail)?,
                        log_addr: None,
                    },
                )
                .map_err(vhost_err("SET_VRING_ADDR"))?;
            frontend
                .set_vring_base(q, 0)
                .map_err(vhost_err("SET_VRING_BASE"))?;
            frontend
                .set_vring_call(q, &calls[q])
                .map_err(vhost_err("SET_VRING_CALL"))?;
            frontend
                .set_vring_err(q, &errs[q])
                .map_err(vhost_err("SET_VRING_ERR"))?;
            frontend
                .set_vring_kick(q, &kicks[q])
                .map_err(vhost_err("SET_VRING_KICK"))?;
        }
        if features & protocol_bit != 0 {
            for q in [RX, TX] {
                frontend
                    .set_vring_enable(q, true)
                    .map_err(vhost_err("SET_VRING_ENABLE"))?;
            }
        }
        let epoll = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
        for q in [RX, TX] {
            use std::os::fd::AsRawFd;
            epoll
                .ctl(
                    ControlOperation::Add,
                    calls[q].as_raw_fd(),
                    EpollEvent::new(EventSet::IN, q as u64),
                )
                .map_err(|e| format!("epoll: {e}"))?;
        }
        let mut driver = Driver {
            mem,
            _frontend: frontend,
            kicks,
            calls,
            _errs: errs,
            epoll,
            rings,
            event_idx: features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0,
            config,
            pattern,
            kicks_sent: [0; 2],
            wakeups: 0,
        };
        // RX descriptor i is RX buffer i, for good.
        for i in 0..size {
            driver.write_desc(
                RX,
                i,
                driver.rx_buffer_addr(i),
                config.rx_buffer,
                VRING_DESC_F_WRITE as u16,
                0,
            )?;
        }
        for i in 0..size {
            driver.push_avail(RX, i)?;
        }
        driver.publish(RX)?;
        Ok(driver)
    }

    pub fn memory(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    pub fn queue_size(&self) -> u16 {
        self.config.queue_size
    }

    pub fn rx_buffer_len(&self) -> u32 {
        self.config.rx_buffer
    }

    pub fn rx_buffer_addr(&self, id: u16) -> u64 {
        RX_BUFFERS + u64::from(id) * u64::from(self.config.rx_buffer)
    }

    /// Guest address of the payload pattern.
    pub fn pattern_addr(&self) -> u64 {
        self.pattern
    }

    /// Guest address of TX header slot `slot`.
    pub fn tx_header_addr(&self, slot: u16) -> u64 {
        TX_HEADERS + u64::from(slot) * TX_HEADER_SLOT
    }

    /// TX frames in flight at most (two descriptors each).
    pub fn tx_slots(&self) -> u16 {
        self.config.queue_size / 2
    }

    fn err(e: vm_memory::GuestMemoryError) -> String {
        format!("guest memory: {e}")
    }

    fn write_desc(
        &self,
        q: usize,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), String> {
        let entry = self.rings[q].desc + 16 * u64::from(index);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&raw, GuestAddress(entry))
            .map_err(Self::err)
    }

    /// Puts chain `head` in the next avail slot (not yet published).
    fn push_avail(&mut self, q: usize, head: u16) -> Result<(), String> {
        let ring = &mut self.rings[q];
        let slot = u64::from(ring.next_avail % ring.size);
        let addr = ring.avail + 4 + 2 * slot;
        ring.next_avail = ring.next_avail.wrapping_add(1);
        self.mem
            .write_obj(head.to_le(), GuestAddress(addr))
            .map_err(Self::err)
    }

    /// Offers RX buffer `id` to the device again (published by [`Driver::publish`]).
    pub fn repost_rx(&mut self, id: u16) -> Result<(), String> {
        self.push_avail(RX, id)
    }

    /// Queues a TX frame in `slot`: `header_len` bytes from the slot's header area, then
    /// `payload` (guest address, length) if any. Published by [`Driver::publish`].
    pub fn post_tx(
        &mut self,
        slot: u16,
        header_len: u32,
        payload: Option<(u64, u32)>,
    ) -> Result<(), String> {
        let head = 2 * slot;
        let hdr = self.tx_header_addr(slot);
        match payload {
            Some((addr, len)) => {
                self.write_desc(
                    TX,
                    head,
                    hdr,
                    header_len,
                    VRING_DESC_F_NEXT as u16,
                    head + 1,
                )?;
                self.write_desc(TX, head + 1, addr, len, 0, 0)?;
            }
            None => self.write_desc(TX, head, hdr, header_len, 0, 0)?,
        }
        self.push_avail(TX, head)
    }

    /// Makes the queued avail entries visible to the device and kicks it if it wants.
    pub fn publish(&mut self, q: usize) -> Result<(), String> {
        let ring = self.rings[q];
        if ring.next_avail == ring.published {
            return Ok(());
        }
        // Descriptors and ring entries before the index (release), the index before we read
        // the device's suppression state (full fence, as virtio's mb()).
        self.mem
            .store(
                ring.next_avail,
                GuestAddress(ring.avail + 2),
                Ordering::Release,
            )
            .map_err(Self::err)?;
        fence(Ordering::SeqCst);
        let kick = if self.event_idx {
            let event: u16 = self
                .mem
                .load(GuestAddress(ring.avail_event_addr()), Ordering::Acquire)
                .map_err(Self::err)?;
            // vring_need_event(event, new, old)
            ring.next_avail.wrapping_sub(event).wrapping_sub(1)
                < ring.next_avail.wrapping_sub(ring.published)
        } else {
            let flags: u16 = self
                .mem
                .load(GuestAddress(ring.used), Ordering::Acquire)
                .map_err(Self::err)?;
            flags & VRING_USED_F_NO_NOTIFY as u16 == 0
        };
        self.rings[q].published = ring.next_avail;
        if kick {
            self.kicks[q].write(1).map_err(|e| format!("kick: {e}"))?;
            self.kicks_sent[q] += 1;
        }
        Ok(())
    }

    /// The next used element of queue `q`, (descriptor head, bytes written), if any.
    pub fn pop_used(&mut self, q: usize) -> Result<Option<(u16, u32)>, String> {
        let ring = self.rings[q];
        let used_idx: u16 = self
            .mem
            .load(GuestAddress(ring.used + 2), Ordering::Acquire)
            .map_err(Self::err)?;
        if used_idx == ring.next_used {
            return Ok(None);
        }
        let slot = u64::from(ring.next_used % ring.size);
        let elem = ring.used + 4 + 8 * slot;
        let mut raw = [0u8; 8];
        self.mem
            .read_slice(&mut raw, GuestAddress(elem))
            .map_err(Self::err)?;
        let id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if id >= u32::from(ring.size) {
            return Err(format!("queue {q}: used element names descriptor {id}"));
        }
        self.rings[q].next_used = ring.next_used.wrapping_add(1);
        Ok(Some((id as u16, len)))
    }

    /// The used element `i` places after the next one to read, without consuming it (the
    /// caller has checked [`Driver::used_pending`]).
    pub fn peek_used(&self, q: usize, i: u16) -> Result<(u16, u32), String> {
        let ring = self.rings[q];
        let slot = u64::from(ring.next_used.wrapping_add(i) % ring.size);
        let mut raw = [0u8; 8];
        self.mem
            .read_slice(&mut raw, GuestAddress(ring.used + 4 + 8 * slot))
            .map_err(Self::err)?;
        let id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if id >= u32::from(ring.size) {
            return Err(format!("queue {q}: used element names descriptor {id}"));
        }
        Ok((id as u16, len))
    }

    /// Consumes `n` used elements of queue `q` (read with [`Driver::peek_used`]).
    pub fn consume_used(&mut self, q: usize, n: u16) {
        self.rings[q].next_used = self.rings[q].next_used.wrapping_add(n);
    }

    /// Used elements of queue `q` ready to read.
    pub fn used_pending(&self, q: usize) -> Result<u16, String> {
        let ring = self.rings[q];
        let used_idx: u16 = self
            .mem
            .load(GuestAddress(ring.used + 2), Ordering::Acquire)
            .map_err(Self::err)?;
        Ok(used_idx.wrapping_sub(ring.next_used))
    }

    /// Sleeps until the device signals a queue or `timeout` passes. With EVENT_IDX, first asks
    /// for an interrupt at the next used element of both queues, and does not sleep if one
    /// arrived meanwhile.
    pub fn wait(&mut self, timeout: Duration) -> Result<(), String> {
        if self.event_idx {
            for q in [RX, TX] {
                let ring = self.rings[q];
                self.mem
                    .store(
                        ring.next_used,
                        GuestAddress(ring.used_event_addr()),
                        Ordering::Release,
                    )
                    .map_err(Self::err)?;
            }
            fence(Ordering::SeqCst);
            if self.used_pending(RX)? > 0 || self.used_pending(TX)? > 0 {
                return Ok(());
            }
        }
        let mut events = [EpollEvent::default(); 2];
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let n = match self.epoll.wait(ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(format!("epoll: {e}")),
        };
        if n > 0 {
            self.wakeups += 1;
        }
        for ev in &events[..n] {
            let _ = self.calls[ev.data() as usize].read();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ring_layout_follows_the_spec() {
        let r = SplitRing::at(0x1000, 256);
        assert_eq!(r.desc, 0x1000);
        assert_eq!(r.avail, 0x1000 + 16 * 256);
        // avail is 6 + 2 * 256 = 518 bytes: used starts at the next 4-byte boundary.
        assert_eq!(r.used, r.avail + 520);
        assert_eq!(r.used_event_addr(), r.avail + 4 + 512);
        assert_eq!(r.avail_event_addr(), r.used + 4 + 8 * 256);
        let big = SplitRing::at(TX_RING, MAX_QUEUE_SIZE);
        assert!(
            big.avail_event_addr() + 2 <= TX_HEADERS,
            "rings fit their 64 KiB"
        );
        assert!(
            TX_HEADERS + u64::from(MAX_QUEUE_SIZE / 2) * TX_HEADER_SLOT <= RX_BUFFERS,
            "header slots fit"
        );
    }
}
