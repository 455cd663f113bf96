//! The engine: takes each guest frame, dispatches it by protocol, sends answers to the guest,
//! and splices flows onto host sockets.
//!
//! # Theory of operation
//!
//! The engine owns all per-guest state (the learned guest MAC, DHCP leases, flow tables,
//! counters) and is driven from one thread, by three kinds of events: guest frames
//! ([`Engine::handle_frames`], the frames a TX ring held, or [`Engine::handle_frame`] for
//! one), readiness of its host sockets or timers (the flows' tick, and delayed ACKs)
//! ([`Engine::poll_host`],
//! after the link's event loop sees [`Engine::host_fd`] readable), and the end of a batch
//! ([`Engine::end_batch`], after a drained TX ring or newly posted RX buffers).
//!
//! A guest frame is copied out only as far as its protocol needs. A bounded header prefix is
//! always copied; control-plane frames (ARP, DHCP, ICMP, TFTP) are small and copied whole into
//! a reused buffer; TCP and UDP payload is never copied here: the flow tables pass it to the
//! kernel as iovecs into the frame. A TCP flow's payload from several frames of one batch
//! waits as iovecs into all of them and goes to its socket in one write, made before
//! `handle_frames` returns, so the frames' memory is never referenced after the link has
//! given it back.
//!
//! Answers the engine builds itself go to the [`RxLink`] at once; when the guest has posted
//! no room they wait in a bounded queue, in order, sent by [`Engine::end_batch`] once buffers
//! arrive, and past the bound they are dropped and counted: a guest that never reads must not
//! grow our memory. Flows keep their data in their host sockets instead.
//!
//! Anything malformed or not served is dropped and counted; nothing a guest sends can stop
//! the engine.

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netplan::{MacAddr, NetPlan};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::timerfd::TimerFd;

use crate::capture::{SharedCapture, Tap};
use crate::control::{Control, Seat};
use crate::flow::epoll::{self, Token};
use crate::forward::{self, ForwardSocket, Local, Peer};
use crate::link::{RxLink, TxFrame};
use crate::nat::{self, Ctx, Target, Upstream};
use crate::ping::PingTable;
use crate::queue_pairs::{HandedFrame, QueuePair};
use crate::service::{dhcp, ndp, tftp};
use crate::tcp::{SegmentOutcome, TcpTable};
use crate::udp::{Sent, UdpTable};
use crate::wire::ipv4::Ident;
use crate::wire::{ethernet, ipv4};
use crate::{capture, tcp};

pub use stats::{Counters, OpenFlows, Stats};

/// The largest frame a guest may hand us: a 64 KiB IP packet behind an Ethernet header.
pub const MAX_FRAME_LEN: usize = ipv4::MAX_PACKET_LEN + ethernet::HEADER_LEN;
/// Answers waiting for guest buffers, at most.
const MAX_PENDING: usize = 1024;
/// The ports clients of unix socket forwards come from, in turn (the IANA dynamic range).
const UNIX_PEER_PORTS: std::ops::Range<u16> = 49152..65535;
/// Connections taken from one forwarded port per readiness event, at most.
const ACCEPTS_PER_EVENT: usize = 16;
/// How often flow timers (retransmission, expiry) are looked at while any flow exists.
const TICK: Duration = Duration::from_millis(100);
/// How long a forwarded port stays unwatched after accepting failed for want of descriptors
/// or memory: its level-triggered event would otherwise come back at once, forever.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Settings of the engine that are not part of what the guest sees.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where DNS queries to the DNS address go.
    pub upstream: Upstream,
    /// Most TCP connections (and, separately, UDP and ICMP flows) at once.
    pub max_flows: usize,
    /// The forwarded ports, bound by the program ([`forward::open_rules`] at startup, runtime
    /// control later) and shared by the engines of successive frontends.
    pub control: Arc<Control>,
    /// How long a TCP connection may go without traffic before it is closed
    /// ([`crate::tcp::IDLE_TIMEOUT`] by default).
    pub tcp_idle_timeout: Duration,
    /// The queue pair this engine serves when the link has several, and what it shares with
    /// the other pairs' engines ([`crate::queue_pairs`]); `None` with one.
    pub queue_pair: Option<QueuePair>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            upstream: Upstream::default(),
            max_flows: 4096,
            control: Arc::new(Control::default()),
            tcp_idle_timeout: crate::tcp::IDLE_TIMEOUT,
            queue_pair: None,
        }
    }
}

