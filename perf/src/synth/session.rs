//! One synthetic test: a minimal guest-side TCP over the [`Driver`]'s rings, connected through
//! the backend to a host [`super::peer::Peer`], sending or receiving for a fixed time.
//!
//! # The TCP
//!
//! Just enough for a lossless, in-order link. The guest connects to the gateway address (SYN
//! with MSS `mss`, 1460 at MTU 1500 or 65480 at MTU 65520, and window scale 7), then:
//!
//! * **Sending** (guest→host): fills the backend's advertised window with segments taken
//!   straight from the pattern in guest memory: with offloads as TSO frames of up to
//!   `tso_payload` bytes (virtio-net header `NEEDS_CSUM`, `GSO_TCPV4`, `gso_size` `mss`), without
//!   them as `mss`-byte segments with complete checksums, whatever MSS the backend announced
//!   (so that every backend gets the same frames). It advances on the backend's ACKs.
//!   Nothing is ever lost on this link, but the backend ACKs only what its socket took (passt
//!   drops what its socket does not take and counts on the guest to send it again): if an ACK
//!   repeats `dupack_threshold` times (3, as Linux without SACK; window updates do not count),
//!   or nothing is ACKed for `rto` (200 ms, Linux's minimum RTO), the sender goes back to the
//!   first unacknowledged byte and counts it (`go_back`), which the report shows.
//! * **Receiving** (host→guest): takes in-order segments (TSO frames spanning several mergeable
//!   buffers with offloads), checks their bytes against the pattern (and their checksum when the
//!   backend computed one), and ACKs once per batch of used buffers with a fixed window. A
//!   segment beyond the next expected byte is counted (`out_of_order`) and answered with a
//!   duplicate ACK; one before it (a retransmission) is counted as `duplicate`.
//!
//! A RST or FIN from the backend, a corrupt byte, or [`STALL`] without progress ends the test
//! with an error that carries the connection's state.

use std::time::{Duration, Instant};

use super::peer::Pattern;
use super::ring::{Driver, RX, TX, TX_HEADER_SLOT};
use super::wire::{self, RxSegment, Tcp, TxCsum, tcp_flags};
use vm_memory::{Bytes, GuestAddress};

/// Without any progress for this long, the test fails.
pub const STALL: Duration = Duration::from_secs(5);
/// Our window scale.
const WSCALE: u8 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Guest→host: the guest sends.
    Send,
    /// Host→guest: the guest receives.
    Receive,
}

#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub role: Role,
    /// Checksum and segmentation offloads were negotiated.
    pub offload: bool,
    /// Largest payload of one TX frame with offloads.
    pub tso_payload: usize,
    /// Our MSS: the option in our SYN, the payload of each segment we send without offloads,
    /// and `gso_size` with them (MTU 1500: 1460; MTU 65520: 65480).
    pub mss: u16,
    /// The receive window we advertise, in bytes.
    pub rcv_window: u32,
    /// Check every received byte (and checksum) against the pattern.
    pub verify: bool,
    pub warmup: Duration,
    pub duration: Duration,
    /// Without any ACK progress for this long, the sender resends from the first unacked byte.
    pub rto: Duration,
    /// Duplicate ACKs after which the sender resends from the first unacked byte.
    pub dupack_threshold: u32,
    /// The host port (on 127.0.0.1) to reach through the gateway address.
    pub port: u16,
    /// Our port.
    pub local_port: u16,
}

/// What the driver counted; [`Session::run`] reports them at the start and end of the
/// measured interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Data frames sent (Send) or received (Receive); a TSO frame counts once.
    pub data_frames: u64,
    /// Payload bytes sent and acknowledged (Send) or received in order (Receive).
    pub data_bytes: u64,
    /// Received frames that carried more than one MSS (GSO frames).
    pub gso_frames: u64,
    /// RX buffers those frames took.
    pub rx_buffers: u64,
    /// Pure ACKs sent (Receive) or received (Send).
    pub acks: u64,
    /// Times the sender went back to the first unacked byte: (after 3 duplicate ACKs, after
    /// a timeout).
    pub go_back_dupack: u64,
    pub go_back_timeout: u64,
    /// Received segments beyond the next expected byte (a gap: the backend skipped data).
    pub out_of_order: u64,
    /// Received segments entirely before the next expected byte (retransmissions).
    pub duplicate: u64,
    /// Frames for anything but our connection (router advertisements and the like).
    pub other_frames: u64,
    /// Frames marked DATA_VALID although GUEST_CSUM was not negotiated (virtio 1.2,
    /// 5.1.6.4.1: the device must then set no flags and should checksum fully); their
    /// checksum goes unchecked, as a Linux guest would trust the flag.
    pub data_valid_unasked: u64,
}

