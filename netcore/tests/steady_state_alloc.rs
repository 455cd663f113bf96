//! The data path allocates nothing per packet.
//!
//! One TCP flow runs through [`Engine`] to a real listener on the host's loopback (the guest
//! connects to the gateway address, which the default slirp plan maps to 127.0.0.1; nothing
//! leaves the machine). After a warm-up that lets every buffer and table in the engine reach
//! its working size, a counting global allocator watches many rounds of data both ways: any
//! allocation on this thread while it counts fails the test, with the step of the round it
//! happened in and a backtrace of the first one.
//!
//! Everything the test itself does while counting (building guest frames, reading frames the
//! engine sent, the listener's reads and writes) uses buffers allocated beforehand, so that an
//! allocation counted here is the engine's.

// The counting allocator cannot be written without `unsafe`: `GlobalAlloc` is an unsafe trait.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{GATEWAY, GUEST_IP, GUEST_MAC};
use netcore::engine::MAX_FRAME_LEN;
use netcore::link::{OneFrame, RxCsum, RxMeta, RxOffloads};
use netcore::tcp::flags;
use netcore::{Engine, EngineOptions, RxLink, RxSlot};
use netplan::{MacAddr, NetPlan};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket,
    TcpSeqNumber,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

// ---------------------------------------------------------------------------------------------
// The counting allocator.

/// Counts allocations (and reallocations) made on a thread that turned counting on, then
/// hands every call to the system allocator unchanged.
struct CountingAlloc;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

thread_local! {
    /// Allocations on this thread are counted. Other threads (the test harness) are not
    /// watched. A `const` `Cell<bool>` has no lazy initialisation and no destructor, so the
    /// allocator can read it at any time without allocating.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// The steps of a round, for the report: which one allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The test builds a guest frame (test code).
    GuestBuild,
    /// The engine takes a guest data segment (`handle_frame` + `end_batch`).
    EngineGuestData,
    /// The guest reads what the engine sent into the arena (test code).
    GuestReceive,
    /// The listener's side reads what the guest sent (test code).
    HostRead,
    /// The listener's side writes (test code).
    HostWrite,
    /// Waiting for the engine's host descriptor (test code).
    WaitHost,
    /// The engine serves its host sockets (`poll_host`): peeks host data into the arena.
    EnginePollHost,
    /// The engine is told RX buffers were given back (`end_batch`).
    EngineRxBuffers,
    /// The engine takes the guest's ACK (`handle_frame` + `end_batch`).
    EngineGuestAck,
}

const PHASES: [Phase; 9] = [
    Phase::GuestBuild,
    Phase::EngineGuestData,
    Phase::GuestReceive,
    Phase::HostRead,
    Phase::HostWrite,
    Phase::WaitHost,
    Phase::EnginePollHost,
    Phase::EngineRxBuffers,
    Phase::EngineGuestAck,
];

/// The current phase (an index into `PHASES`).
static PHASE: AtomicUsize = AtomicUsize::new(0);
/// Allocations counted in each phase.
static COUNTS: [AtomicUsize; PHASES.len()] = [const { AtomicUsize::new(0) }; PHASES.len()];
/// The first counted allocation: its phase and where it came from.
static FIRST: Mutex<Option<(Phase, Backtrace)>> = Mutex::new(None);

fn set_phase(phase: Phase) {
    let index = PHASES.iter().position(|&p| p == phase).unwrap_or(0);
    PHASE.store(index, Ordering::Relaxed);
}

fn counting(on: bool) {
    COUNTING.with(|c| c.set(on));
}