/// The NAT core for one guest.
#[derive(Debug)]
pub struct Engine {
    plan: NetPlan,
    options: EngineOptions,
    guest_mac: Option<MacAddr>,
    /// Shared by the engines of all queue pairs: one guest, one set of leases.
    dhcp: Arc<Mutex<dhcp::Server>>,
    tftp: tftp::Server,
    /// Identification of the IPv4 packets we send, one sequence for all of them (as slirp).
    ip_ident: Ident,
    counters: Counters,
    pending: VecDeque<Vec<u8>>,
    capture: Option<SharedCapture>,
    /// Reused copy of the frame being handled (its header prefix, or all of a small one).
    frame_buf: Vec<u8>,
    /// Reused buffer the handlers build answers in.
    reply_buf: Vec<u8>,
    epoll: Epoll,
    timer: TimerFd,
    /// The timer ticks every `TICK` (flows exist), or fires once for the next advertisement.
    timer_mode: TimerMode,
    /// Fires once, [`crate::flow::tcp::DELAYED_ACK`] after a batch left ACKs waiting for the
    /// peers' answers; armed while it is set.
    ack_timer: TimerFd,
    ack_timer_armed: bool,
    /// When the next unsolicited router advertisement goes out.
    next_ra: Option<Instant>,
    /// The guest has sent IPv6 and got its first advertisement.
    ipv6_greeted: bool,
    /// The guest's IPv6 address, as its duplicate address detection or what it last sent
    /// showed it: where forwards of an IPv6 host port go when they name no guest address.
    guest_ipv6: Option<Ipv6Addr>,
    /// The port the next client of a unix socket forward comes from, as the guest sees it.
    next_unix_port: u16,
    /// Forwarded ports taken off the epoll set because accepting failed for want of
    /// descriptors or memory, and when they are watched again (at the first tick after).
    paused_forwards: Vec<usize>,
    resume_forwards_at: Option<Instant>,
    /// The forward sockets watched, by their token's index, with their rule's id; a removed
    /// rule's leave `None` behind (indexes are not reused, so that an event already taken
    /// for a removed socket finds nothing).
    forwards: Vec<Option<(u32, Arc<ForwardSocket>)>>,
    /// The ids of the rules whose sockets are in `forwards`.
    rules_watched: Vec<u32>,
    tcp: TcpTable,
    udp: UdpTable,
    ping: PingTable,
    /// Runtime control's record of this engine ([`Control::join`]).
    seat: Seat,
    /// This engine's queue pair has carried a guest frame (forwards wait for it on pairs
    /// other than the first; see [`crate::queue_pairs`]).
    pair_in_use: bool,
    /// Frames other pairs handed over are being handled: they are not handed on again.
    handling_handed: bool,
    /// Reused list of the frames taken from this pair's inbox.
    handed: Vec<HandedFrame>,
    /// Storage for the iovecs of TCP payload a batch gathers (see [`tcp::Deferred`]).
    deferred_iovs: crate::sys::IoVecs,
    /// When the batch of guest frames being handled started: the time its frames are seen at
    /// (one clock read per batch, not per frame).
    batch_started: Option<Instant>,
}

