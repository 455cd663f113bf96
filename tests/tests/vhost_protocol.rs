//! vhost-user protocol tests: the `vhost` crate's frontend drives the real `vhost-net-user`
//! binary over its socket, with guest memory in a shared file and split virtqueues laid out
//! by `virtio_queue::mock`. No QEMU is involved; these pin down what QEMU relies on.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::bindings::virtio_config::{VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_UFO,
    VIRTIO_NET_F_HASH_REPORT, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_RSS,
    VIRTIO_NET_F_STATUS,
};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const MEM_SIZE: usize = 32 << 20;
const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Guest-physical layout: the two rings, then RX buffers, then TX frames.
const RX_RING: u64 = 0x0;
const TX_RING: u64 = 0x10_0000;
const RX_BUFFERS: u64 = 0x20_0000;
const TX_BUFFERS: u64 = 0x100_0000;
const RX_BUFFER_LEN: u32 = 1536;
const VNET_HDR: usize = 12;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

use vnu_tests::{Backend, TempDir};

fn backend(args: &[&str]) -> Backend {
    Backend::start(args).expect("start vhost-net-user")
}

fn temp_dir() -> TempDir {
    TempDir::new("proto").expect("temporary directory")
}

/// Guest-physical addresses of one split virtqueue.
#[derive(Clone, Copy)]
struct RingLayout {
    desc: u64,
    avail: u64,
    used: u64,
}

impl RingLayout {
    /// The three areas one after the other from `base`, as the virtio spec lays them out
    /// (16-byte descriptors; avail: flags, idx, a 2-byte entry each, `used_event`; used ring
    /// aligned to 4). Not virtio-queue's `MockSplitQueue`: it starts the used ring 4 + `size`
    /// bytes after the avail ring, inside it, so a guest posting at slot 128 or beyond of a
    /// 256-entry ring overwrote the used ring.
    fn at(base: u64) -> RingLayout {
        let size = u64::from(QUEUE_SIZE);
        let avail = base + 16 * size;
        let used = (avail + 4 + 2 * size + 2).next_multiple_of(4);
        RingLayout {
            desc: base,
            avail,
            used,
        }
    }
}

/// A minimal guest driver: memory, two split queues, kick eventfds. The rings are read and
/// written directly in guest memory, as a driver would.
struct Guest {
    mem: GuestMemoryMmap<()>,
    /// Kept so the connection stays open for the guest's lifetime.
    _frontend: Frontend,
    /// The raw control socket, for messages the frontend API refuses to send out of order.
    raw: UnixStream,
    kicks: [EventFd; 2],
    calls: [EventFd; 2],
    layout: [RingLayout; 2],
    next_desc: [u16; 2],
    next_avail: [u16; 2],
    next_used: [u16; 2],
    tx_cursor: u64,
}

fn shared_memory(dir: &Path) -> GuestMemoryMmap<()> {
    let path = dir.join("guest-ram");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(MEM_SIZE as u64).unwrap();
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

fn enable_message(index: u32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&18u32.to_le_bytes()); // SET_VRING_ENABLE
    m.extend_from_slice(&1u32.to_le_bytes()); // version 1, no reply wanted
    m.extend_from_slice(&8u32.to_le_bytes());
    m.extend_from_slice(&index.to_le_bytes());
    m.extend_from_slice(&1u32.to_le_bytes());
    m
}