/// Called on every allocation: counts it if this thread counts. Counting is off while this
/// runs, so the backtrace's own allocations pass through uncounted (no recursion).
fn note_allocation() {
    let on = COUNTING.try_with(|c| c.replace(false)).unwrap_or(false);
    if !on {
        return;
    }
    let index = PHASE.load(Ordering::Relaxed);
    COUNTS[index].fetch_add(1, Ordering::Relaxed);
    if let Ok(mut first) = FIRST.try_lock()
        && first.is_none()
    {
        *first = Some((PHASES[index], Backtrace::force_capture()));
    }
    COUNTING.with(|c| c.set(true));
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the bookkeeping before it neither unwinds nor touches the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's `layout` obligations are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr` came from `System` (every allocation here does) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// ---------------------------------------------------------------------------------------------
// The guest-bound link: a fixed arena, so that receiving frames allocates nothing.

/// Frames the arena holds before the guest must read them.
const SLOTS: usize = 16;
/// Each slot takes the largest frame (a 64 KiB segment with offloads).
const SLOT_LEN: usize = MAX_FRAME_LEN;

/// RX buffers posted by a guest with checksum and segmentation offload: `SLOTS` slots of
/// `SLOT_LEN` bytes, allocated once, given back all at once by [`ArenaLink::clear`].
struct ArenaLink {
    arena: Vec<u8>,
    /// Length and offload metadata of each committed frame, in order; never grows past
    /// `SLOTS`, its capacity.
    frames: Vec<(usize, RxMeta)>,
    offloads: RxOffloads,
}

impl ArenaLink {
    fn new() -> Self {
        ArenaLink {
            arena: vec![0; SLOTS * SLOT_LEN],
            frames: Vec::with_capacity(SLOTS),
            offloads: RxOffloads {
                csum: true,
                tso4: true,
                tso6: true,
            },
        }
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn is_full(&self) -> bool {
        self.frames.len() == SLOTS
    }

    /// Frame `i` and its metadata.
    fn frame(&self, i: usize) -> (&[u8], RxMeta) {
        let (len, meta) = self.frames[i];
        (&self.arena[i * SLOT_LEN..i * SLOT_LEN + len], meta)
    }

    /// The guest read everything: all slots are free again.
    fn clear(&mut self) {
        self.frames.clear();
    }
}

struct ArenaSlot<'a> {
    /// Cells, so that the kernel may fill them through the shared borrow iovecs take.
    buf: &'a [std::cell::Cell<u8>],
    meta: RxMeta,
    frames: &'a mut Vec<(usize, RxMeta)>,
}

impl RxSlot for ArenaSlot<'_> {
    fn capacity(&self) -> usize {
        self.buf.len()
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) {
        netcore::link::copy_to_cells(&self.buf[offset..offset + data.len()], data);
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        netcore::link::copy_from_cells(self.buf.get(offset..).unwrap_or(&[]), buf)
    }

    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut netcore::link::RecvIovs<'_, 'm>) {
        let end = offset.saturating_add(len).min(self.buf.len());
        if offset < end {
            out.push_cells(&self.buf[offset..end]);
        }
    }

    fn set_meta(&mut self, meta: RxMeta) {
        self.meta = meta;
    }

    fn commit(self, len: usize) {
        assert!(len <= self.buf.len(), "frame longer than its slot");
        self.frames.push((len, self.meta));
    }
}

impl RxLink for ArenaLink {
    type Slot<'a> = ArenaSlot<'a>;
    type Frames<'a> = OneFrame<ArenaSlot<'a>>;

    fn reserve_frames(&mut self, max_len: usize, _count: usize) -> Option<Self::Frames<'_>> {
        self.reserve(max_len).map(OneFrame)
    }

    fn reserve(&mut self, max_len: usize) -> Option<ArenaSlot<'_>> {
        let i = self.frames.len();
        if i == SLOTS || max_len > SLOT_LEN {
            return None;
        }
        Some(ArenaSlot {
            buf: std::cell::Cell::from_mut(&mut self.arena[i * SLOT_LEN..i * SLOT_LEN + max_len])
                .as_slice_of_cells(),
            meta: RxMeta::default(),
            frames: &mut self.frames,
        })
    }

    fn offloads(&self) -> RxOffloads {
        self.offloads
    }
}

// ---------------------------------------------------------------------------------------------
// Frames.