/// Splits the engine into the flow context and the tables, so both can be borrowed at once.
macro_rules! ctx {
    ($self:ident) => {
        Ctx {
            guest_mac: $self.guest_mac.unwrap_or(MacAddr::BROADCAST),
            gateway_mac: $self.plan.gateway_mac,
            mtu: $self.plan.mtu,
            epoll: &$self.epoll,
            ident: &mut $self.ip_ident,
            now: $self.batch_started.unwrap_or_else(Instant::now),
            hand_off: $self.options.queue_pair.is_some() && !$self.handling_handed,
        }
    };
}

// After `ctx!`, which they use.
mod dispatch;
mod forwards;
mod host;
mod ra;
mod stats;

impl Engine {
    /// An engine whose flow tables take no flows, so that nothing it is fed can reach a real
    /// host: for tests and fuzzing of everything else. Panics only if the kernel refuses an
    /// epoll or timer descriptor.
    pub fn isolated(plan: NetPlan) -> Self {
        let options = EngineOptions {
            max_flows: 0,
            ..EngineOptions::default()
        };
        Self::with_options(plan, options).expect("epoll and timerfd")
    }

    pub fn with_options(plan: NetPlan, options: EngineOptions) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        let timer = TimerFd::new().map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        let readable = libc::EPOLLIN as u32;
        epoll::add(&epoll, crate::sys::timer_fd(&timer), readable, Token::Timer)?;
        let ack_timer = TimerFd::new().map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        epoll::add(
            &epoll,
            crate::sys::timer_fd(&ack_timer),
            readable,
            Token::AckTimer,
        )?;
        let mut tcp = TcpTable::new(options.max_flows);
        tcp.set_idle_timeout(options.tcp_idle_timeout);
        tcp.set_guest_forwards(plan.guest_forwards.clone());
        let mut udp = UdpTable::new(options.max_flows);
        let mut ping = PingTable::new(options.max_flows.min(256));
        let dhcp = match &options.queue_pair {
            Some(pair) => {
                tcp.join(pair);
                udp.join(pair);
                ping.join(pair);
                let inbox = crate::sys::event_fd(pair.inbox_fd());
                epoll::add(&epoll, inbox, readable, Token::Inbox)?;
                Arc::clone(&pair.shared().dhcp)
            }
            None => Arc::new(Mutex::new(dhcp::Server::new(&plan))),
        };
        let seat = options.control.join()?;
        let mut engine = Engine {
            dhcp,
            tftp: tftp::Server::new(&plan),
            tcp,
            udp,
            ping,
            plan,
            options,
            guest_mac: None,
            ip_ident: Ident::new(),
            counters: Counters::default(),
            pending: VecDeque::new(),
            capture: None,
            frame_buf: Vec::with_capacity(2048),
            reply_buf: Vec::with_capacity(2048),
            next_ra: None,
            ipv6_greeted: false,
            guest_ipv6: None,
            next_unix_port: UNIX_PEER_PORTS.start,
            paused_forwards: Vec::new(),
            resume_forwards_at: None,
            epoll,
            timer,
            timer_mode: TimerMode::Off,
            ack_timer,
            ack_timer_armed: false,
            forwards: Vec::new(),
            rules_watched: Vec::new(),
            seat,
            pair_in_use: false,
            handling_handed: false,
            handed: Vec::new(),
            deferred_iovs: Default::default(),
            batch_started: None,
        };
        engine.apply_control();
        Ok(engine)
    }

    /// Records every frame, both ways, into `capture`.
    pub fn set_capture(&mut self, capture: SharedCapture) {
        self.capture = Some(capture);
    }

    pub fn plan(&self) -> &NetPlan {
        &self.plan
    }

    /// The guest's MAC, once a frame has shown it.
    pub fn guest_mac(&self) -> Option<MacAddr> {
        self.guest_mac
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Everything counted so far, and what is open: for logs (its `key=value` text form) and
    /// tests.
    pub fn stats(&self) -> Stats {
        Stats {
            engine: self.counters,
            tcp: self.tcp.counters,
            udp: self.udp.counters,
            ping: self.ping.counters,
            tftp: self.tftp.counters,
            open: OpenFlows {
                tcp: self.tcp.len(),
                udp: self.udp.len(),
                ping: self.ping.len(),
                tftp_sessions: self.tftp.sessions(),
            },
        }
    }

    /// Every open flow: TCP, UDP, then ICMP echo.
    pub fn flows(&self) -> Vec<crate::flow::FlowInfo> {
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.tcp.len() + self.udp.len() + self.ping.len());
        self.tcp.flow_infos(now, &mut out);
        self.udp.flow_infos(now, &mut out);
        self.ping.flow_infos(now, &mut out);
        out
    }

    /// What the TCP table did.
    pub fn tcp_counters(&self) -> &tcp::TcpCounters {
        &self.tcp.counters
    }

    /// What the UDP table did.
    pub fn udp_counters(&self) -> &crate::udp::UdpCounters {
        &self.udp.counters
    }

    /// What the TFTP server did.
    pub fn tftp_counters(&self) -> &tftp::TftpCounters {
        &self.tftp.counters
    }

    /// Open flows: TCP, UDP, ICMP.
    pub fn open_flows(&self) -> (usize, usize, usize) {
        (self.tcp.len(), self.udp.len(), self.ping.len())
    }

    /// Whether answers are waiting for guest buffers.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The descriptor to watch for readability: host sockets and the flow timer behind it.
    pub fn host_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Runtime control's descriptor ([`crate::control`]), for the link's event loop to watch
    /// beside [`Engine::host_fd`]: readable when forwards changed or a question waits. Kept
    /// out of the engine's own epoll set so that a link can serve it before the guest's
    /// memory and rings exist, when it serves no host events.
    pub fn control_fd(&self) -> Option<RawFd> {
        self.seat.wake().map(|w| w.as_raw_fd())
    }

    /// Applies runtime control's changes and answers its question; call when
    /// [`Engine::control_fd`] is readable.
    pub fn on_control_event(&mut self) {
        let started = Instant::now();
        self.seat.take_wake();
        self.apply_control();
        // What a request costs the data path: this thread serves the guest too.
        log::debug!("runtime control applied in {:?}", started.elapsed());
    }

    /// Sends a frame to the guest now, or queues it behind those already waiting.
    fn send<L: RxLink>(&mut self, frame: &[u8], rx: &mut L) {
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        if self.pending.is_empty() && tap.send(&[frame]).is_ok() {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.counters.rx_dropped += 1;
            return;
        }
        self.pending.push_back(frame.to_vec());
    }

    /// Sends waiting answers while the guest has room. Returns true when none are left.
    pub fn flush<L: RxLink>(&mut self, rx: &mut L) -> bool {
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        while let Some(frame) = self.pending.front() {
            if tap.send(&[frame]).is_err() {
                return false;
            }
            self.pending.pop_front();
        }
        true
    }

    /// End of a batch: waiting answers, owed ACKs and flows that waited for RX buffers go out.
    pub fn end_batch<L: RxLink>(&mut self, rx: &mut L) {
        if !self.flush(rx) {
            return;
        }
        let mut ctx = ctx!(self);
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        self.tcp.end_batch(&mut ctx, &mut tap);
        self.udp
            .end_batch(&self.plan, &self.options.upstream, &mut ctx, &mut tap);
        if self.tcp.has_delayed_acks() && !self.ack_timer_armed {
            self.ack_timer_armed = self
                .ack_timer
                .reset(crate::flow::tcp::DELAYED_ACK, None)
                .is_ok();
            if !self.ack_timer_armed {
                // No timer: the ACKs go now rather than wait for an answer that may not come.
                let mut ctx = ctx!(self);
                let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
                self.tcp.send_delayed_acks(&mut ctx, &mut tap);
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.options.control.leave(&self.seat);
    }
}

/// What the engine's timer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerMode {
    Off,
    Once,
    Ticking,
}