/// A moment of the test, for the caller's own samples (CPU time, the peer's bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The connection is established; the warm-up starts when this call returns (so that
    /// sessions on several queue pairs can start together).
    Connected,
    /// The measured interval starts (after the warm-up).
    Start,
    End,
}

/// The counters at both marks, and when they were taken.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub start: (Instant, Counters),
    pub end: (Instant, Counters),
    /// Kicks the driver sent (RX, TX) and times it woke for an interrupt, over the whole test.
    pub kicks: [u64; 2],
    pub wakeups: u64,
    /// The MSS the backend announced in its SYN-ACK.
    pub backend_mss: Option<u16>,
}

/// The connection's state.
#[derive(Debug)]
pub struct Session<'a> {
    driver: &'a mut Driver,
    pattern: &'a mut Pattern,
    config: SessionConfig,
    free_tx: Vec<u16>,
    ip_id: u16,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// The highest sequence number sent (`snd_nxt` goes back below it to resend).
    snd_max: u32,
    /// The peer's window, in bytes, from `snd_una`.
    snd_wnd: u32,
    peer_wscale: u8,
    our_wscale: u8,
    backend_mss: Option<u16>,
    irs: u32,
    rcv_nxt: u32,
    /// Stream offsets (64-bit: sequence numbers wrap every 4 GiB) of `snd_una` and `rcv_nxt`.
    snd_una_offset: u64,
    rcv_offset: u64,
    established: bool,
    ack_owed: bool,
    dup_acks: u32,
    last_ack_progress: Instant,
    last_progress: Instant,
    counters: Counters,
    scratch: Vec<u8>,
    /// `VNU_SYNTH_TRACE` is set: every received frame is logged to stderr (slow).
    trace: bool,
    /// The last frames received (stream offset or -1, payload length, buffers), for errors.
    history: std::collections::VecDeque<Received>,
}

/// A received frame as the error report shows it: stream offset (-1 when not ours), payload
/// length, and the RX buffers (descriptor, bytes) it came in.
type Received = (i64, usize, Vec<(u16, u32)>);

fn seq_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) as i32 >= 0
}

impl<'a> Session<'a> {
    pub fn new(driver: &'a mut Driver, pattern: &'a mut Pattern, config: SessionConfig) -> Self {
        let free_tx = (0..driver.tx_slots()).rev().collect();
        let now = Instant::now();
        let iss = 0x1000_0000 ^ u32::from(config.local_port).rotate_left(16);
        Session {
            driver,
            pattern,
            config,
            free_tx,
            ip_id: 1,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            peer_wscale: 0,
            our_wscale: 0,
            backend_mss: None,
            irs: 0,
            rcv_nxt: 0,
            snd_una_offset: 0,
            rcv_offset: 0,
            established: false,
            ack_owed: false,
            dup_acks: 0,
            last_ack_progress: now,
            last_progress: now,
            counters: Counters::default(),
            scratch: Vec::new(),
            trace: std::env::var_os("VNU_SYNTH_TRACE").is_some(),
            history: std::collections::VecDeque::new(),
        }
    }