const GUEST_PORT: u16 = 40000;
const GUEST_ISN: u32 = 1_000_000;
/// The guest's window scale, as Linux offers.
const GUEST_WSCALE: u8 = 7;
/// The engine's window scale toward a guest that offers one (`tcp::OUR_WSCALE`).
const ENGINE_WSCALE: u8 = 7;
/// The window the guest advertises: 1024 << 7 = 128 KiB.
const GUEST_WINDOW: u16 = 1024;
/// Guest data per round: more than one MSS, as a guest with TX offloads sends.
const GUEST_CHUNK: usize = 4000;
/// Host data per round: more than one MSS, so that it reaches the guest as one large frame.
const HOST_CHUNK: usize = 6000;
const WARMUP_ROUNDS: usize = 20;
const ROUNDS: usize = 200;
/// Pattern streams, one per direction.
const GUEST_STREAM: u64 = 1;
const HOST_STREAM: u64 = 2;

/// The byte at `offset` of a direction's byte stream: checks data arrives whole and in order.
fn pattern(stream: u64, offset: u64) -> u8 {
    let mut x = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    x as u8
}

/// A TCP segment from the guest to the gateway, written into `buf`; returns the frame length.
#[allow(clippy::too_many_arguments)]
fn write_guest_segment(
    buf: &mut [u8],
    ip_ident: u16,
    remote_port: u16,
    seq: u32,
    ack: u32,
    tcp_flags: u8,
    options: &[u8],
    payload: &[u8],
) -> usize {
    let tcp_len = 20 + options.len();
    let ip_len = 20 + tcp_len + payload.len();
    let frame_len = 14 + ip_len;
    let frame = &mut buf[..frame_len];

    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_dst_addr(EthernetAddress(MacAddr::slirp_for_ipv4(GATEWAY).0));
    eth.set_src_addr(EthernetAddress(GUEST_MAC.0));
    eth.set_ethertype(EthernetProtocol::Ipv4);

    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_dscp(0);
    ip.set_ecn(0);
    ip.set_total_len(ip_len as u16);
    ip.set_ident(ip_ident);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_frag_offset(0);
    ip.set_hop_limit(64);
    ip.set_next_header(IpProtocol::Tcp);
    ip.set_src_addr(GUEST_IP);
    ip.set_dst_addr(GATEWAY);
    ip.fill_checksum();

    let mut tcp = TcpPacket::new_unchecked(&mut frame[34..]);
    tcp.set_src_port(GUEST_PORT);
    tcp.set_dst_port(remote_port);
    tcp.set_seq_number(TcpSeqNumber(seq as i32));
    tcp.set_ack_number(TcpSeqNumber(ack as i32));
    tcp.set_header_len(tcp_len as u8);
    tcp.clear_flags();
    tcp.set_fin(tcp_flags & flags::FIN != 0);
    tcp.set_syn(tcp_flags & flags::SYN != 0);
    tcp.set_rst(tcp_flags & flags::RST != 0);
    tcp.set_psh(tcp_flags & flags::PSH != 0);
    tcp.set_ack(tcp_flags & flags::ACK != 0);
    tcp.set_window_len(if tcp_flags & flags::SYN != 0 {
        64240
    } else {
        GUEST_WINDOW
    });
    tcp.set_urgent_at(0);
    tcp.options_mut().copy_from_slice(options);
    tcp.payload_mut().copy_from_slice(payload);
    tcp.fill_checksum(&IpAddress::Ipv4(GUEST_IP), &IpAddress::Ipv4(GATEWAY));
    frame_len
}

/// A segment the engine sent the guest, checked and taken apart (without copying).
#[derive(Debug, Clone, Copy)]
struct Seen {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    /// Where the payload lies in the frame.
    payload: (usize, usize),
}

/// Why the flow failed; plain data, so that failing allocates nothing while counting.
#[derive(Debug, Clone, Copy)]
struct Failure {
    round: usize,
    what: &'static str,
    got: u64,
    want: u64,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {}: {} (got {}, want {})",
            self.round, self.what, self.got, self.want
        )
    }
}

