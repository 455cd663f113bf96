//! The synthetic guest's device side: a vhost-user frontend (the `vhost` crate's), guest memory
//! in shared memory, and the driver half of split virtqueues: one RX and one TX queue per queue
//! pair ([`Device`] sets up the connection, each pair's [`Driver`] can run in its own thread, as
//! a guest's vCPUs each serve a pair).
//!
//! Guest memory is one region backed by a file on tmpfs (`/dev/shm`), unlinked as soon as it is
//! mapped: the same shared memory pages a memfd gives QEMU's `memory-backend-memfd`, without
//! unsafe code here. Each pair has its own part, laid out as (offsets from the part's start):
//!
//! | offset | what |
//! |---|---|
//! | 0 | RX ring (descriptors, avail, used) |
//! | 64 KiB | TX ring |
//! | 128 KiB | TX header slots, 128 bytes each |
//! | 256 KiB | RX buffers, `rx_buffer` bytes each, one per RX descriptor |
//! | after them | with `linear_tx`: a frame buffer per TX slot |
//!
//! After the last pair's part comes the payload pattern that all pairs' TX frames point into.
//!
//! RX descriptor `i` always describes RX buffer `i`: posting a buffer again only writes its index
//! into the avail ring. TX frames use descriptor triples, as Linux's virtio-net sends a TCP
//! segment (the virtio-net header in a descriptor of its own, then the linear part with the
//! frame's headers, then the payload): slot `s` owns descriptors `3s` (the virtio-net header)
//! and `3s + 1` (Ethernet, IPv4 and TCP headers), both from its header slot, and `3s + 2`
//! (payload, pointing straight into the pattern, as a guest's TSO frame points at page
//! fragments). Without checksum offload a Linux guest has no scatter-gather either: it sends
//! the header, then the whole frame in one descriptor ([`DriverConfig::linear_tx`]; the driver
//! copies the payload into the slot's frame buffer as the guest's socket write would). passt
//! requires that shape: the header alone first, and (2025-05) at most two descriptors.
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

use super::wire;

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
    /// Virtio feature bits to ack (the backend must offer them all; `VIRTIO_NET_F_MQ` is added
    /// when `queue_pairs` > 1).
    pub features: u64,
    pub queue_size: u16,
    /// Bytes per RX buffer (one descriptor each).
    pub rx_buffer: u32,
    /// Bytes of payload pattern TX frames may point into.
    pub pattern_len: usize,
    /// Send each frame whole in one descriptor after the virtio-net header's, copied into a
    /// TX frame buffer of this many bytes per slot (a linear skb, as Linux sends without
    /// `VIRTIO_NET_F_CSUM`, hence without scatter-gather); `None`: header, frame headers and
    /// payload in three descriptors, the payload straight from the pattern.
    pub linear_tx: Option<u32>,
    /// Queue pairs to set up: vring `2k` is pair `k`'s RX queue, `2k + 1` its TX queue.
    pub queue_pairs: u16,
}

/// `VIRTIO_NET_F_MQ` (virtio 1.2, 5.1.3): several queue pairs.
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;

/// The driver half of one queue pair, usable from its own thread.
pub struct Driver {
    mem: GuestMemoryMmap<()>,
    /// This pair's index and where its part of guest memory starts.
    pair: u16,
    base: u64,
    /// Guest address of the first TX frame buffer (with `linear_tx`).
    tx_frames: u64,
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
            .field("pair", &self.pair)
            .field("rings", &self.rings)
            .field("event_idx", &self.event_idx)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A connected synthetic guest device: the vhost-user connection and one [`Driver`] per queue
/// pair. The drivers are dropped first (field order), then the connection, which stops the
/// backend's side.
pub struct Device {
    pub pairs: Vec<Driver>,
    /// Kept open for the connection's lifetime; dropping it disconnects.
    _frontend: Frontend,
    /// What the backend offered: virtio features, and protocol features if any.
    pub offered: (u64, Option<u64>),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("pairs", &self.pairs)
            .field("offered", &self.offered)
            .finish_non_exhaustive()
    }
}

/// Guest memory in a tmpfs file (owner-only), unlinked once mapped.
fn shared_memory(size: usize) -> Result<GuestMemoryMmap<()>, String> {
    use std::os::unix::fs::OpenOptionsExt;
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
        .mode(0o600)
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

/// Connects to `socket`, retrying for up to 5 s while it refuses: passt binds its socket some
/// time before it listens.
fn connect_unix(socket: &Path) -> Result<UnixStream, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("connecting to {}: {e}", socket.display())),
        }
    }
}