    /// Connects, runs the warm-up and the measured interval, calling `mark` at both ends of the
    /// interval (right after the counters are taken).
    pub fn run(mut self, mut mark: impl FnMut(Mark)) -> Result<Outcome, String> {
        self.connect()?;
        mark(Mark::Connected);
        let begin = Instant::now();
        let t_start = begin + self.config.warmup;
        let t_end = t_start + self.config.duration;
        let mut start = None;
        self.last_progress = Instant::now();
        loop {
            let mut busy = self.reclaim_tx()?;
            busy |= self.process_rx()?;
            if self.config.role == Role::Send {
                busy |= self.fill()?;
                self.check_retransmit()?;
            }
            if self.ack_owed {
                self.send_ack()?;
            }
            self.driver.publish(TX)?;
            let now = Instant::now();
            if start.is_none() && now >= t_start {
                start = Some((now, self.counters));
                mark(Mark::Start);
            }
            if now >= t_end {
                let end = (now, self.counters);
                mark(Mark::End);
                return Ok(Outcome {
                    start: start.unwrap_or(end),
                    end,
                    kicks: self.driver.kicks_sent,
                    wakeups: self.driver.wakeups,
                    backend_mss: self.backend_mss,
                });
            }
            if now.duration_since(self.last_progress) > STALL {
                return Err(format!("no progress for {STALL:?}: {}", self.state()));
            }
            if !busy {
                let until = if start.is_none() { t_start } else { t_end };
                let wait = until
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(20));
                self.driver.wait(wait)?;
            }
        }
    }

    fn state(&self) -> String {
        format!(
            "snd_una {} snd_nxt {} snd_wnd {} rcv_nxt {} free TX slots {}/{}, RX used pending {}, \
             counters {:?}",
            self.snd_una.wrapping_sub(self.iss),
            self.snd_nxt.wrapping_sub(self.iss),
            self.snd_wnd,
            self.rcv_nxt.wrapping_sub(self.irs),
            self.free_tx.len(),
            self.driver.tx_slots(),
            self.driver.used_pending(RX).unwrap_or(0),
            self.counters
        )
    }

    fn connect(&mut self) -> Result<(), String> {
        let syn = Tcp {
            src_port: self.config.local_port,
            dst_port: self.config.port,
            seq: self.iss,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 65535,
        };
        self.send_segment(&syn, &wire::syn_options(self.config.mss, WSCALE), None)?;
        self.snd_nxt = self.iss.wrapping_add(1);
        self.snd_max = self.snd_nxt;
        self.driver.publish(TX)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.established {
            self.reclaim_tx()?;
            self.process_rx()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "no SYN-ACK from the backend within 10 s for port {}",
                    self.config.port
                ));
            }
            if !self.established {
                self.driver.wait(Duration::from_millis(20))?;
            }
        }
        self.send_ack()?;
        self.driver.publish(TX)
    }

    /// Takes back TX slots the device is done with.
    fn reclaim_tx(&mut self) -> Result<bool, String> {
        let mut any = false;
        while let Some((head, _)) = self.driver.pop_used(TX)? {
            self.free_tx.push(Driver::tx_slot_of(head));
            any = true;
        }
        Ok(any)
    }

    /// Writes headers into a free TX slot and queues the frame; `payload` is the stream offset
    /// and length of pattern bytes to carry.
    fn send_segment(
        &mut self,
        tcp: &Tcp,
        options: &[u8],
        payload: Option<(u64, usize)>,
    ) -> Result<(), String> {
        let slot = self.free_tx.pop().ok_or("no free TX slot")?;
        let len = payload.map_or(0, |p| p.1);
        let csum = if self.config.offload {
            TxCsum::Partial
        } else {
            TxCsum::Full {
                payload_sum: payload.map_or(0, |(off, len)| self.pattern.sum(off, len)),
            }
        };
        let mut buf = [0u8; TX_HEADER_SLOT as usize];
        let headers = wire::write_guest_headers(
            &mut buf[wire::VNET_LEN..],
            self.ip_id,
            tcp,
            options,
            len,
            csum,
        );
        self.ip_id = self.ip_id.wrapping_add(1);
        let mss = self.config.mss;
        let gso = (self.config.offload && len > usize::from(mss)).then_some(mss);
        buf[..wire::VNET_LEN].copy_from_slice(&wire::tx_vnet_header(csum, gso, headers));
        let total = wire::VNET_LEN + headers;
        let mem = self.driver.memory();
        let err = |e| format!("guest memory: {e}");
        if let Some((frame, _)) = self.driver.tx_frame_buffer(slot) {
            // A linear frame: the guest's socket write copies the payload into it.
            mem.write_slice(
                &buf[..wire::VNET_LEN],
                GuestAddress(self.driver.tx_header_addr(slot)),
            )
            .map_err(err)?;
            mem.write_slice(&buf[wire::VNET_LEN..total], GuestAddress(frame))
                .map_err(err)?;
            if let Some((off, len)) = payload {
                mem.write_slice(
                    self.pattern.slice(off, len),
                    GuestAddress(frame + headers as u64),
                )
                .map_err(err)?;
            }
            return self.driver.post_tx_linear(slot, (headers + len) as u32);
        }
        mem.write_slice(
            &buf[..total],
            GuestAddress(self.driver.tx_header_addr(slot)),
        )
        .map_err(err)?;
        let payload = payload.map(|(off, len)| {
            (
                self.driver.pattern_addr() + Pattern::position(off) as u64,
                len as u32,
            )
        });
        self.driver.post_tx(slot, total as u32, payload)
    }

    fn our_window(&self) -> u16 {
        (self.config.rcv_window >> self.our_wscale).min(65535) as u16
    }

    fn send_ack(&mut self) -> Result<(), String> {
        if self.free_tx.is_empty() {
            // Retried after the next reclaim.
            return Ok(());
        }
        let tcp = Tcp {
            src_port: self.config.local_port,
            dst_port: self.config.port,
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags: tcp_flags::ACK,
            window: self.our_window(),
        };
        self.send_segment(&tcp, &[], None)?;
        self.ack_owed = false;
        if self.config.role == Role::Receive {
            self.counters.acks += 1;
        }
        Ok(())
    }

    /// Sends new data while the window and the TX slots allow.
    fn fill(&mut self) -> Result<bool, String> {
        let max = if self.config.offload {
            self.config.tso_payload
        } else {
            usize::from(self.config.mss)
        };
        let mut sent = false;
        while !self.free_tx.is_empty() {
            let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
            let room = self.snd_wnd.saturating_sub(in_flight) as usize;
            let len = room.min(max);
            // No runts while data is in flight: wait for the window to open properly.
            if len == 0 || (len < max && len < usize::from(self.config.mss) && in_flight > 0) {
                break;
            }
            let offset = self.snd_una_offset + u64::from(in_flight);
            let tcp = Tcp {
                src_port: self.config.local_port,
                dst_port: self.config.port,
                seq: self.snd_nxt,
                ack: self.rcv_nxt,
                flags: tcp_flags::ACK | tcp_flags::PSH,
                window: self.our_window(),
            };
            self.send_segment(&tcp, &[], Some((offset, len)))?;
            self.snd_nxt = self.snd_nxt.wrapping_add(len as u32);
            if seq_le(self.snd_max, self.snd_nxt) {
                self.snd_max = self.snd_nxt;
            }
            self.counters.data_frames += 1;
            sent = true;
        }
        Ok(sent)
    }

    fn check_retransmit(&mut self) -> Result<(), String> {
        if self.snd_nxt != self.snd_una && self.last_ack_progress.elapsed() > self.config.rto {
            self.snd_nxt = self.snd_una;
            self.counters.go_back_timeout += 1;
            self.last_ack_progress = Instant::now();
        }
        Ok(())
    }

    /// Reads every complete frame the device has returned, gives the buffers back, and kicks.
    fn process_rx(&mut self) -> Result<bool, String> {
        let mut any = false;
        loop {
            let pending = self.driver.used_pending(RX)?;
            if pending == 0 {
                break;
            }
            let (first, first_len) = self.driver.peek_used(RX, 0)?;
            let mut head = [0u8; 128];
            let n = (first_len as usize).min(head.len());
            self.driver
                .memory()
                .read_slice(
                    &mut head[..n],
                    GuestAddress(self.driver.rx_buffer_addr(first)),
                )
                .map_err(|e| format!("guest memory: {e}"))?;
            if n < wire::VNET_LEN {
                return Err(format!(
                    "RX buffer {first} holds {n} bytes, no virtio-net header"
                ));
            }
            let vnet = wire::parse_rx_vnet(head[..wire::VNET_LEN].try_into().expect("12 bytes"));
            let buffers = vnet.num_buffers.max(1);
            if pending < buffers {
                break; // the rest of this frame is being written
            }
            let mut chain = Vec::with_capacity(usize::from(buffers));
            for i in 0..buffers {
                chain.push(self.driver.peek_used(RX, i)?);
            }
            self.driver.consume_used(RX, buffers);
            self.counters.rx_buffers += u64::from(buffers);
            let frame_len: usize =
                chain.iter().map(|c| c.1 as usize).sum::<usize>() - wire::VNET_LEN;
            if self.trace {
                let seg = wire::parse_rx_segment(&head[wire::VNET_LEN..n], frame_len);
                eprintln!(
                    "rx {:?} vnet {:?} seq {:?} len {:?} flags {:?} ack {:?} window {:?} at {:?}",
                    chain,
                    vnet,
                    seg.map(|s| s.tcp.seq.wrapping_sub(self.irs)),
                    seg.map(|s| s.payload_len),
                    seg.map(|s| s.tcp.flags),
                    seg.map(|s| s.tcp.ack.wrapping_sub(self.iss)),
                    seg.map(|s| s.tcp.window),
                    self.last_progress.elapsed()
                );
            }
            let parsed = wire::parse_rx_segment(&head[wire::VNET_LEN..n], frame_len);
            if self.history.len() == 24 {
                self.history.pop_front();
            }
            self.history.push_back((
                parsed.map_or(-1, |s| {
                    i64::from(s.tcp.seq.wrapping_sub(self.irs.wrapping_add(1)))
                }),
                parsed.map_or(0, |s| s.payload_len),
                chain.clone(),
            ));
            match parsed {
                Some(seg)
                    if seg.tcp.dst_port == self.config.local_port
                        && seg.tcp.src_port == self.config.port =>
                {
                    if seg.payload_len > usize::from(self.config.mss) {
                        self.counters.gso_frames += 1;
                    }
                    self.on_segment(&seg, &vnet, &chain)?;
                }
                _ => self.counters.other_frames += 1,
            }
            for (id, _) in chain {
                self.driver.repost_rx(id)?;
            }
            any = true;
        }
        if any {
            self.driver.publish(RX)?;
        }
        Ok(any)
    }

    fn on_segment(
        &mut self,
        seg: &RxSegment,
        vnet: &wire::RxVnet,
        chain: &[(u16, u32)],
    ) -> Result<(), String> {
        let t = &seg.tcp;
        if vnet.data_valid && !self.config.offload {
            self.counters.data_valid_unasked += 1;
        }
        if t.flags & tcp_flags::RST != 0 {
            return Err(format!(
                "the backend reset the connection: {}",
                self.state()
            ));
        }
        if !self.established {
            let synack = tcp_flags::SYN | tcp_flags::ACK;
            if t.flags & synack == synack && t.ack == self.iss.wrapping_add(1) {
                self.irs = t.seq;
                self.rcv_nxt = t.seq.wrapping_add(1);
                self.snd_una = t.ack;
                if let Some(ws) = seg.wscale {
                    self.peer_wscale = ws.min(14);
                    self.our_wscale = WSCALE;
                }
                self.snd_wnd = u32::from(t.window);
                self.backend_mss = seg.mss;
                self.established = true;
                self.last_ack_progress = Instant::now();
            }
            return Ok(());
        }
        if t.flags & tcp_flags::FIN != 0 {
            return Err(format!(
                "the backend closed the connection: {}",
                self.state()
            ));
        }
        // ACK processing (both roles; only the sender has data in flight).
        if t.flags & tcp_flags::ACK != 0 {
            let window = u32::from(t.window) << self.peer_wscale;
            let acked = t.ack.wrapping_sub(self.snd_una);
            let outstanding = self.snd_max.wrapping_sub(self.snd_una);
            if (acked as i32) > 0 && seq_le(t.ack, self.snd_max) {
                self.snd_una = t.ack;
                // After going back, what was sent before may be ACKed still.
                if seq_le(self.snd_nxt, t.ack) {
                    self.snd_nxt = t.ack;
                }
                self.snd_una_offset += u64::from(acked);
                self.counters.data_bytes += u64::from(acked);
                self.dup_acks = 0;
                self.last_ack_progress = Instant::now();
                self.last_progress = self.last_ack_progress;
            } else if acked == 0
                && seg.payload_len == 0
                && outstanding > 0
                && window == self.snd_wnd
            {
                self.dup_acks += 1;
                if self.dup_acks == self.config.dupack_threshold {
                    self.snd_nxt = self.snd_una;
                    self.counters.go_back_dupack += 1;
                }
            } else if acked > outstanding && acked < 1 << 31 && self.config.role == Role::Send {
                return Err(format!(
                    "the backend ACKed {acked} bytes beyond what was sent: {}",
                    self.state()
                ));
            }
            self.snd_wnd = window;
            if seg.payload_len == 0 && self.config.role == Role::Send {
                self.counters.acks += 1;
            }
        }
        if seg.payload_len == 0 {
            return Ok(());
        }
        if t.seq != self.rcv_nxt {
            if seq_le(t.seq.wrapping_add(seg.payload_len as u32), self.rcv_nxt) {
                self.counters.duplicate += 1;
            } else {
                self.counters.out_of_order += 1;
            }
            self.ack_owed = true;
            return Ok(());
        }
        if self.config.verify {
            self.verify(seg, vnet, chain)?;
        }
        self.rcv_nxt = self.rcv_nxt.wrapping_add(seg.payload_len as u32);
        self.rcv_offset += seg.payload_len as u64;
        self.counters.data_frames += 1;
        self.counters.data_bytes += seg.payload_len as u64;
        self.last_progress = Instant::now();
        self.ack_owed = true;
        Ok(())
    }

    /// Copies the segment out of the RX buffers and checks its payload against the pattern,
    /// and its TCP checksum when the backend computed a complete one.
    fn verify(
        &mut self,
        seg: &RxSegment,
        vnet: &wire::RxVnet,
        chain: &[(u16, u32)],
    ) -> Result<(), String> {
        let frame_len = wire::VNET_LEN + seg.payload_offset + seg.payload_len;
        self.scratch.resize(frame_len, 0);
        let mut at = 0usize;
        for &(id, len) in chain {
            let n = (len as usize).min(frame_len - at);
            if n == 0 {
                break;
            }
            self.driver
                .memory()
                .read_slice(
                    &mut self.scratch[at..at + n],
                    GuestAddress(self.driver.rx_buffer_addr(id)),
                )
                .map_err(|e| format!("guest memory: {e}"))?;
            at += n;
        }
        if at < frame_len {
            return Err(format!(
                "frame of {frame_len} bytes in {at} bytes of buffers"
            ));
        }
        let frame = &self.scratch[wire::VNET_LEN..];
        let offset = self.rcv_offset;
        let payload = &frame[seg.payload_offset..seg.payload_offset + seg.payload_len];
        let expected = self.pattern.slice(offset, seg.payload_len);
        if payload != expected {
            let at = payload
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            // Which RX buffer the first wrong byte is in.
            let mut byte = wire::VNET_LEN + seg.payload_offset + at;
            let mut buffer = 0;
            for (i, &(_, len)) in chain.iter().enumerate() {
                if byte < len as usize {
                    buffer = i;
                    break;
                }
                byte -= len as usize;
            }
            // Is the payload some other stretch of the stream (a wrong offset), and where?
            let shift = (0..Pattern::PERIOD as u64).find(|d| {
                payload[at..]
                    == *self
                        .pattern
                        .slice(offset + at as u64 + d, payload.len() - at)
            });
            let zeros = payload[at..].iter().filter(|&&b| b == 0).count();
            return Err(format!(
                "host→guest data corrupt in the segment at stream byte {offset} ({} bytes, {} \
                 buffers {:?}): first wrong byte at payload offset {at} (buffer {buffer}, byte \
                 {byte}): {:#04x}, expected {:#04x}; from there the payload is {}; {zeros} zero \
                 bytes; last frames (stream offset, payload, buffers): {:?}",
                seg.payload_len,
                chain.len(),
                chain,
                payload[at],
                expected[at],
                match shift {
                    Some(d) => format!(
                        "the stream at an offset {d} (mod {}) further",
                        Pattern::PERIOD
                    ),
                    None => "not a contiguous stretch of the stream".into(),
                },
                self.history
            ));
        }
        if !vnet.needs_csum && !vnet.data_valid {
            let tcp = &frame[seg.tcp_offset..seg.tcp_offset + seg.tcp_len];
            let pseudo = wire::pseudo_sum(wire::GATEWAY_IP, wire::GUEST_IP, seg.tcp_len);
            if wire::fold(wire::sum16(tcp, pseudo)) != 0xffff {
                return Err(format!("bad TCP checksum at stream byte {offset}"));
            }
        }
        Ok(())
    }
}