fn fail(round: usize, what: &'static str, got: u64, want: u64) -> Failure {
    Failure {
        round,
        what,
        got,
        want,
    }
}

/// Checks a frame the engine sent to the guest: addresses, ports, IPv4 checksum, and the
/// TCP checksum wherever the metadata says it is complete.
fn check_frame(round: usize, frame: &[u8], meta: RxMeta, port: u16) -> Result<Seen, Failure> {
    let bad = |what| fail(round, what, frame.len() as u64, 0);
    let eth = EthernetFrame::new_checked(frame).map_err(|_| bad("short Ethernet frame"))?;
    if eth.dst_addr() != EthernetAddress(GUEST_MAC.0)
        || eth.src_addr() != EthernetAddress(MacAddr::slirp_for_ipv4(GATEWAY).0)
        || eth.ethertype() != EthernetProtocol::Ipv4
    {
        return Err(bad("wrong Ethernet header"));
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| bad("bad IPv4 header"))?;
    if !ip.verify_checksum() {
        return Err(bad("IPv4 checksum"));
    }
    if ip.src_addr() != GATEWAY || ip.dst_addr() != GUEST_IP || ip.next_header() != IpProtocol::Tcp
    {
        return Err(bad("wrong IPv4 addresses or protocol"));
    }
    let ip_header = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    // Frames under the Ethernet minimum (bare ACKs) come zero-padded to 60 bytes.
    if (14 + total).max(60) != frame.len()
        || frame[(14 + total).min(frame.len())..]
            .iter()
            .any(|&b| b != 0)
    {
        return Err(fail(
            round,
            "IPv4 length against frame length",
            total as u64,
            frame.len() as u64 - 14,
        ));
    }
    let l4 = &eth.payload()[ip_header..total];
    let tcp = TcpPacket::new_checked(l4).map_err(|_| bad("bad TCP header"))?;
    if tcp.src_port() != port || tcp.dst_port() != GUEST_PORT {
        return Err(bad("wrong TCP ports"));
    }
    if meta.csum == RxCsum::Complete
        && !tcp.verify_checksum(&IpAddress::Ipv4(GATEWAY), &IpAddress::Ipv4(GUEST_IP))
    {
        return Err(bad("TCP checksum"));
    }
    let start = 14 + ip_header + usize::from(tcp.header_len());
    Ok(Seen {
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack_number().0 as u32,
        flags: l4[13] & 0x3f,
        window: tcp.window_len(),
        payload: (start, 14 + total),
    })
}

// ---------------------------------------------------------------------------------------------
// The guest, the engine and the listener's side of the flow.

struct Flow {
    engine: Engine,
    link: ArenaLink,
    /// Watches the engine's host descriptor, as the device's event loop does.
    host_events: Epoll,
    /// The listener's accepted socket.
    server: TcpStream,
    port: u16,
    ip_ident: u16,
    /// Preallocated buffers: the guest frame being built, each side's data for a round.
    frame: Vec<u8>,
    guest_data: Vec<u8>,
    host_data: Vec<u8>,
    read_buf: Vec<u8>,
    /// Guest to host: the guest's next sequence number, the end of what it has sent, the
    /// engine's latest ACK, and the right edge of the window the engine offers.
    snd_nxt: u32,
    snd_max: u32,
    acked: u32,
    edge: u32,
    /// Host to guest: the next sequence number the guest expects.
    rcv_nxt: u32,
    /// Stream bytes: taken by the engine from the guest, read by the listener's side,
    /// written by it, received by the guest.
    guest_sent: u64,
    server_read: u64,
    host_written: u64,
    guest_received: u64,
    /// Frames toward the guest with more than one MSS of payload (segmentation offload).
    large_frames: u64,
}