impl Guest {
    /// Connects and negotiates in QEMU 7.2's order: the rings are enabled *before*
    /// SET_FEATURES, and never again afterwards.
    fn connect_qemu72(backend: &Backend, features: u64, dir: &Path) -> Guest {
        let stream = UnixStream::connect(backend.socket()).unwrap();
        let raw = stream.try_clone().unwrap();
        let mut frontend = Frontend::from_stream(stream, 2);
        frontend.set_hdr_flags(VhostUserHeaderFlag::empty());

        let offered = frontend.get_features().unwrap();
        assert_eq!(offered & features, features, "backend lacks {features:#x}");
        let protocol = frontend.get_protocol_features().unwrap();
        frontend
            .set_protocol_features(protocol & VhostUserProtocolFeatures::REPLY_ACK)
            .unwrap();
        frontend.set_owner().unwrap();
        frontend.get_features().unwrap();
        let kicks = [EventFd::new(0).unwrap(), EventFd::new(0).unwrap()];
        // Non-blocking, so that a test can ask whether an interrupt came.
        let calls = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let errs = [EventFd::new(0).unwrap(), EventFd::new(0).unwrap()];
        for q in [RX, TX] {
            frontend.set_vring_call(q, &calls[q]).unwrap();
            frontend.set_vring_err(q, &errs[q]).unwrap();
        }
        // The early enables, exactly where QEMU 7.2 sends them.
        (&raw).write_all(&enable_message(0)).unwrap();
        (&raw).write_all(&enable_message(1)).unwrap();

        frontend
            .set_features(features | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits())
            .unwrap();
        let mem = shared_memory(dir);
        let region = mem.iter().next().unwrap();
        frontend
            .set_mem_table(&[VhostUserMemoryRegionInfo::from_guest_region(region).unwrap()])
            .unwrap();
        // Indexed by queue: RX is 0, TX is 1.
        let layout = [RingLayout::at(RX_RING), RingLayout::at(TX_RING)];
        for q in [RX, TX] {
            let ring = layout[q];
            let host = |a: u64| mem.get_host_address(GuestAddress(a)).unwrap() as u64;
            frontend.set_vring_num(q, QUEUE_SIZE).unwrap();
            frontend
                .set_vring_addr(
                    q,
                    &VringConfigData {
                        queue_max_size: QUEUE_SIZE,
                        queue_size: QUEUE_SIZE,
                        flags: 0,
                        desc_table_addr: host(ring.desc),
                        used_ring_addr: host(ring.used),
                        avail_ring_addr: host(ring.avail),
                        log_addr: None,
                    },
                )
                .unwrap();
            frontend.set_vring_base(q, 0).unwrap();
            frontend.set_vring_kick(q, &kicks[q]).unwrap();
            frontend.set_vring_call(q, &calls[q]).unwrap();
        }
        Guest {
            mem,
            _frontend: frontend,
            raw,
            kicks,
            calls,
            layout,
            next_desc: [0, 0],
            next_avail: [0, 0],
            next_used: [0, 0],
            tx_cursor: TX_BUFFERS,
        }
    }

    fn write_u16(&self, addr: u64, value: u16) {
        self.mem
            .write_obj(value.to_le(), GuestAddress(addr))
            .unwrap();
    }

    fn read_u32(&self, addr: u64) -> u32 {
        u32::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }

