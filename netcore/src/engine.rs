//! The engine: takes each guest frame, dispatches it by protocol, sends answers to the guest,
//! and splices flows onto host sockets.
//!
//! # Theory of operation
//!
//! The engine owns all per-guest state (the learned guest MAC, DHCP leases, flow tables,
//! counters) and is driven from one thread, by three kinds of events: a guest frame
//! ([`Engine::handle_frame`]), readiness of its host sockets or timer ([`Engine::poll_host`],
//! after the link's event loop sees [`Engine::host_fd`] readable), and the end of a batch
//! ([`Engine::end_batch`], after a drained TX ring or newly posted RX buffers).
//!
//! A guest frame is copied out only as far as its protocol needs. A bounded header prefix is
//! always copied; control-plane frames (ARP, DHCP, ICMP, TFTP) are small and copied whole into
//! a reused buffer; TCP and UDP payload is never copied here: the flow tables pass it to the
//! kernel as iovecs into the frame.
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
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::Ipv4Packet;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use crate::capture::{SharedCapture, Tap};
use crate::forward::{self, ForwardSocket, Local, Peer};
use crate::ipv4::Ident;
use crate::link::{RxLink, TxFrame};
use crate::nat::{self, Ctx, Target, Upstream};
use crate::ping::PingTable;
use crate::tcp::{SegmentOutcome, TcpTable};
use crate::udp::{Sent, UdpTable};
use crate::{arp, capture, dhcp, dhcpv6, ethernet, icmp, ip, ipv4, ndp, tcp, tftp};

/// The largest frame a guest may hand us: a 64 KiB IP packet behind an Ethernet header.
pub const MAX_FRAME_LEN: usize = 65535 + ethernet::HEADER_LEN;
/// Answers waiting for guest buffers, at most.
const MAX_PENDING: usize = 1024;
/// Bytes of each frame copied for parsing: Ethernet, the largest IPv4 and TCP headers.
const HEADER_PREFIX: usize = ethernet::HEADER_LEN + 60 + 60;
/// The ports clients of unix socket forwards come from, in turn (the IANA dynamic range).
const UNIX_PEER_PORTS: std::ops::Range<u16> = 49152..65535;
/// Connections taken from one forwarded port per readiness event, at most.
const ACCEPTS_PER_EVENT: usize = 16;
/// How often flow timers (retransmission, expiry) are looked at while any flow exists.
const TICK: Duration = Duration::from_millis(100);
/// How long a forwarded port stays unwatched after accepting failed for want of descriptors
/// or memory: its level-triggered event would otherwise come back at once, forever.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Epoll token bases for host sockets: the top byte says which table the rest indexes.
pub const TOKEN_TCP: u64 = 1 << 56;
pub const TOKEN_UDP: u64 = 2 << 56;
pub const TOKEN_ICMP: u64 = 3 << 56;
pub const TOKEN_TIMER: u64 = 4 << 56;
pub const TOKEN_FORWARD: u64 = 5 << 56;
const TOKEN_KIND: u64 = 0xff << 56;

/// What happened to guest frames, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Frames received from the guest.
    pub tx_frames: u64,
    /// Frames sent to the guest.
    pub rx_frames: u64,
    /// Guest frames dropped because they were malformed (bad length, header or checksum).
    pub tx_malformed: u64,
    /// Well-formed guest frames that nothing here serves.
    pub tx_unhandled: u64,
    /// Frames for the guest dropped because too many were waiting for buffers.
    pub rx_dropped: u64,
    pub arp_replies: u64,
    pub dhcp_replies: u64,
    pub icmp_replies: u64,
    /// ICMP destination-unreachable errors we sent for guest packets.
    pub unreachables: u64,
    /// Guest packets to the host's own addresses (loopback, "this host", v4-mapped), dropped
    /// whatever the mapping, as passt drops them: only the gateway may lead to loopback.
    pub tx_host_internal: u64,
    /// Connections to forwarded ports that could not be accepted.
    pub accept_failures: u64,
    /// Times a forwarded port was left unwatched for a while: out of descriptors or memory.
    pub forwards_paused: u64,
}

/// What a protocol handler did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer frame is in the output buffer.
    Reply,
    /// Handled; nothing to send.
    Consumed,
    /// Not for this handler, or not served.
    Unhandled,
    /// Broken beyond use.
    Malformed,
}