impl Flow {
    /// The handshake: SYN with MSS and window scale, the SYN-ACK once the host connect
    /// completes, the guest's ACK.
    fn connect(mut engine: Engine, listener: &TcpListener) -> Flow {
        let port = listener.local_addr().unwrap().port();
        let host_events = Epoll::new().unwrap();
        host_events
            .ctl(
                ControlOperation::Add,
                engine.host_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .unwrap();
        let mut link = ArenaLink::new();
        let mut frame = vec![0u8; MAX_FRAME_LEN];
        let syn_options = [2, 4, 0x05, 0xb4, 1, 3, 3, GUEST_WSCALE];
        let n = write_guest_segment(
            &mut frame,
            1,
            port,
            GUEST_ISN,
            0,
            flags::SYN,
            &syn_options,
            &[],
        );
        engine.handle_frame(&frame[..n], &mut link);
        engine.end_batch(&mut link);
        let (server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        server
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        let mut events = [EpollEvent::default(); 4];
        let mut synack = None;
        for _ in 0..50 {
            if link.len() > 0 {
                break;
            }
            host_events.wait(100, &mut events).unwrap();
            engine.poll_host(&mut link);
        }
        for i in 0..link.len() {
            let (f, meta) = link.frame(i);
            let seen = check_frame(0, f, meta, port).unwrap_or_else(|e| panic!("{e}"));
            if seen.flags == flags::SYN | flags::ACK {
                synack = Some(seen);
            }
        }
        link.clear();
        let synack = synack.expect("a SYN-ACK once the host connect completed");
        assert_eq!(synack.ack, GUEST_ISN + 1);
        let iss = synack.seq;

        let mut flow = Flow {
            engine,
            link,
            host_events,
            server,
            port,
            ip_ident: 2,
            frame,
            guest_data: vec![0; GUEST_CHUNK],
            host_data: vec![0; HOST_CHUNK],
            read_buf: vec![0; GUEST_CHUNK],
            snd_nxt: GUEST_ISN + 1,
            snd_max: GUEST_ISN + 1,
            acked: GUEST_ISN + 1,
            // The window in a SYN-ACK is not scaled.
            edge: (GUEST_ISN + 1).wrapping_add(u32::from(synack.window)),
            rcv_nxt: iss.wrapping_add(1),
            guest_sent: 0,
            server_read: 0,
            host_written: 0,
            guest_received: 0,
            large_frames: 0,
        };
        flow.guest_ack(0)
            .unwrap_or_else(|e| panic!("handshake: {e}"));
        flow
    }

    /// Sends a guest segment through the engine and ends the batch, as the device does
    /// after draining its TX ring.
    fn guest_send(
        &mut self,
        round: usize,
        engine_phase: Phase,
        tcp_flags: u8,
        len: usize,
    ) -> Result<(), Failure> {
        set_phase(Phase::GuestBuild);
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let n = write_guest_segment(
            &mut self.frame,
            self.ip_ident,
            self.port,
            self.snd_nxt,
            self.rcv_nxt,
            tcp_flags,
            &[],
            &self.guest_data[..len],
        );
        let end = self.snd_nxt.wrapping_add(len as u32);
        if end.wrapping_sub(self.snd_max) as i32 > 0 {
            self.snd_max = end;
        }
        set_phase(engine_phase);
        self.engine.handle_frame(&self.frame[..n], &mut self.link);
        self.engine.end_batch(&mut self.link);
        self.receive(round)
    }

    /// The guest ACKs everything it received.
    fn guest_ack(&mut self, round: usize) -> Result<(), Failure> {
        self.guest_send(round, Phase::EngineGuestAck, flags::ACK, 0)
    }

    /// The guest reads the frames in the arena, checks them and gives the slots back (telling
    /// the engine, as the device does when the guest posts RX buffers, if the arena was full).
    fn receive(&mut self, round: usize) -> Result<(), Failure> {
        set_phase(Phase::GuestReceive);
        for i in 0..self.link.len() {
            let (frame, meta) = self.link.frame(i);
            let seen = check_frame(round, frame, meta, self.port)?;
            if seen.flags & (flags::SYN | flags::RST | flags::FIN) != 0 {
                return Err(fail(round, "unexpected SYN, RST or FIN", 0, 0));
            }
            if seen.flags & flags::ACK == 0 {
                return Err(fail(round, "segment without ACK", 0, 0));
            }
            let advance = seen.ack.wrapping_sub(self.acked);
            if advance > self.snd_max.wrapping_sub(self.acked) {
                return Err(fail(
                    round,
                    "ACK outside what the guest sent",
                    u64::from(seen.ack),
                    u64::from(self.snd_max),
                ));
            }
            self.acked = seen.ack;
            self.edge = seen
                .ack
                .wrapping_add(u32::from(seen.window) << ENGINE_WSCALE);
            let (start, end) = seen.payload;
            let payload = &frame[start..end];
            if payload.is_empty() {
                continue;
            }
            if seen.seq != self.rcv_nxt {
                return Err(fail(
                    round,
                    "host data out of order",
                    u64::from(seen.seq),
                    u64::from(self.rcv_nxt),
                ));
            }
            for (k, &b) in payload.iter().enumerate() {
                if b != pattern(HOST_STREAM, self.guest_received + k as u64) {
                    return Err(fail(
                        round,
                        "host data corrupted at stream offset",
                        self.guest_received + k as u64,
                        0,
                    ));
                }
            }
            if payload.len() > 1460 {
                self.large_frames += 1;
            }
            self.rcv_nxt = self.rcv_nxt.wrapping_add(payload.len() as u32);
            self.guest_received += payload.len() as u64;
        }
        let was_full = self.link.is_full();
        self.link.clear();
        if was_full {
            set_phase(Phase::EngineRxBuffers);
            self.engine.end_batch(&mut self.link);
            return self.receive(round);
        }
        Ok(())
    }

    /// One round: guest data to the host, host data to the guest, the guest's ACK.
    fn round(&mut self, round: usize) -> Result<(), Failure> {
        // Guest to host, as much as the window the engine offers allows.
        set_phase(Phase::GuestBuild);
        let room = self.edge.wrapping_sub(self.snd_nxt) as i32;
        if room <= 0 {
            return Err(fail(round, "no window for guest data", 0, 1));
        }
        let len = GUEST_CHUNK.min(room as usize);
        for (k, b) in self.guest_data[..len].iter_mut().enumerate() {
            *b = pattern(GUEST_STREAM, self.guest_sent + k as u64);
        }
        let before = self.acked;
        self.guest_send(round, Phase::EngineGuestData, flags::ACK | flags::PSH, len)?;
        // The engine ACKs what its socket took; the guest would resend the rest.
        let taken = self.acked.wrapping_sub(before) as usize;
        if taken == 0 {
            return Err(fail(round, "guest data not acknowledged", 0, len as u64));
        }
        self.snd_nxt = self.acked;
        self.guest_sent += taken as u64;

        set_phase(Phase::HostRead);
        let buf = &mut self.read_buf[..taken];
        if self.server.read_exact(buf).is_err() {
            return Err(fail(round, "listener read", 0, taken as u64));
        }
        for (k, &b) in buf.iter().enumerate() {
            if b != pattern(GUEST_STREAM, self.server_read + k as u64) {
                return Err(fail(
                    round,
                    "guest data corrupted at stream offset",
                    self.server_read + k as u64,
                    0,
                ));
            }
        }
        self.server_read += taken as u64;

        // Host to guest: the engine peeks it into the arena when its host fd says so.
        set_phase(Phase::HostWrite);
        for (k, b) in self.host_data.iter_mut().enumerate() {
            *b = pattern(HOST_STREAM, self.host_written + k as u64);
        }
        if self.server.write_all(&self.host_data).is_err() {
            return Err(fail(round, "listener write", 0, HOST_CHUNK as u64));
        }
        self.host_written += HOST_CHUNK as u64;
        let mut events = [EpollEvent::default(); 4];
        let mut idle = 0;
        while self.guest_received < self.host_written {
            set_phase(Phase::WaitHost);
            match self.host_events.wait(1000, &mut events) {
                Ok(0) => {
                    idle += 1;
                    if idle == 5 {
                        return Err(fail(
                            round,
                            "host data never reached the guest",
                            self.guest_received,
                            self.host_written,
                        ));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(_) => return Err(fail(round, "epoll_wait on the host fd", 0, 0)),
            }
            set_phase(Phase::EnginePollHost);
            self.engine.poll_host(&mut self.link);
            self.receive(round)?;
        }
        if self.guest_received != self.host_written {
            return Err(fail(
                round,
                "guest received more than the host wrote",
                self.guest_received,
                self.host_written,
            ));
        }
        self.guest_ack(round)
    }
}

fn reset_counts() {
    for count in &COUNTS {
        count.store(0, Ordering::Relaxed);
    }
    *FIRST.lock().unwrap() = None;
}

/// "phase: count" for every phase that allocated.
fn count_report() -> (usize, String) {
    let mut total = 0;
    let mut report = String::new();
    for (phase, count) in PHASES.iter().zip(&COUNTS) {
        let n = count.load(Ordering::Relaxed);
        if n > 0 {
            total += n;
            report.push_str(&format!("\n  {phase:?}: {n}"));
        }
    }
    (total, report)
}

#[test]
fn one_tcp_flow_both_ways_allocates_nothing_per_packet() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        listener.local_addr().unwrap().ip(),
        IpAddr::from([127, 0, 0, 1])
    );
    let options = EngineOptions {
        max_flows: 4,
        ..EngineOptions::default()
    };
    let engine = Engine::with_options(NetPlan::slirp_default(), options).unwrap();
    let mut flow = Flow::connect(engine, &listener);

    // Warm-up: every buffer and table reaches its working size, and the flow timers run once:
    // the engine's descriptor is readable a tick (100 ms) after the warm-up, its timer has
    // expired then, and the engine handles it.
    for round in 0..WARMUP_ROUNDS {
        flow.round(round).unwrap_or_else(|e| panic!("warm-up {e}"));
    }
    let tick_due = Instant::now() + Duration::from_millis(100);
    let mut events = [EpollEvent::default(); 4];
    loop {
        let ready = flow.host_events.wait(5000, &mut events).unwrap();
        assert!(
            ready > 0,
            "the engine's descriptor not readable in 5 s: no timer tick"
        );
        if Instant::now() >= tick_due {
            break;
        }
        // A socket's event before the tick: handled, then the tick is waited for.
        flow.engine.poll_host(&mut flow.link);
    }
    flow.engine.poll_host(&mut flow.link);
    flow.receive(WARMUP_ROUNDS)
        .unwrap_or_else(|e| panic!("after the timer tick: {e}"));
    let (sent_before, received_before, large_before) =
        (flow.guest_sent, flow.guest_received, flow.large_frames);

    reset_counts();
    counting(true);
    let mut result = Ok(());
    for round in 0..ROUNDS {
        result = flow.round(WARMUP_ROUNDS + round);
        if result.is_err() {
            break;
        }
    }
    counting(false);

    let (allocations, report) = count_report();
    if let Err(e) = result {
        panic!(
            "data path failed in the measured rounds: {e} (allocations so far: {allocations}{report})"
        );
    }
    let sent = flow.guest_sent - sent_before;
    let received = flow.guest_received - received_before;
    assert_eq!(
        flow.server_read, flow.guest_sent,
        "guest data read by the host"
    );
    assert!(
        sent >= (ROUNDS * GUEST_CHUNK / 2) as u64,
        "only {sent} bytes went from guest to host"
    );
    assert_eq!(received, (ROUNDS * HOST_CHUNK) as u64, "host data received");
    assert!(
        flow.large_frames > large_before,
        "no frame to the guest used segmentation offload"
    );
    if allocations > 0 {
        let first = match FIRST.lock().unwrap().take() {
            Some((phase, backtrace)) => format!("the first, in {phase:?}:\n{backtrace}"),
            None => "(no backtrace of the first)".to_string(),
        };
        panic!(
            "{allocations} allocations in {ROUNDS} rounds ({sent} bytes guest to host, \
             {received} host to guest), by phase:{report}\n{first}"
        );
    }
}