    /// Publishes one chain made of `descs` (addr, len, flags) on queue `q` (no kick).
    fn post_chain(&mut self, q: usize, descs: &[(u64, u32, u16)]) {
        let ring = self.layout[q];
        let head = self.next_desc[q];
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = (head + i as u16) % QUEUE_SIZE;
            let next = (index + 1) % QUEUE_SIZE;
            let flags = if i + 1 == descs.len() {
                flags
            } else {
                flags | VRING_DESC_F_NEXT as u16
            };
            let entry = ring.desc + 16 * u64::from(index);
            self.mem
                .write_obj(addr.to_le(), GuestAddress(entry))
                .unwrap();
            self.mem
                .write_obj(len.to_le(), GuestAddress(entry + 8))
                .unwrap();
            self.write_u16(entry + 12, flags);
            self.write_u16(entry + 14, next);
        }
        self.next_desc[q] = (head + descs.len() as u16) % QUEUE_SIZE;
        let slot = u64::from(self.next_avail[q] % QUEUE_SIZE);
        self.write_u16(ring.avail + 4 + 2 * slot, head);
        self.next_avail[q] = self.next_avail[q].wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.write_u16(ring.avail + 2, self.next_avail[q]);
    }

    /// Publishes the chain at `head` once more on queue `q`, as a guest may (no kick): its
    /// descriptors are shared by both avail entries.
    fn post_head_again(&mut self, q: usize, head: u16) {
        let ring = self.layout[q];
        let slot = u64::from(self.next_avail[q] % QUEUE_SIZE);
        self.write_u16(ring.avail + 4 + 2 * slot, head);
        self.next_avail[q] = self.next_avail[q].wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.write_u16(ring.avail + 2, self.next_avail[q]);
    }

    fn kick(&self, q: usize) {
        self.kicks[q].write(1).unwrap();
    }

    /// Whether the backend signalled queue `q`'s call eventfd since the last look.
    fn interrupted(&self, q: usize) -> bool {
        self.calls[q].read().is_ok()
    }

    /// Sets queue `q`'s `used_event` (EVENT_IDX), the 2 bytes after its avail entries.
    fn set_used_event(&self, q: usize, event: u16) {
        self.write_u16(self.layout[q].avail + 4 + 2 * u64::from(QUEUE_SIZE), event);
    }

    /// Posts `count` RX buffers of `RX_BUFFER_LEN` bytes each, one per descriptor slot.
    fn post_rx_buffers(&mut self, count: u16) {
        for _ in 0..count {
            let slot = u64::from(self.next_desc[RX]);
            let addr = RX_BUFFERS + slot * u64::from(RX_BUFFER_LEN);
            self.post_chain(RX, &[(addr, RX_BUFFER_LEN, VRING_DESC_F_WRITE as u16)]);
        }
        self.kick(RX);
    }

    /// Sends `frame` behind a zeroed virtio-net header, split into descriptors of at most
    /// `piece` bytes.
    fn send_frame(&mut self, frame: &[u8], piece: usize) {
        self.post_frame(frame, piece);
        self.kick(TX);
    }

    /// Posts `frame` as [`Guest::send_frame`] does, but with no kick: a guest whose kick was
    /// lost, as under TCG when its store of the avail index comes late.
    fn post_frame(&mut self, frame: &[u8], piece: usize) {
        let mut bytes = vec![0u8; VNET_HDR];
        bytes.extend_from_slice(frame);
        let mut descs = Vec::new();
        for chunk in bytes.chunks(piece) {
            self.mem
                .write_slice(chunk, GuestAddress(self.tx_cursor))
                .unwrap();
            descs.push((self.tx_cursor, chunk.len() as u32, 0));
            self.tx_cursor += chunk.len() as u64;
        }
        self.post_chain(TX, &descs);
    }

    /// Posts `frame` and kicks only if the backend's `avail_event` asks for it, as a guest
    /// with EVENT_IDX does. Returns whether it kicked.
    fn send_frame_event_idx(&mut self, frame: &[u8], piece: usize) -> bool {
        let old = self.next_avail[TX];
        self.post_frame(frame, piece);
        let new = self.next_avail[TX];
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let event_at = self.layout[TX].used + 4 + 8 * u64::from(QUEUE_SIZE);
        let event = u16::from_le(self.mem.read_obj(GuestAddress(event_at)).unwrap());
        let kick = new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old);
        if kick {
            self.kick(TX);
        }
        kick
    }

    fn used_idx(&self, q: usize) -> u16 {
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(self.layout[q].used + 2))
            .unwrap();
        u16::from_le(idx)
    }

    /// Waits until queue `q` has used `count` more chains; returns (id, len) of each.
    fn wait_used(&mut self, q: usize, count: u16) -> Vec<(u32, u32)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx(q).wrapping_sub(self.next_used[q]) < count {
            assert!(
                Instant::now() < deadline,
                "queue {q}: {} of {count} chains used",
                self.used_idx(q).wrapping_sub(self.next_used[q])
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let used = self.layout[q].used;
        let out = (0..count)
            .map(|i| {
                let slot = u64::from(self.next_used[q].wrapping_add(i) % QUEUE_SIZE);
                let elem = used + 4 + 8 * slot;
                (self.read_u32(elem), self.read_u32(elem + 4))
            })
            .collect();
        self.next_used[q] = self.next_used[q].wrapping_add(count);
        out
    }

    /// Waits for one frame on RX, checks that it is an ARP reply, and returns its virtio-net
    /// header and frame.
    fn receive_arp_reply(&mut self) -> (Vec<u8>, Vec<u8>) {
        let used = self.wait_used(RX, 1);
        let (hdr, frame) = self.read_rx_frame(&used);
        assert_eq!(&frame[20..22], &[0, 2], "ARP reply opcode");
        (hdr, frame)
    }

    /// Reads one received frame spread over `used` RX chains (single-descriptor chains).
    fn read_rx_frame(&self, used: &[(u32, u32)]) -> (Vec<u8>, Vec<u8>) {
        let mut bytes = Vec::new();
        for &(id, len) in used {
            let addr = RX_BUFFERS + u64::from(id) * u64::from(RX_BUFFER_LEN);
            let mut buf = vec![0u8; len as usize];
            self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
            bytes.extend_from_slice(&buf);
        }
        let frame = bytes.split_off(VNET_HDR);
        (bytes, frame)
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn arp_request_for_gateway() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[10, 0, 2, 15]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 2, 2]);
    f
}