/// Settings of the engine that are not part of what the guest sees.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where DNS queries to the DNS address go.
    pub upstream: Upstream,
    /// Most TCP connections (and, separately, UDP and ICMP flows) at once.
    pub max_flows: usize,
    /// The plan's forwarded ports, bound once by the program ([`forward::open`]) and shared
    /// by the engines of successive frontends.
    pub forwards: Arc<[ForwardSocket]>,
    /// How long a TCP connection may go without traffic before it is closed
    /// ([`crate::tcp::IDLE_TIMEOUT`] by default).
    pub tcp_idle_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            upstream: Upstream::default(),
            max_flows: 4096,
            forwards: Arc::new([]),
            tcp_idle_timeout: crate::tcp::IDLE_TIMEOUT,
        }
    }
}

/// The NAT core for one guest.
#[derive(Debug)]
pub struct Engine {
    plan: NetPlan,
    options: EngineOptions,
    guest_mac: Option<MacAddr>,
    dhcp: dhcp::Server,
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
    tcp: TcpTable,
    udp: UdpTable,
    ping: PingTable,
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
            now: Instant::now(),
        }
    };
}

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
        epoll.ctl(
            ControlOperation::Add,
            timer.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_TIMER),
        )?;
        for (i, fwd) in options.forwards.iter().enumerate() {
            // Level-triggered: what one event leaves waiting is reported again.
            epoll.ctl(
                ControlOperation::Add,
                fwd.fd(),
                EpollEvent::new(EventSet::IN, TOKEN_FORWARD | i as u64),
            )?;
        }
        let mut tcp = TcpTable::new(options.max_flows);
        tcp.set_idle_timeout(options.tcp_idle_timeout);
        tcp.set_guest_forwards(plan.guest_forwards.clone());
        Ok(Engine {
            dhcp: dhcp::Server::new(&plan),
            tftp: tftp::Server::new(&plan),
            tcp,
            udp: UdpTable::new(options.max_flows),
            ping: PingTable::new(options.max_flows.min(256)),
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
        })
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

    /// Counters of the flow tables, for logs.
    pub fn flow_counters(&self) -> String {
        format!(
            "tcp {:?} (open {}), udp {:?} (open {}), ping {:?} (open {}), tftp {:?} (sessions {})",
            self.tcp.counters,
            self.tcp.len(),
            self.udp.counters,
            self.udp.len(),
            self.ping.counters,
            self.ping.len(),
            self.tftp.counters,
            self.tftp.sessions()
        )
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

    /// Handles one frame the guest sent.
    pub fn handle_frame<F, L>(&mut self, frame: &F, rx: &mut L)
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        self.counters.tx_frames += 1;
        let len = frame.len();
        if !(ethernet::HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            self.counters.tx_malformed += 1;
            log::debug!("dropping guest frame of {len} bytes");
            return;
        }
        if let Some(capture) = &self.capture {
            let mut whole = vec![0u8; len];
            let n = frame.read_at(0, &mut whole);
            capture::record(capture, &whole[..n]);
        }
        self.load(frame, HEADER_PREFIX);
        let Some((_dst, src, ethertype)) = ethernet::parse_header(&self.frame_buf) else {
            self.counters.tx_malformed += 1;
            return;
        };
        if !src.is_multicast() && src != MacAddr::default() {
            self.guest_mac = Some(src);
        }

        self.reply_buf.clear();
        let verdict = match ethertype {
            ethernet::ETHERTYPE_ARP => {
                let v = arp::handle(&self.plan, &self.frame_buf, &mut self.reply_buf);
                if v == Verdict::Reply {
                    self.counters.arp_replies += 1;
                }
                v
            }
            // A family the plan leaves out (`-4`, `ipv4=off`) is ignored whole, as slirp's
            // ip_input and ip6_input drop it.
            ethernet::ETHERTYPE_IPV4 if self.plan.ipv4.is_none() => Verdict::Unhandled,
            ethernet::ETHERTYPE_IPV6 if self.plan.ipv6.is_none() => Verdict::Unhandled,
            ethernet::ETHERTYPE_IPV4 => self.handle_ipv4(frame, rx),
            ethernet::ETHERTYPE_IPV6 => self.handle_ipv6(frame, rx),
            _ => Verdict::Unhandled,
        };
        match verdict {
            Verdict::Reply => {
                let reply = std::mem::take(&mut self.reply_buf);
                self.send(&reply, rx);
                self.reply_buf = reply;
            }
            Verdict::Consumed => {}
            Verdict::Unhandled => self.counters.tx_unhandled += 1,
            Verdict::Malformed => self.counters.tx_malformed += 1,
        }
    }

    /// Copies all of `frame` into `frame_buf` for a local answer, completing a transport
    /// checksum the guest left to us (offloaded): local handlers check checksums as slirp does.
    fn load_whole<F: TxFrame + ?Sized>(&mut self, frame: &F) {
        self.load(frame, MAX_FRAME_LEN);
        if let Some((start, offset)) = frame.partial_csum()
            && start + offset + 2 <= self.frame_buf.len()
        {
            let sum = !smoltcp::wire::checksum::data(&self.frame_buf[start..]);
            self.frame_buf[start + offset..start + offset + 2].copy_from_slice(&sum.to_be_bytes());
        }
    }

    /// Copies the first `max` bytes of `frame` into `frame_buf`.
    fn load<F: TxFrame + ?Sized>(&mut self, frame: &F, max: usize) {
        self.frame_buf.resize(frame.len().min(max), 0);
        let copied = frame.read_at(0, &mut self.frame_buf);
        self.frame_buf.truncate(copied);
    }

    fn handle_ipv4<F, L>(&mut self, frame: &F, rx: &mut L) -> Verdict
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        let Some(ip) = IpHeader::parse(&self.frame_buf, frame.len()) else {
            return Verdict::Malformed;
        };
        if ip.fragment {
            return Verdict::Unhandled; // no reassembly
        }
        if nat::is_host_internal(ip.dst) {
            self.counters.tx_host_internal += 1;
            return Verdict::Consumed;
        }
        match ip.protocol {
            ipv4::PROTO_UDP => {
                let Some(ports) = self
                    .frame_buf
                    .get(ip.l4_offset..ip.l4_offset + 8)
                    .map(udp_ports)
                else {
                    return Verdict::Malformed;
                };
                if dhcp::is_request(&self.plan, ip.dst, ports.1) {
                    // Switched off, a request is dropped (as passt drops it), not NAT'd to the
                    // host's port 67.
                    if !self.plan.services.dhcp {
                        return Verdict::Unhandled;
                    }
                    self.load_whole(frame);
                    let v = self.dhcp.handle(
                        &self.plan,
                        &mut self.ip_ident,
                        &self.frame_buf,
                        &mut self.reply_buf,
                    );
                    if v == Verdict::Reply {
                        self.counters.dhcp_replies += 1;
                    }
                    return v;
                }
                if tftp::is_request(&self.plan, ip.dst, ports.1) {
                    return self.handle_tftp(&ip, ports.0, frame);
                }
                self.handle_udp(&ip, ports, frame, rx)
            }
            tcp::PROTO_TCP => self.handle_tcp(&ip, frame, rx),
            // Echo requests are all the ICMP served, so without echo nothing is.
            ipv4::PROTO_ICMP if !self.plan.services.icmp => Verdict::Unhandled,
            ipv4::PROTO_ICMP => {
                self.load_whole(frame);
                let v = icmp::handle(
                    &self.plan,
                    &mut self.ip_ident,
                    &self.frame_buf,
                    &mut self.reply_buf,
                );
                match v {
                    Verdict::Reply => self.counters.icmp_replies += 1,
                    Verdict::Unhandled => return self.forward_echo(&ip),
                    _ => {}
                }
                v
            }
            _ => Verdict::Unhandled,
        }
    }

    fn handle_ipv6<F, L>(&mut self, frame: &F, rx: &mut L) -> Verdict
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        let Some(v6) = ndp::Ipv6Header::parse(&self.frame_buf, frame.len()) else {
            return Verdict::Malformed;
        };
        if nat::is_host_internal(IpAddr::V6(v6.dst)) {
            self.counters.tx_host_internal += 1;
            return Verdict::Consumed;
        }
        if !v6.src.is_unspecified() {
            self.greet_ipv6(rx);
            self.learn_guest_ipv6(v6.src);
        }
        let ip = IpHeader {
            src: IpAddr::V6(v6.src),
            dst: IpAddr::V6(v6.dst),
            protocol: v6.next_header,
            fragment: false,
            l4_offset: v6.l4_offset,
            l4_len: v6.l4_len,
        };
        match v6.next_header {
            ndp::ICMPV6_PROTO => {
                if ip.l4_len > 0
                    && let Some(&icmp_type) = self.frame_buf.get(ip.l4_offset)
                    && !ndp::serves(&self.plan.services, icmp_type)
                {
                    return Verdict::Unhandled;
                }
                self.load_whole(frame);
                let guest_mac = self.guest_mac.unwrap_or(MacAddr::BROADCAST);
                let v = ndp::handle(
                    &self.plan,
                    self.options.upstream.dns_v6.is_some(),
                    guest_mac,
                    &v6,
                    &self.frame_buf,
                    &mut self.reply_buf,
                );
                if v != Verdict::Malformed
                    && let Some(probed) = ndp::dad_target(&v6, &self.frame_buf)
                {
                    self.learn_guest_ipv6(probed);
                }
                match v {
                    Verdict::Reply => self.counters.icmp_replies += 1,
                    Verdict::Unhandled => return self.forward_echo(&ip),
                    _ => {}
                }
                v
            }
            tcp::PROTO_TCP => self.handle_tcp(&ip, frame, rx),
            // slirp's udp6_input drops everything from a restricted guest, DHCPv6 and TFTP
            // included.
            ipv4::PROTO_UDP if self.plan.restrict => Verdict::Unhandled,
            ipv4::PROTO_UDP => {
                let Some(ports) = self
                    .frame_buf
                    .get(ip.l4_offset..ip.l4_offset + 8)
                    .map(udp_ports)
                else {
                    return Verdict::Malformed;
                };
                if dhcpv6::is_request(&self.plan, &v6, ports.1) {
                    // Dropped when off, as DHCPv4 is.
                    if !self.plan.services.dhcpv6 {
                        return Verdict::Unhandled;
                    }
                    self.load_whole(frame);
                    let guest_mac = self.guest_mac.unwrap_or(MacAddr::BROADCAST);
                    let v = dhcpv6::handle(
                        &self.plan,
                        guest_mac,
                        &v6,
                        &self.frame_buf,
                        &mut self.reply_buf,
                    );
                    if v == Verdict::Reply {
                        self.counters.dhcp_replies += 1;
                    }
                    return v;
                }
                if tftp::is_request(&self.plan, ip.dst, ports.1) {
                    return self.handle_tftp(&ip, ports.0, frame);
                }
                self.handle_udp(&ip, ports, frame, rx)
            }
            // Extension headers (and anything else) are dropped, as slirp drops them.
            _ => Verdict::Unhandled,
        }
    }

    /// A datagram for the TFTP server. Over IPv4 it is answered whether or not the guest is
    /// restricted, as slirp answers it before its restriction applies (over IPv6 a restricted
    /// guest's UDP never gets here).
    fn handle_tftp<F: TxFrame + ?Sized>(
        &mut self,
        ip: &IpHeader,
        client_port: u16,
        frame: &F,
    ) -> Verdict {
        self.load_whole(frame);
        let Some(msg) = ip::udp_payload(&self.frame_buf, ip.src, ip.dst, ip.l4_offset, ip.l4_len)
        else {
            return Verdict::Malformed;
        };
        let mut exchange = tftp::Exchange {
            client: SocketAddr::new(ip.src, client_port),
            server: ip.dst,
            guest_mac: self.guest_mac.unwrap_or(MacAddr::BROADCAST),
            gateway_mac: self.plan.gateway_mac,
            ident: &mut self.ip_ident,
            now: Instant::now(),
        };
        self.tftp.handle(&mut exchange, msg, &mut self.reply_buf)
    }

    fn handle_udp<F, L>(
        &mut self,
        ip: &IpHeader,
        ports: (u16, u16),
        frame: &F,
        rx: &mut L,
    ) -> Verdict
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        // `--no-udp`: NAT'd UDP and the DNS relay; the emulated servers answered before this.
        if !self.plan.services.udp {
            return Verdict::Unhandled;
        }
        let udp_len = ip.l4_len;
        if udp_len < 8 {
            return Verdict::Malformed;
        }
        let guest = SocketAddr::new(ip.src, ports.0);
        let dst = SocketAddr::new(ip.dst, ports.1);
        let target = nat::outbound(&self.plan, &self.options.upstream, dst);
        let mut ctx = ctx!(self);
        let sent = self.udp.on_datagram(
            &mut ctx,
            guest,
            target,
            frame,
            ip.l4_offset + 8,
            udp_len - 8,
        );
        match sent {
            Sent::Sent => {
                self.arm_timer();
                Verdict::Consumed
            }
            Sent::Dropped => Verdict::Consumed,
            Sent::Unreachable => {
                self.unreachable(frame, false, rx);
                Verdict::Consumed
            }
        }
    }

    fn handle_tcp<F, L>(&mut self, ip: &IpHeader, frame: &F, rx: &mut L) -> Verdict
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        // `--no-tcp`: no answer at all, not even a reset (as passt discards the segment).
        if !self.plan.services.tcp {
            return Verdict::Unhandled;
        }
        let Some(l4) = self.frame_buf.get(ip.l4_offset..) else {
            return Verdict::Malformed;
        };
        let Some(seg) = tcp::Segment::parse(ip.src, ip.dst, l4, ip.l4_offset, ip.l4_len) else {
            return Verdict::Malformed;
        };
        let plan = &self.plan;
        let upstream = &self.options.upstream;
        let mut ctx = ctx!(self);
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        let outcome = self.tcp.on_segment(
            &mut ctx,
            &seg,
            frame,
            || nat::outbound_tcp(plan, upstream, seg.remote),
            &mut tap,
        );
        self.arm_timer();
        if let SegmentOutcome::Unreachable { host } = outcome {
            self.unreachable(frame, host, rx);
        }
        Verdict::Consumed
    }

    /// An echo request to a real host: through a ping socket. Anything else `icmp` left
    /// (other ICMP types, echoes to the emulated hosts it would not answer) stays unhandled.
    fn forward_echo(&mut self, ip: &IpHeader) -> Verdict {
        let (request_type, emulated) = match ip.dst {
            IpAddr::V4(dst) => (
                icmp::ECHO_REQUEST,
                self.plan
                    .ipv4
                    .as_ref()
                    .is_some_and(|v4| dst == v4.gateway || dst == v4.dns),
            ),
            IpAddr::V6(dst) => (
                ndp::ECHO_REQUEST,
                self.plan
                    .ipv6
                    .as_ref()
                    .is_some_and(|v6| ndp::is_emulated(v6, dst)),
            ),
        };
        let is_request = self.frame_buf.get(ip.l4_offset) == Some(&request_type);
        if !is_request || emulated {
            return Verdict::Unhandled;
        }
        let dest = match nat::outbound(
            &self.plan,
            &self.options.upstream,
            SocketAddr::new(ip.dst, 0),
        ) {
            Target::Connect(dest) => dest.ip(),
            Target::Unreachable | Target::Restricted | Target::Command(_) => {
                return Verdict::Unhandled;
            }
        };
        let Some(icmp_bytes) = self.frame_buf.get(ip.l4_offset..ip.l4_offset + ip.l4_len) else {
            return Verdict::Malformed;
        };
        let mut ctx = ctx!(self);
        self.ping
            .on_request(&mut ctx, ip.src, ip.dst, dest, icmp_bytes);
        self.arm_timer();
        Verdict::Consumed
    }

    /// Tells the guest that the packet in `frame` could not be delivered: ICMP or ICMPv6
    /// destination unreachable, "host" or "address" when the kernel said so (`EHOSTUNREACH`).
    fn unreachable<F, L>(&mut self, frame: &F, host: bool, rx: &mut L)
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        self.load(
            frame,
            ethernet::HEADER_LEN + icmp::MAX_QUOTE.max(ndp::MAX_QUOTE),
        );
        self.reply_buf.clear();
        let built = match ethernet::parse_header(&self.frame_buf) {
            Some((_, _, ethernet::ETHERTYPE_IPV6)) => self.plan.ipv6.as_ref().is_some_and(|v6| {
                let code = if host {
                    ndp::UNREACH_ADDRESS
                } else {
                    ndp::UNREACH_NO_ROUTE
                };
                ndp::unreachable(v6, &self.frame_buf, code, &mut self.reply_buf)
            }),
            _ => {
                let code = if host {
                    icmp::UNREACH_HOST
                } else {
                    icmp::UNREACH_NET
                };
                icmp::unreachable(
                    &self.plan,
                    &mut self.ip_ident,
                    &self.frame_buf,
                    code,
                    &mut self.reply_buf,
                )
            }
        };
        if built {
            self.counters.unreachables += 1;
            let reply = std::mem::take(&mut self.reply_buf);
            self.send(&reply, rx);
            self.reply_buf = reply;
        }
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
    }

    /// Whether guest segments since the last call made room for host data, so that host socket
    /// events are likely waiting already: a link that then calls [`Engine::poll_host`] before
    /// telling the guest delivers that data with the same notification, and is not woken for
    /// those events afterwards.
    pub fn host_events_likely(&mut self) -> bool {
        self.tcp.take_socket_events_waiting()
    }

    /// Serves host sockets and timers that are ready; call when [`Engine::host_fd`] is readable.
    pub fn poll_host<L: RxLink>(&mut self, rx: &mut L) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("epoll on host sockets: {e}");
                    0
                }
            };
            for ev in &events[..n] {
                self.host_event(ev.data(), ev.events(), rx);
            }
            if n < events.len() {
                break;
            }
        }
        self.end_batch(rx);
        let now = Instant::now();
        self.router_advert_tick(now, rx);
        if self.tcp.is_empty()
            && self.udp.is_empty()
            && self.ping.is_empty()
            && self.paused_forwards.is_empty()
        {
            self.idle_timer(now);
        }
    }

    /// Starts the engine's own timers (the unsolicited router advertisements); the link calls
    /// this once the guest can receive.
    pub fn start<L: RxLink>(&mut self, rx: &mut L) {
        if self.next_ra.is_none() && self.timer_mode == TimerMode::Off {
            let now = Instant::now();
            self.router_advert_tick(now, rx);
            self.idle_timer(now);
        }
    }

    fn host_event<L: RxLink>(&mut self, token: u64, events: u32, rx: &mut L) {
        let slot = (token & !TOKEN_KIND) as usize;
        if token & TOKEN_KIND == TOKEN_FORWARD {
            self.on_forward_event(slot, rx);
            return;
        }
        if token & TOKEN_KIND == TOKEN_TIMER {
            self.resume_forwards(Instant::now());
        }
        let mut ctx = ctx!(self);
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        match token & TOKEN_KIND {
            TOKEN_TCP => self.tcp.on_socket_event(slot, events, &mut ctx, &mut tap),
            TOKEN_UDP => self.udp.on_socket_event(
                slot,
                events,
                &self.plan,
                &self.options.upstream,
                &mut ctx,
                &mut tap,
            ),
            TOKEN_ICMP => self.ping.on_socket_event(slot, &mut ctx, &mut tap),
            TOKEN_TIMER => {
                let _ = self.timer.wait();
                self.tcp.on_tick(&mut ctx, &mut tap);
                self.udp.on_tick(ctx.now);
                self.ping.on_tick(ctx.now);
            }
            _ => log::debug!("unknown host event token {token:#x}"),
        }
    }

    /// The next port of [`UNIX_PEER_PORTS`].
    fn unix_peer_port(&mut self) -> u16 {
        let port = self.next_unix_port;
        self.next_unix_port = if port + 1 == UNIX_PEER_PORTS.end {
            UNIX_PEER_PORTS.start
        } else {
            port + 1
        };
        port
    }

    /// Notes `addr` as the guest's IPv6 address (for forwards) unless it is link-local or
    /// multicast: from the source of what it sends, or from its duplicate address detection,
    /// so that forwards reach a guest that has configured an address but not used it yet.
    fn learn_guest_ipv6(&mut self, addr: Ipv6Addr) {
        if !addr.is_multicast() && !addr.is_unicast_link_local() && !addr.is_unspecified() {
            self.guest_ipv6 = Some(addr);
        }
    }

    /// A forwarded port is readable: its waiting connections become guest connections.
    fn on_forward_event<L: RxLink>(&mut self, index: usize, rx: &mut L) {
        let forwards = Arc::clone(&self.options.forwards);
        let Some(fwd) = forwards.get(index) else {
            return;
        };
        if fwd.proto == netplan::Proto::Udp {
            self.adopt_udp_forward(fwd, rx);
            return;
        }
        // A bounded number per event, so that a flood on one port cannot starve the rest;
        // the level-triggered event comes back for what is left.
        for _ in 0..ACCEPTS_PER_EVENT {
            let (sock, peer) = match crate::sys::accept(fwd) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => break,
                Err(e) => {
                    self.counters.accept_failures += 1;
                    let shortage = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    if shortage {
                        crate::ratelimit::guest_log!(
                            log::Level::Warn,
                            "{fwd:?}: {e}; not accepting for {ACCEPT_BACKOFF:?}"
                        );
                        self.pause_forward(index, fwd);
                    } else {
                        log::debug!("accept on {fwd:?}: {e}");
                    }
                    break;
                }
            };
            let peer = match peer {
                Some(addr) => Peer::Inet(addr),
                None => Peer::Unix {
                    port: self.unix_peer_port(),
                },
            };
            let Some((guest, remote)) = self.forward_guest_side(fwd, peer) else {
                log::debug!("{fwd:?}: no guest address to take {peer:?}");
                self.tcp.counters.no_guest_address += 1;
                continue;
            };
            log::debug!("{fwd:?}: {peer:?} comes to {guest} from {remote}");
            let unix = matches!(fwd.local, Local::Unix(_));
            let mut ctx = ctx!(self);
            let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
            let key = tcp::FlowKey { guest, remote };
            self.tcp.on_accepted(sock, key, unix, &mut ctx, &mut tap);
        }
        self.arm_timer();
    }

    /// Stops watching forward `index` for [`ACCEPT_BACKOFF`]: the connection that could not be
    /// accepted stays in the listener's queue, and its level-triggered event would come back
    /// at once.
    fn pause_forward(&mut self, index: usize, fwd: &ForwardSocket) {
        if self.paused_forwards.contains(&index) {
            return;
        }
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            fwd.fd(),
            EpollEvent::new(EventSet::IN, 0),
        );
        self.paused_forwards.push(index);
        self.counters.forwards_paused += 1;
        self.resume_forwards_at = Some(Instant::now() + ACCEPT_BACKOFF);
        self.arm_timer();
    }

    /// Watches paused forwards again once their backoff is over: they take their waiting
    /// connections if descriptors freed up, or pause again.
    fn resume_forwards(&mut self, now: Instant) {
        if self.resume_forwards_at.is_none_or(|at| now < at) {
            return;
        }
        self.resume_forwards_at = None;
        for index in std::mem::take(&mut self.paused_forwards) {
            if let Some(fwd) = self.options.forwards.get(index) {
                let _ = self.epoll.ctl(
                    ControlOperation::Add,
                    fwd.fd(),
                    EpollEvent::new(EventSet::IN, TOKEN_FORWARD | index as u64),
                );
            }
        }
    }

    /// Where a connection or datagram from `peer` to forward `fwd` goes in the guest, and
    /// whom it comes from there (see [`forward::guest_side`]).
    fn forward_guest_side(
        &self,
        fwd: &ForwardSocket,
        peer: Peer,
    ) -> Option<(SocketAddr, SocketAddr)> {
        forward::guest_side(
            fwd,
            &self.plan,
            &self.options.upstream,
            self.guest_ipv6,
            peer,
        )
    }

    /// The first datagram on a forwarded UDP port: the port's socket becomes the UDP flow of
    /// the guest socket it forwards to, and this epoll entry gives way to the flow's. While the
    /// guest has no address of the port's family, datagrams are dropped and counted.
    fn adopt_udp_forward<L: RxLink>(&mut self, fwd: &ForwardSocket, rx: &mut L) {
        let Some(peer) = crate::sys::peek_source(fwd) else {
            // Nothing to take, or an error the level-triggered event would report forever.
            let _ = crate::sys::discard_datagram(fwd);
            return;
        };
        let Some((guest, _)) = self
            .forward_guest_side(fwd, Peer::Inet(peer))
            .filter(|(guest, _)| guest.is_ipv6() == fwd.local.is_ipv6())
        else {
            // Dropped, or the level-triggered event would spin until the guest has an address
            // (of the port's family: UDP is not translated between families).
            let _ = crate::sys::discard_datagram(fwd);
            self.udp.counters.no_guest_address += 1;
            return;
        };
        let copy = match fwd.try_clone_fd() {
            Ok(copy) => copy,
            Err(e) => {
                crate::ratelimit::guest_log!(log::Level::Warn, "{fwd:?}: {e}");
                let _ = crate::sys::discard_datagram(fwd);
                return;
            }
        };
        let mut ctx = ctx!(self);
        let Some(slot) = self.udp.adopt_forward(&mut ctx, guest, copy) else {
            log::debug!("{fwd:?}: no UDP flow for {guest}");
            let _ = crate::sys::discard_datagram(fwd);
            return;
        };
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            fwd.fd(),
            EpollEvent::new(EventSet::IN, 0),
        );
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        self.udp.on_socket_event(
            slot,
            0,
            &self.plan,
            &self.options.upstream,
            &mut ctx,
            &mut tap,
        );
        self.arm_timer();
    }

    /// Flows exist: tick regularly for their timers.
    fn arm_timer(&mut self) {
        if self.timer_mode != TimerMode::Ticking && self.timer.reset(TICK, Some(TICK)).is_ok() {
            self.timer_mode = TimerMode::Ticking;
        }
    }

    /// No flows: wake only for the next router advertisement, if IPv6 is on.
    fn idle_timer(&mut self, now: Instant) {
        let Some(next_ra) = self.next_ra else {
            if self.timer_mode != TimerMode::Off && self.timer.clear().is_ok() {
                self.timer_mode = TimerMode::Off;
            }
            return;
        };
        let wait = next_ra
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if self.timer.reset(wait, None).is_ok() {
            self.timer_mode = TimerMode::Once;
        }
    }

    /// The guest's first IPv6 frame from an address of its own (its link-local address is
    /// up: an MLD report or a solicitation) gets one router advertisement at once, besides
    /// slirp's answers to solicitations and periodic ones: a guest whose own solicitation went
    /// missing still configures its address then, not minutes later. Frames from `::` (before
    /// the guest has an address) do not count: a guest that flushes its addresses while it
    /// starts DHCP would lose what that early advertisement configured.
    fn greet_ipv6<L: RxLink>(&mut self, rx: &mut L) {
        if self.ipv6_greeted {
            return;
        }
        self.ipv6_greeted = true;
        let Some(v6) = advertised_ipv6(&self.plan) else {
            return;
        };
        let mut ra = Vec::new();
        ndp::router_advert(v6, self.options.upstream.dns_v6.is_some(), &mut ra);
        self.send(&ra, rx);
    }

    /// Sends the periodic router advertisement when due and schedules the next one, at a
    /// random 200 to 600 s as slirp does.
    fn router_advert_tick<L: RxLink>(&mut self, now: Instant, rx: &mut L) {
        let Some(v6) = advertised_ipv6(&self.plan) else {
            return;
        };
        if self.next_ra.is_some_and(|t| t <= now) {
            self.reply_buf.clear();
            ndp::router_advert(
                v6,
                self.options.upstream.dns_v6.is_some(),
                &mut self.reply_buf,
            );
            let ra = std::mem::take(&mut self.reply_buf);
            self.send(&ra, rx);
            self.reply_buf = ra;
            self.next_ra = None;
        }
        if self.next_ra.is_none() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            self.next_ra = Some(now + Duration::from_secs(200 + u64::from(nanos % 401)));
        }
    }
}