fn vhost_err(what: &str) -> impl Fn(vhost::Error) -> String + '_ {
    move |e| format!("vhost-user {what}: {e}")
}

impl Device {
    /// Connects to the backend at `socket` and sets the device up in QEMU's order (features,
    /// protocol features, the queue count if several pairs, memory, rings, then enable), with
    /// every RX buffer of every pair posted.
    pub fn connect(socket: &Path, config: DriverConfig) -> Result<Device, String> {
        let size = config.queue_size;
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(format!(
                "queue size {size}: a power of two up to {MAX_QUEUE_SIZE}"
            ));
        }
        let pairs = config.queue_pairs.max(1);
        let rx_bytes = u64::from(size) * u64::from(config.rx_buffer);
        let tx_frames = (RX_BUFFERS + rx_bytes).next_multiple_of(4096);
        let tx_frame_bytes =
            u64::from(size / 3) * u64::from(config.linear_tx.unwrap_or(0)).next_multiple_of(64);
        let pair_bytes = (tx_frames + tx_frame_bytes).next_multiple_of(4096);
        let pattern = pair_bytes * u64::from(pairs);
        let mem_size = (pattern + config.pattern_len as u64).next_multiple_of(1 << 20);
        let mem = shared_memory(mem_size as usize)?;

        let stream = connect_unix(socket)?;
        let mut frontend = Frontend::from_stream(stream, 2 * u64::from(pairs));
        frontend.set_owner().map_err(vhost_err("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(vhost_err("GET_FEATURES"))?;
        let mut features = config.features;
        if pairs > 1 {
            features |= VIRTIO_NET_F_MQ;
        }
        let missing = features & !offered;
        if missing != 0 {
            return Err(format!(
                "the backend does not offer features {missing:#x} (offers {offered:#x})"
            ));
        }
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let mut offered_protocol = None;
        if offered & protocol_bit != 0 {
            let protocol = frontend
                .get_protocol_features()
                .map_err(vhost_err("GET_PROTOCOL_FEATURES"))?;
            offered_protocol = Some(protocol.bits());
            let mut wanted = VhostUserProtocolFeatures::REPLY_ACK;
            if pairs > 1 {
                wanted |= VhostUserProtocolFeatures::MQ;
            }
            if !protocol.contains(wanted - VhostUserProtocolFeatures::REPLY_ACK) {
                return Err(format!(
                    "the backend does not offer protocol feature MQ (offers {:#x})",
                    protocol.bits()
                ));
            }
            frontend
                .set_protocol_features(protocol & wanted)
                .map_err(vhost_err("SET_PROTOCOL_FEATURES"))?;
            features |= protocol_bit;
            if pairs > 1 {
                let queues = frontend
                    .get_queue_num()
                    .map_err(vhost_err("GET_QUEUE_NUM"))?;
                if queues < 2 * u64::from(pairs) {
                    return Err(format!(
                        "the backend has {queues} queues, {pairs} pairs need {}",
                        2 * pairs
                    ));
                }
            }
        } else if pairs > 1 {
            return Err("several queue pairs need protocol features, not offered".into());
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

        let event_idx = features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut drivers = Vec::with_capacity(usize::from(pairs));
        for pair in 0..pairs {
            let base = pair_bytes * u64::from(pair);
            let new_fd = || EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"));
            let kicks = [new_fd()?, new_fd()?];
            let calls = [new_fd()?, new_fd()?];
            let errs = [new_fd()?, new_fd()?];
            let rings = [
                SplitRing::at(base + RX_RING, size),
                SplitRing::at(base + TX_RING, size),
            ];
            for q in [RX, TX] {
                let index = 2 * usize::from(pair) + q;
                let ring = rings[q];
                let host = |a: u64| {
                    mem.get_host_address(GuestAddress(a))
                        .map(|p| p as u64)
                        .map_err(|e| format!("ring address: {e}"))
                };
                frontend
                    .set_vring_num(index, size)
                    .map_err(vhost_err("SET_VRING_NUM"))?;
                frontend
                    .set_vring_addr(
                        index,
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
                    .set_vring_base(index, 0)
                    .map_err(vhost_err("SET_VRING_BASE"))?;
                frontend
                    .set_vring_call(index, &calls[q])
                    .map_err(vhost_err("SET_VRING_CALL"))?;
                frontend
                    .set_vring_err(index, &errs[q])
                    .map_err(vhost_err("SET_VRING_ERR"))?;
                frontend
                    .set_vring_kick(index, &kicks[q])
                    .map_err(vhost_err("SET_VRING_KICK"))?;
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
                mem: mem.clone(),
                pair,
                base,
                tx_frames: base + tx_frames,
                kicks,
                calls,
                _errs: errs,
                epoll,
                rings,
                event_idx,
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
            drivers.push(driver);
        }
        if features & protocol_bit != 0 {
            for index in 0..2 * usize::from(pairs) {
                frontend
                    .set_vring_enable(index, true)
                    .map_err(vhost_err("SET_VRING_ENABLE"))?;
            }
        }
        for driver in &mut drivers {
            driver.publish(RX)?;
        }
        Ok(Device {
            pairs: drivers,
            _frontend: frontend,
            offered: (offered, offered_protocol),
        })
    }

    /// Guest memory (one region shared by all pairs).
    pub fn memory(&self) -> Option<&GuestMemoryMmap<()>> {
        self.pairs.first().map(Driver::memory)
    }
}

impl Driver {
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
        self.base + RX_BUFFERS + u64::from(id) * u64::from(self.config.rx_buffer)
    }

    /// This pair's index (its vrings are `2 * pair` and `2 * pair + 1`).
    pub fn pair(&self) -> u16 {
        self.pair
    }

    /// Guest address of the payload pattern.
    pub fn pattern_addr(&self) -> u64 {
        self.pattern
    }

    /// Guest address and size of TX frame buffer `slot` (`None` without `linear_tx`).
    pub fn tx_frame_buffer(&self, slot: u16) -> Option<(u64, u32)> {
        let len = self.config.linear_tx?;
        Some((
            self.tx_frames + u64::from(slot) * u64::from(len).next_multiple_of(64),
            len,
        ))
    }

    /// Queues a whole frame of `frame_len` bytes, already in TX frame buffer `slot`, after the
    /// virtio-net header in the slot's header area. Published by [`Driver::publish`].
    pub fn post_tx_linear(&mut self, slot: u16, frame_len: u32) -> Result<(), String> {
        let head = 3 * slot;
        let (frame, len) = self.tx_frame_buffer(slot).ok_or("no TX frame buffers")?;
        if frame_len > len {
            return Err(format!("a {frame_len}-byte frame in a {len}-byte buffer"));
        }
        let hdr = self.tx_header_addr(slot);
        let vnet = wire::VNET_LEN as u32;
        self.write_desc(TX, head, hdr, vnet, VRING_DESC_F_NEXT as u16, head + 1)?;
        self.write_desc(TX, head + 1, frame, frame_len, 0, 0)?;
        self.push_avail(TX, head)
    }

    /// Guest address of TX header slot `slot`.
    pub fn tx_header_addr(&self, slot: u16) -> u64 {
        self.base + TX_HEADERS + u64::from(slot) * TX_HEADER_SLOT
    }

    /// TX frames in flight at most (three descriptors each).
    pub fn tx_slots(&self) -> u16 {
        self.config.queue_size / 3
    }

    /// The TX slot whose chain starts at descriptor `head`.
    pub fn tx_slot_of(head: u16) -> u16 {
        head / 3
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

    /// Queues a TX frame in `slot`: `header_len` bytes from the slot's header area (the
    /// virtio-net header, then the frame's headers, in two descriptors), then `payload` (guest
    /// address, length) if any. Published by [`Driver::publish`].
    pub fn post_tx(
        &mut self,
        slot: u16,
        header_len: u32,
        payload: Option<(u64, u32)>,
    ) -> Result<(), String> {
        let head = 3 * slot;
        let hdr = self.tx_header_addr(slot);
        let vnet = wire::VNET_LEN as u32;
        let next = VRING_DESC_F_NEXT as u16;
        self.write_desc(TX, head, hdr, vnet, next, head + 1)?;
        match payload {
            Some((addr, len)) => {
                self.write_desc(
                    TX,
                    head + 1,
                    hdr + u64::from(vnet),
                    header_len - vnet,
                    next,
                    head + 2,
                )?;
                self.write_desc(TX, head + 2, addr, len, 0, 0)?;
            }
            None => {
                self.write_desc(TX, head + 1, hdr + u64::from(vnet), header_len - vnet, 0, 0)?
            }
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
            TX_HEADERS + u64::from(MAX_QUEUE_SIZE / 3) * TX_HEADER_SLOT <= RX_BUFFERS,
            "header slots fit"
        );
    }
}