fn echo_request_to_gateway(payload_len: usize) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend((0..payload_len).map(|i| (i % 251) as u8));
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_to_gateway(1, 1, &icmp)
}

/// A UDP datagram from the guest's port 5000 to the gateway's `port` (no UDP checksum, which
/// IPv4 allows).
fn udp_to_gateway(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&5000u16.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv4_to_gateway(17, 2, &udp)
}

/// A frame from the guest (10.0.2.15) to the gateway (10.0.2.2) carrying `l4` of `protocol`,
/// IP identification `ident`, with a correct header checksum.
fn ipv4_to_gateway(protocol: u8, ident: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, ident, 0, 0, 64, protocol, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&GATEWAY_MAC);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends with the last ')': utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after the name.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The scheduler's view of each thread of process `pid`: its state letter and how often it
/// was switched out.
fn thread_activity(pid: u32) -> Vec<(String, char, u64)> {
    let mut threads = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let state = field("State:").chars().next().unwrap_or('?');
        let switches = ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"]
            .iter()
            .map(|name| field(name).parse::<u64>().unwrap_or(0))
            .sum();
        threads.push((
            task.file_name().to_string_lossy().into_owned(),
            state,
            switches,
        ));
    }
    threads.sort();
    threads
}

/// Waits until the backend has done all it does without a new event: every one of its threads
/// asleep, at two readings 20 ms apart with no thread run in between (a thread that ran would
/// have been switched out again). What a test then sees not to have happened, the backend
/// had its chance to do, however slow the machine.
fn wait_idle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = Vec::new();
    loop {
        let now = thread_activity(pid);
        if !now.is_empty() && now.iter().all(|t| t.1 == 'S') && now == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the backend never went idle: {now:?}"
        );
        before = now;
        std::thread::sleep(Duration::from_millis(20));
    }
}

const BASE_FEATURES: u64 = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF;

/// What the backend offers over the protocol is what the crate says the device implements
/// (`device::offered_features`), and nothing a virtio-net device can only honour with parts
/// this one lacks: a control queue (QEMU's own), UFO and ECN, a config space (MTU, MAC, link
/// status), RSS and hash reports, the packed ring; and, limited to one queue pair, no
/// multiqueue.
#[test]
fn offers_the_implemented_features_and_none_it_lacks() {
    let backend = backend(&["--max-queue-pairs", "1"]);
    let stream = UnixStream::connect(backend.socket()).unwrap();
    let mut frontend = Frontend::from_stream(stream, 2);
    let features = frontend.get_features().unwrap();
    assert_eq!(
        features,
        vhost_net_user::device::offered_features(1),
        "offered {features:#x}"
    );
    for (name, bit) in [
        ("CTRL_VQ", VIRTIO_NET_F_CTRL_VQ),
        ("CTRL_RX", VIRTIO_NET_F_CTRL_RX),
        ("CTRL_VLAN", VIRTIO_NET_F_CTRL_VLAN),
        ("GUEST_ANNOUNCE", VIRTIO_NET_F_GUEST_ANNOUNCE),
        ("MQ", VIRTIO_NET_F_MQ),
        ("GUEST_UFO", VIRTIO_NET_F_GUEST_UFO),
        ("HOST_UFO", VIRTIO_NET_F_HOST_UFO),
        ("GUEST_ECN", VIRTIO_NET_F_GUEST_ECN),
        ("HOST_ECN", VIRTIO_NET_F_HOST_ECN),
        ("MTU", VIRTIO_NET_F_MTU),
        ("MAC", VIRTIO_NET_F_MAC),
        ("STATUS", VIRTIO_NET_F_STATUS),
        ("RSS", VIRTIO_NET_F_RSS),
        ("HASH_REPORT", VIRTIO_NET_F_HASH_REPORT),
        ("RING_PACKED", VIRTIO_F_RING_PACKED),
    ] {
        assert_eq!(features & 1 << bit, 0, "{name} offered: {features:#x}");
    }
    let protocol = frontend.get_protocol_features().unwrap();
    assert!(protocol.contains(VhostUserProtocolFeatures::REPLY_ACK));
    for absent in [
        VhostUserProtocolFeatures::CONFIG,
        VhostUserProtocolFeatures::MTU,
        VhostUserProtocolFeatures::RARP,
    ] {
        assert!(!protocol.contains(absent), "{absent:?} advertised");
    }
}