/// What the engine's timer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerMode {
    Off,
    Once,
    Ticking,
}

/// The IPv6 side of `plan` when router advertisements go out (IPv6 on, and neither
/// `--no-ndp` nor `--no-ra`): no greeting and no periodic advertisement otherwise.
fn advertised_ipv6(plan: &NetPlan) -> Option<&netplan::Ipv6Plan> {
    plan.ipv6
        .as_ref()
        .filter(|_| plan.services.router_advertisements())
}

fn udp_ports(udp: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([udp[0], udp[1]]),
        u16::from_be_bytes([udp[2], udp[3]]),
    )
}

/// The IPv4 header of a guest frame, checked from the copied prefix.
#[derive(Debug, Clone, Copy)]
struct IpHeader {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    fragment: bool,
    /// Where the L4 header starts in the frame, and the L4 length (to the IP total length).
    l4_offset: usize,
    l4_len: usize,
}

impl IpHeader {
    /// Checks version, header length and checksum, and that the total length fits the frame.
    fn parse(prefix: &[u8], frame_len: usize) -> Option<IpHeader> {
        let ip_bytes = prefix.get(ethernet::HEADER_LEN..)?;
        let packet = Ipv4Packet::new_unchecked(ip_bytes);
        if ip_bytes.len() < ipv4::HEADER_LEN || packet.version() != 4 {
            return None;
        }
        let header_len = usize::from(packet.header_len());
        let total_len = usize::from(packet.total_len());
        if header_len < ipv4::HEADER_LEN
            || header_len > ip_bytes.len()
            || total_len < header_len
            || ethernet::HEADER_LEN + total_len > frame_len
            || !packet.verify_checksum()
        {
            return None;
        }
        Some(IpHeader {
            src: IpAddr::V4(packet.src_addr()),
            dst: IpAddr::V4(packet.dst_addr()),
            protocol: u8::from(packet.next_header()),
            fragment: packet.more_frags() || packet.frag_offset() != 0,
            l4_offset: ethernet::HEADER_LEN + header_len,
            l4_len: total_len - header_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::MemoryLink;
    use netplan::Services;

    fn engine(services: Services) -> Engine {
        Engine::isolated(NetPlan {
            services,
            ..NetPlan::slirp_default()
        })
    }

    /// The unsolicited advertisements: scheduled from `start`, sent when due, and neither
    /// while `--no-ra` or `--no-ndp` holds.
    #[test]
    fn periodic_router_advertisements_only_while_advertising() {
        let cases = [
            (Services::ALL, true),
            (
                Services {
                    ra: false,
                    ..Services::ALL
                },
                false,
            ),
            (
                Services {
                    ndp: false,
                    ..Services::ALL
                },
                false,
            ),
        ];
        for (services, advertises) in cases {
            let mut e = engine(services);
            let mut link = MemoryLink::new();
            e.start(&mut link);
            assert_eq!(e.next_ra.is_some(), advertises, "{services:?}");
            assert_eq!(e.timer_mode == TimerMode::Once, advertises, "{services:?}");
            // Due now.
            let now = Instant::now();
            e.next_ra = Some(now);
            e.router_advert_tick(now, &mut link);
            let sent = link.take();
            assert_eq!(sent.len(), usize::from(advertises), "{services:?}");
            if advertises {
                assert_eq!(sent[0][54], 134, "a router advertisement");
                assert!(e.next_ra.is_some_and(|t| t > now), "the next one scheduled");
            }
        }
    }
}