/// By default the device offers multiqueue (the virtio feature and the vhost-user protocol
/// feature that lets QEMU ask how many pairs).
#[test]
fn offers_multiqueue_unless_limited_to_one_pair() {
    let backend = backend(&[]);
    let stream = UnixStream::connect(backend.socket()).unwrap();
    let mut frontend = Frontend::from_stream(stream, 2);
    let features = frontend.get_features().unwrap();
    assert_ne!(features & 1 << VIRTIO_NET_F_MQ, 0, "offered {features:#x}");
    let protocol = frontend.get_protocol_features().unwrap();
    assert!(protocol.contains(VhostUserProtocolFeatures::MQ));
}

/// Every feature offered is one the backend honours: acked on its own (with VERSION_1) and
/// all together, the link comes up and answers.
#[test]
fn the_link_works_with_each_offered_feature_acked() {
    let offered = {
        let backend = backend(&[]);
        let stream = UnixStream::connect(backend.socket()).unwrap();
        Frontend::from_stream(stream, 2).get_features().unwrap()
            & !VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    };
    let base = 1 << VIRTIO_F_VERSION_1;
    let each = (0..64).map(|bit| 1u64 << bit).filter(|f| offered & f != 0);
    for features in each.map(|f| base | f).chain([offered]) {
        let backend = backend(&[]);
        let dir = temp_dir();
        let mut guest = Guest::connect_qemu72(&backend, features, dir.path());
        guest.post_rx_buffers(4);
        guest.send_frame(&arp_request_for_gateway(), 4096);
        assert_eq!(guest.wait_used(TX, 1)[0].1, 0, "features {features:#x}");
        let (_, frame) = guest.receive_arp_reply();
        assert_eq!(&frame[0..6], &GUEST_MAC, "features {features:#x}");
        drop(guest.raw);
    }
}

#[test]
fn qemu72_early_enable_gives_a_working_link() {
    let backend = backend(&[]);
    let dir = temp_dir();
    let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    guest.post_rx_buffers(8);
    guest.send_frame(&arp_request_for_gateway(), 4096);
    assert_eq!(guest.wait_used(TX, 1)[0].1, 0);
    let (hdr, frame) = guest.receive_arp_reply();
    assert_eq!(&hdr[10..12], &1u16.to_le_bytes(), "num_buffers");
    assert_eq!(frame.len(), 60, "ARP reply padded to 60 bytes");
    assert_eq!(&frame[0..6], &GUEST_MAC);
    assert_eq!(&frame[6..12], &GATEWAY_MAC);
    drop(guest.raw);
}

/// A TX chain the guest posted without a kick reaching us is served after the next batch of
/// any kind (here the guest's RX post), not left until a kick that never comes.
#[test]
fn a_tx_chain_posted_without_a_kick_is_served_after_the_next_batch() {
    let backend = backend(&[]);
    let dir = temp_dir();
    let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    guest.post_rx_buffers(4);
    guest.send_frame(&arp_request_for_gateway(), 4096);
    guest.wait_used(TX, 1);
    guest.wait_used(RX, 1);

    guest.post_frame(&arp_request_for_gateway(), 4096);
    wait_idle(backend.pid());
    assert_eq!(guest.used_idx(TX), 1, "served without any event");
    guest.post_rx_buffers(1);
    assert_eq!(guest.wait_used(TX, 1)[0].1, 0);
    guest.receive_arp_reply();
    drop(guest.raw);
}

/// With EVENT_IDX, bulk frames (a TSO guest's) switch kicks off and the backend polls the ring
/// instead: a guest that kicks only when `avail_event` asks still has every frame served,
/// whatever the pace, and the link answers afterwards.
#[test]
fn bulk_frames_are_all_served_when_kicks_are_moderated() {
    const FRAMES: usize = 40;
    let backend = backend(&[]);
    let dir = temp_dir();
    let features = BASE_FEATURES | 1 << VIRTIO_RING_F_EVENT_IDX;
    let mut guest = Guest::connect_qemu72(&backend, features, dir.path());
    guest.post_rx_buffers(8);
    // 20000 bytes of an ethertype nobody answers: bulk-sized, and dropped by the engine.
    let mut bulk = vec![0u8; 20_000];
    bulk[0..6].copy_from_slice(&GATEWAY_MAC);
    bulk[6..12].copy_from_slice(&GUEST_MAC);
    bulk[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut kicks = 0;
    for k in 0..FRAMES {
        kicks += usize::from(guest.send_frame_event_idx(&bulk, 4096));
        // Back to back, then slower than the backend's polling period, then in between.
        std::thread::sleep(Duration::from_micros([0, 2000, 150][k % 3]));
    }
    let used = guest.wait_used(TX, FRAMES as u16);
    assert!(used.iter().all(|&(_, len)| len == 0));
    eprintln!("{FRAMES} bulk frames served after {kicks} kicks");
    // Kicked or not (the backend may still be polling), a small frame is answered.
    guest.send_frame_event_idx(&arp_request_for_gateway(), 4096);
    guest.receive_arp_reply();
    drop(guest.raw);
}

/// With EVENT_IDX, RX interrupts follow the guest's `used_event`: none while the used index
/// has not passed it, one as it does.
#[test]
fn rx_interrupts_wait_for_the_guests_used_event() {
    let backend = backend(&[]);
    let dir = temp_dir();
    let features = BASE_FEATURES | 1 << VIRTIO_RING_F_EVENT_IDX;
    let mut guest = Guest::connect_qemu72(&backend, features, dir.path());
    // Interrupt when the used index passes 2: at the third reply.
    guest.set_used_event(RX, 2);
    guest.post_rx_buffers(4);
    for reply in 1..=3 {
        guest.send_frame(&arp_request_for_gateway(), 4096);
        guest.receive_arp_reply();
        // Room for a late interrupt, which the backend adds when a guest looks stuck.
        wait_idle(backend.pid());
        assert_eq!(guest.interrupted(RX), reply == 3, "after reply {reply}");
    }
}

/// 600 frames each way through 256-entry rings: chains are taken across the end of the avail
/// ring and returned across the end of the used ring, in order and intact.
#[test]
fn both_rings_wrap_and_every_frame_is_answered_in_order() {
    const ROUNDS: usize = 6;
    const PER_ROUND: u16 = 100;
    let backend = backend(&[]);
    let dir = temp_dir();
    let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    for round in 0..ROUNDS {
        guest.post_rx_buffers(PER_ROUND);
        for _ in 0..PER_ROUND {
            guest.post_frame(&arp_request_for_gateway(), 4096);
        }
        guest.kick(TX);
        let sent = guest.wait_used(TX, PER_ROUND);
        let replies = guest.wait_used(RX, PER_ROUND);
        for i in 0..usize::from(PER_ROUND) {
            let head = ((round * usize::from(PER_ROUND) + i) % usize::from(QUEUE_SIZE)) as u32;
            assert_eq!(sent[i], (head, 0), "round {round}, frame {i}");
            assert_eq!(replies[i].0, head, "round {round}, reply {i}");
            let (_, frame) = guest.read_rx_frame(&replies[i..=i]);
            assert_eq!(
                &frame[20..22],
                &[0, 2],
                "round {round}, reply {i}: ARP reply"
            );
        }
    }
}

#[test]
fn jumbo_frame_spans_mergeable_buffers_and_waits_for_enough() {
    let backend = backend(&[]);
    let dir = temp_dir();
    let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    // Too few buffers for the 9014-byte answer (12 + 9014 bytes need 6 of 1536): nothing
    // may be used or half-written.
    guest.post_rx_buffers(3);
    let request = echo_request_to_gateway(9000 - 28);
    assert_eq!(request.len(), 9014);
    guest.send_frame(&request, 1000);
    assert_eq!(guest.wait_used(TX, 1)[0].1, 0);
    wait_idle(backend.pid());
    assert_eq!(
        guest.used_idx(RX),
        0,
        "frame delivered into too few buffers"
    );

    // More buffers and a kick: the whole frame arrives over six chains.
    guest.post_rx_buffers(5);
    let used = guest.wait_used(RX, 6);
    let (hdr, frame) = guest.read_rx_frame(&used);
    assert_eq!(&hdr[10..12], &6u16.to_le_bytes(), "num_buffers");
    assert_eq!(frame.len(), 9014);
    assert_eq!(&frame[0..6], &GUEST_MAC);
    assert_eq!(frame[34], 0, "echo reply type");
    assert_eq!(&frame[42..], &request[42..], "payload echoed");
    assert_eq!(checksum(&frame[14..34]), 0, "IPv4 header checksum");
    assert_eq!(checksum(&frame[34..]), 0, "ICMP checksum");
    let used_lens: Vec<u32> = used.iter().map(|u| u.1).collect();
    assert_eq!(
        used_lens,
        vec![1536, 1536, 1536, 1536, 1536, 12 + 9014 - 5 * 1536]
    );
}

/// Issue 19, defect 2: RX buffers of one-byte descriptors two bytes apart (one chain of 256,
/// posted 8 times) made a 1400-byte UDP answer need more iovecs than `recvmsg` takes; the
/// backend retried it forever, at 100% of a core, and never served the TX ring again. The
/// answer now arrives, the next TX frame is served, and the backend goes idle.
#[test]
fn rx_buffers_of_one_byte_pieces_neither_stall_tx_nor_spin() {
    let backend = backend(&[]);
    let dir = temp_dir();
    let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = server.local_addr().unwrap().port();

    let pieces: Vec<(u64, u32, u16)> = (0..u64::from(QUEUE_SIZE))
        .map(|i| (RX_BUFFERS + 2 * i, 1, VRING_DESC_F_WRITE as u16))
        .collect();
    guest.post_chain(RX, &pieces);
    for _ in 1..8 {
        guest.post_head_again(RX, 0);
    }
    guest.kick(RX);

    guest.send_frame(&udp_to_gateway(port, b"hello"), 4096);
    let mut buf = [0u8; 64];
    let (n, peer) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    server.send_to(&[0x5a; 1400], peer).unwrap();
    // The answer: 12 + 42 + 1400 bytes over six chains of 256.
    let used = guest.wait_used(RX, 6);
    let total: u32 = used.iter().map(|u| u.1).sum();
    assert_eq!(total, 12 + 42 + 1400);

    // The TX ring is still served: an ARP request after the answer is answered.
    guest.send_frame(&arp_request_for_gateway(), 4096);
    let tx = guest.wait_used(TX, 2);
    assert_eq!(tx.len(), 2);
    let arp = guest.wait_used(RX, 1);
    assert!(arp[0].1 >= 12 + 42, "the ARP reply");

    // And the backend is idle, not spinning: well under half a core over a second.
    let before = cpu_ticks(backend.pid());
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu_ticks(backend.pid()) - before;
    assert!(ticks < 50, "{ticks} ticks of CPU in an idle second");
}

#[test]
fn malformed_chains_are_returned_and_the_backend_carries_on() {
    let mut backend = backend(&[]);
    let dir = temp_dir();
    let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    guest.post_rx_buffers(8);

    // Write-only descriptor in a TX chain.
    guest.post_chain(TX, &[(TX_BUFFERS, 64, VRING_DESC_F_WRITE as u16)]);
    // Outside guest memory.
    guest.post_chain(TX, &[(MEM_SIZE as u64 + 4096, 64, 0)]);
    // Shorter than the virtio-net header.
    guest.post_chain(TX, &[(TX_BUFFERS, 4, 0)]);
    // Huge length wrapping past the end of memory.
    guest.post_chain(TX, &[(TX_BUFFERS, u32::MAX, 0)]);
    guest.kick(TX);
    let used = guest.wait_used(TX, 4);
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");

    // A read-only RX buffer is refused too, and the good ones behind it still serve.
    guest.post_chain(RX, &[(RX_BUFFERS + 0x10_0000, 1536, 0)]);
    guest.send_frame(&arp_request_for_gateway(), 16);
    guest.wait_used(TX, 1);
    assert!(backend.is_running());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = guest.used_idx(RX);
        if used >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ARP reply after malformed chains"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let used = guest.wait_used(RX, 1);
    let (_, frame) = guest.read_rx_frame(&used);
    assert_eq!(&frame[20..22], &[0, 2], "ARP reply after malformed chains");
    assert!(backend.is_running());
}

#[test]
fn next_frontend_is_served_after_a_disconnect() {
    let mut backend = backend(&[]);
    for round in 0..3 {
        let dir = temp_dir();
        let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
        guest.post_rx_buffers(4);
        guest.send_frame(&arp_request_for_gateway(), 4096);
        let used = guest.wait_used(RX, 1);
        let (_, frame) = guest.read_rx_frame(&used);
        assert_eq!(&frame[20..22], &[0, 2], "round {round}");
        drop(guest);
        assert!(backend.is_running(), "backend exited after round {round}");
    }
}

#[test]
fn one_off_exits_after_the_first_frontend() {
    let mut backend = backend(&["--one-off"]);
    let dir = temp_dir();
    let guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    drop(guest);
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.is_running() {
        assert!(Instant::now() < deadline, "--one-off backend still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!backend.socket().exists(), "socket file left behind");
}

/// The descriptors of the backend's own (after the standard three): where each leads, and
/// whether it closes on exec (`O_CLOEXEC` in its fdinfo flags, octal 02000000).
fn backend_descriptors(pid: u32) -> Vec<(u32, String, bool)> {
    let mut fds = Vec::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return fds;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if fd < 3 {
            continue;
        }
        let target = std::fs::read_link(entry.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue; // closed meanwhile
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        fds.push((fd, target, flags & 0o2000000 != 0));
    }
    fds
}

/// A guest forward command or smbd must get nothing of ours: the descriptors the backend
/// inherited are closed at startup, and every descriptor it holds, those QEMU sent included
/// (the memfd of all guest RAM, kick and call eventfds), closes on exec.
#[test]
fn inherited_descriptors_are_closed_and_every_descriptor_closes_on_exec() {
    let dir = temp_dir();
    let marker = dir.join("inherited-marker");
    let file = File::create(&marker).unwrap();
    // dup never sets close-on-exec: the backend inherits this one, as a careless parent's.
    let inherited = rustix::io::dup(&file).unwrap();
    let backend = backend(&[]);
    drop(inherited);
    let mut guest = Guest::connect_qemu72(&backend, BASE_FEATURES, dir.path());
    guest.post_rx_buffers(4);
    guest.send_frame(&arp_request_for_gateway(), 4096);
    guest.receive_arp_reply();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fds = backend_descriptors(backend.pid());
        let marker_name = marker.display().to_string();
        let leaks: Vec<_> = fds
            .iter()
            .filter(|(_, target, cloexec)| !cloexec || *target == marker_name)
            .collect();
        let has_guest_ram = fds.iter().any(|(_, t, _)| t.ends_with("guest-ram"));
        if leaks.is_empty() && has_guest_ram {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "descriptors a child would inherit (or the inherited one): {leaks:?}; all: {fds:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--fd N`'s listening socket is the one inherited descriptor kept at startup.
#[test]
fn the_fd_given_with_dash_dash_fd_is_kept_and_served() {
    use std::os::fd::AsRawFd;
    let dir = temp_dir();
    let path = dir.join("inherited.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Both without close-on-exec, so that the backend inherits them; the second one it closes.
    let served = rustix::io::dup(&listener).unwrap();
    let marker = dir.join("inherited-marker");
    let other = rustix::io::dup(File::create(&marker).unwrap()).unwrap();
    let served_fd = served.as_raw_fd() as u32;
    let socket = std::fs::read_link(format!("/proc/self/fd/{served_fd}")).unwrap();
    let mut child = std::process::Command::new(vnu_tests::backend_bin().unwrap())
        .arg("--fd")
        .arg(served_fd.to_string())
        .stderr(File::create(dir.join("backend.log")).unwrap())
        .spawn()
        .unwrap();
    drop((served, other, listener));
    let frontend = Frontend::from_stream(UnixStream::connect(&path).unwrap(), 2);
    let features = frontend.get_features();
    let descriptors = backend_descriptors(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(features.is_ok(), "served through --fd: {features:?}");
    let socket = socket.display().to_string();
    assert!(
        descriptors
            .iter()
            .any(|(fd, target, cloexec)| *fd == served_fd && *target == socket && *cloexec),
        "--fd {served_fd} ({socket}) kept, close-on-exec: {descriptors:?}"
    );
    let marker = marker.display().to_string();
    assert!(
        descriptors.iter().all(|(_, target, _)| *target != marker),
        "{descriptors:?}"
    );
}
