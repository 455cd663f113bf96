//! Guest frames, in: Ethernet, then IPv4 or IPv6, then the protocol that serves them (the
//! emulated services answer; TCP, UDP and echo requests go to the flow tables).
//!
//! # Theory of operation
//!
//! Each frame is parsed once, from a copied header prefix, through [`crate::wire`]: the
//! Ethernet header, then the IPv4 or IPv6 header into one [`GuestPacket`] of either family.
//! From there one demultiplexer per transport serves both families: UDP goes to the DHCP,
//! DHCPv6 or TFTP server or else to the NAT, TCP to its flow table, ICMP and ICMPv6 to the
//! local answers and else to a ping socket. A service is handed its request typed (the ARP
//! representation, the checked header, the checked datagram) and only then is the whole frame
//! copied, for the few small messages the services read; what they answer the engine sends,
//! and every [`Verdict`] is counted here.

use super::*;
use crate::service::{Verdict, arp, dhcp, dhcpv6, icmp, ndp, tftp};
use crate::tcp::Deferred;
use crate::wire::ip::{Addrs, GuestHeader, GuestPacket};
use crate::wire::{icmpv4, icmpv6, ipv6, udp};
use smoltcp::wire::{ArpPacket, ArpRepr, IpProtocol};

/// The largest TCP header (a 4-bit data offset in 32-bit words).
const MAX_TCP_HEADER_LEN: usize = 60;
/// Bytes of each frame copied for parsing: Ethernet, the largest IPv4 and TCP headers.
const HEADER_PREFIX: usize = ethernet::HEADER_LEN + ipv4::MAX_HEADER_LEN + MAX_TCP_HEADER_LEN;

impl Engine {
    /// Handles one frame the guest sent.
    pub fn handle_frame<F, L>(&mut self, frame: &F, rx: &mut L)
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        self.handle_batch(std::iter::once(frame), rx);
    }

    /// Handles frames the guest sent, in order, as one batch: a flow's payload from several of
    /// them goes to its socket in one write (see `tcp::Deferred`), done before this returns.
    pub fn handle_frames<F, L>(&mut self, frames: &[F], rx: &mut L)
    where
        F: TxFrame,
        L: RxLink,
    {
        self.handle_batch(frames, rx);
    }

    /// The batch both of the above make: its frames are seen at one time (unless it runs
    /// inside a batch already, as frames handed from other pairs do), and what waits for a
    /// socket is written before the frames are given back.
    fn handle_batch<'m, F, L>(&mut self, frames: impl IntoIterator<Item = &'m F>, rx: &mut L)
    where
        F: TxFrame + ?Sized + 'm,
        L: RxLink,
    {
        let mut iovs = std::mem::take(&mut self.deferred_iovs);
        let mut deferred = Deferred::new(&mut iovs);
        let outermost = self.batch_started.is_none();
        if outermost {
            self.batch_started = Some(Instant::now());
        }
        for frame in frames {
            self.handle_one(frame, &mut deferred, rx);
        }
        self.write_deferred(&mut deferred, rx);
        if outermost {
            self.batch_started = None;
        }
        self.deferred_iovs = iovs;
    }

    /// Writes the TCP payload waiting in `deferred`.
    fn write_deferred<L: RxLink>(&mut self, deferred: &mut Deferred<'_, '_>, rx: &mut L) {
        if deferred.slot().is_none() {
            return;
        }
        let mut ctx = ctx!(self);
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        self.tcp.write_deferred(deferred, &mut ctx, &mut tap);
    }

    fn handle_one<'m, F, L>(&mut self, frame: &'m F, deferred: &mut Deferred<'_, 'm>, rx: &mut L)
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        if !self.handling_handed {
            // Frames other pairs handed over come first: the guest sent them earlier (see
            // `crate::queue_pairs` on order). They were counted, and captured, where they came.
            // Payload waiting from this batch's earlier frames was sent earlier still.
            if self
                .options
                .queue_pair
                .as_ref()
                .is_some_and(|pair| pair.inbox_waiting())
            {
                self.write_deferred(deferred, rx);
                self.on_inbox(rx);
            }
            self.counters.tx_frames += 1;
        }
        let len = frame.len();
        if !(ethernet::HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            self.counters.tx_malformed += 1;
            log::debug!("dropping guest frame of {len} bytes");
            return;
        }
        if let Some(capture) = self.capture.as_ref().filter(|_| !self.handling_handed) {
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
        if !self.pair_in_use {
            self.pair_used();
        }

        self.reply_buf.clear();
        let verdict = match ethertype {
            ethernet::ETHERTYPE_ARP => self.handle_arp(src),
            // A family the plan leaves out (`-4`, `ipv4=off`) is ignored whole, as slirp's
            // ip_input and ip6_input drop it.
            ethernet::ETHERTYPE_IPV4 if self.plan.ipv4.is_none() => Verdict::Unhandled,
            ethernet::ETHERTYPE_IPV6 if self.plan.ipv6.is_none() => Verdict::Unhandled,
            ethernet::ETHERTYPE_IPV4 => self.handle_ipv4(src, frame, deferred, rx),
            ethernet::ETHERTYPE_IPV6 => self.handle_ipv6(frame, deferred, rx),
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

    /// An ARP packet, from the Ethernet source `eth_src`.
    fn handle_arp(&mut self, eth_src: MacAddr) -> Verdict {
        if self.plan.ipv4.is_none() {
            return Verdict::Unhandled;
        }
        let body = self
            .frame_buf
            .get(ethernet::HEADER_LEN..)
            .unwrap_or_default();
        let Ok(packet) = ArpPacket::new_checked(body) else {
            return Verdict::Malformed;
        };
        // Well-formed ARP for another hardware or protocol type: not ours to answer.
        let Ok(repr) = ArpRepr::parse(&packet) else {
            return Verdict::Unhandled;
        };
        let v = arp::handle(&self.plan, eth_src, repr, &mut self.reply_buf);
        if v == Verdict::Reply {
            self.counters.arp_replies += 1;
        }
        v
    }

    fn handle_ipv4<'m, F, L>(
        &mut self,
        eth_src: MacAddr,
        frame: &'m F,
        deferred: &mut Deferred<'_, 'm>,
        rx: &mut L,
    ) -> Verdict
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        let Some(ip) = GuestPacket::ipv4(&self.frame_buf, frame.len()) else {
            return Verdict::Malformed;
        };
        let GuestHeader::V4(v4) = ip.header else {
            return Verdict::Malformed;
        };
        if v4.fragment {
            return Verdict::Unhandled; // no reassembly
        }
        if nat::is_host_internal(ip.dst()) {
            self.counters.tx_host_internal += 1;
            return Verdict::Consumed;
        }
        match v4.protocol {
            IpProtocol::Udp => self.handle_udp(&ip, frame, rx),
            IpProtocol::Tcp => self.handle_tcp(&ip, frame, deferred, rx),
            // Echo requests are all the ICMP served, so without echo nothing is.
            IpProtocol::Icmp if !self.plan.services.icmp => Verdict::Unhandled,
            IpProtocol::Icmp => {
                self.load_whole(frame);
                let Some(message) = ip.payload(&self.frame_buf) else {
                    return Verdict::Malformed;
                };
                let v = icmp::handle(
                    &self.plan,
                    &mut self.ip_ident,
                    eth_src,
                    &v4,
                    message,
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

    fn handle_ipv6<'m, F, L>(
        &mut self,
        frame: &'m F,
        deferred: &mut Deferred<'_, 'm>,
        rx: &mut L,
    ) -> Verdict
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        let Some(ip) = GuestPacket::ipv6(&self.frame_buf, frame.len()) else {
            return Verdict::Malformed;
        };
        let GuestHeader::V6(v6) = ip.header else {
            return Verdict::Malformed;
        };
        if nat::is_host_internal(ip.dst()) {
            self.counters.tx_host_internal += 1;
            return Verdict::Consumed;
        }
        if !v6.src.is_unspecified() {
            self.greet_ipv6(rx);
            self.learn_guest_ipv6(v6.src);
        }
        match v6.next_header {
            IpProtocol::Icmpv6 => self.handle_icmpv6(&ip, &v6, frame),
            IpProtocol::Tcp => self.handle_tcp(&ip, frame, deferred, rx),
            // slirp's udp6_input drops everything from a restricted guest, DHCPv6 and TFTP
            // included.
            IpProtocol::Udp if self.plan.restrict => Verdict::Unhandled,
            IpProtocol::Udp => self.handle_udp(&ip, frame, rx),
            // Extension headers (and anything else) are dropped, as slirp drops them.
            _ => Verdict::Unhandled,
        }
    }

    /// Neighbour discovery and echo; what the local answers leave, an echo request to a real
    /// host, goes to a ping socket.
    fn handle_icmpv6<F>(&mut self, ip: &GuestPacket, v6: &ipv6::GuestHeader, frame: &F) -> Verdict
    where
        F: TxFrame + ?Sized,
    {
        if ip.l4_len > 0
            && let Some(&icmp_type) = self.frame_buf.get(ip.l4_offset)
            && !ndp::serves(&self.plan.services, icmp_type)
        {
            return Verdict::Unhandled;
        }
        self.load_whole(frame);
        let Some(message) = ip.payload(&self.frame_buf) else {
            return Verdict::Malformed;
        };
        let guest_mac = self.guest_mac.unwrap_or(MacAddr::BROADCAST);
        let v = ndp::handle(
            &self.plan,
            self.options.upstream.dns_v6.is_some(),
            guest_mac,
            v6,
            message,
            &mut self.reply_buf,
        );
        let probed = (v != Verdict::Malformed)
            .then(|| ndp::dad_target(v6, message))
            .flatten();
        if let Some(probed) = probed {
            self.learn_guest_ipv6(probed);
        }
        match v {
            Verdict::Reply => self.counters.icmp_replies += 1,
            Verdict::Unhandled => return self.forward_echo(ip),
            _ => {}
        }
        v
    }

    /// A UDP datagram, of either family: for the DHCP, DHCPv6 or TFTP server, else through
    /// the NAT.
    fn handle_udp<F, L>(&mut self, ip: &GuestPacket, frame: &F, rx: &mut L) -> Verdict
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        let Some(ports) = self
            .frame_buf
            .get(ip.l4_offset..ip.l4_offset + udp::HEADER_LEN)
            .and_then(udp::ports)
        else {
            return Verdict::Malformed;
        };
        let dst_port = ports.1;
        match ip.header {
            GuestHeader::V4(v4) if dhcp::is_request(&self.plan, ip.dst(), dst_port) => {
                // Switched off, a request is dropped (as passt drops it), not NAT'd to the
                // host's port 67.
                if !self.plan.services.dhcp {
                    return Verdict::Unhandled;
                }
                self.load_whole(frame);
                let Some(request) = udp::parse_in(ip, &self.frame_buf) else {
                    return Verdict::Malformed;
                };
                let v = self.dhcp.lock().unwrap_or_else(|p| p.into_inner()).handle(
                    &self.plan,
                    &mut self.ip_ident,
                    v4.dst,
                    &request,
                    &mut self.reply_buf,
                );
                if v == Verdict::Reply {
                    self.counters.dhcp_replies += 1;
                }
                v
            }
            GuestHeader::V6(v6) if dhcpv6::is_request(&self.plan, v6.dst, dst_port) => {
                // Dropped when off, as DHCPv4 is.
                if !self.plan.services.dhcpv6 {
                    return Verdict::Unhandled;
                }
                self.load_whole(frame);
                let Some(request) = ip
                    .payload(&self.frame_buf)
                    .and_then(udp::Datagram::unchecked)
                else {
                    return Verdict::Malformed;
                };
                let guest_mac = self.guest_mac.unwrap_or(MacAddr::BROADCAST);
                let v =
                    dhcpv6::handle(&self.plan, guest_mac, v6.src, &request, &mut self.reply_buf);
                if v == Verdict::Reply {
                    self.counters.dhcp_replies += 1;
                }
                v
            }
            _ if tftp::is_request(&self.plan, ip.dst(), dst_port) => self.handle_tftp(ip, frame),
            _ => self.forward_udp(ip, ports, frame, rx),
        }
    }

    /// A datagram for the TFTP server. Over IPv4 it is answered whether or not the guest is
    /// restricted, as slirp answers it before its restriction applies (over IPv6 a restricted
    /// guest's UDP never gets here).
    fn handle_tftp<F: TxFrame + ?Sized>(&mut self, ip: &GuestPacket, frame: &F) -> Verdict {
        self.load_whole(frame);
        let Some(request) = udp::parse_in(ip, &self.frame_buf) else {
            return Verdict::Malformed;
        };
        let mut exchange = tftp::Exchange {
            addrs: ip.addrs(),
            client_port: request.src_port,
            guest_mac: self.guest_mac.unwrap_or(MacAddr::BROADCAST),
            gateway_mac: self.plan.gateway_mac,
            ident: &mut self.ip_ident,
            now: Instant::now(),
        };
        self.tftp
            .handle(&mut exchange, request.payload, &mut self.reply_buf)
    }

    /// A datagram for the NAT.
    fn forward_udp<F, L>(
        &mut self,
        ip: &GuestPacket,
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
        if udp_len < udp::HEADER_LEN {
            return Verdict::Malformed;
        }
        let guest = SocketAddr::new(ip.src(), ports.0);
        let dst = SocketAddr::new(ip.dst(), ports.1);
        let target = nat::outbound(&self.plan, &self.options.upstream, dst);
        let mut ctx = ctx!(self);
        let sent = self.udp.on_datagram(
            &mut ctx,
            guest,
            target,
            frame,
            ip.l4_offset + udp::HEADER_LEN,
            udp_len - udp::HEADER_LEN,
        );
        match sent {
            Sent::Sent => {
                self.arm_timer();
                Verdict::Consumed
            }
            Sent::Dropped => Verdict::Consumed,
            Sent::HeldElsewhere(owner) => {
                self.hand_to(owner, frame);
                Verdict::Consumed
            }
            Sent::Unreachable => {
                self.unreachable(frame, false, rx);
                Verdict::Consumed
            }
        }
    }

    fn handle_tcp<'m, F, L>(
        &mut self,
        ip: &GuestPacket,
        frame: &'m F,
        deferred: &mut Deferred<'_, 'm>,
        rx: &mut L,
    ) -> Verdict
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
        let Some(seg) = tcp::Segment::parse(ip.src(), ip.dst(), l4, ip.l4_offset, ip.l4_len) else {
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
            deferred,
            || nat::outbound_tcp(plan, upstream, seg.remote),
            &mut tap,
        );
        self.arm_timer();
        match outcome {
            SegmentOutcome::Unreachable { host } => self.unreachable(frame, host, rx),
            SegmentOutcome::HeldElsewhere(owner) => self.hand_to(owner, frame),
            SegmentOutcome::Handled => {}
        }
        Verdict::Consumed
    }

    /// An echo request to a real host: through a ping socket. Anything else `icmp` left
    /// (other ICMP types, echoes to the emulated hosts it would not answer) stays unhandled.
    fn forward_echo(&mut self, ip: &GuestPacket) -> Verdict {
        let (request_type, emulated) = match ip.addrs() {
            Addrs::V4 { dst, .. } => (
                icmpv4::ECHO_REQUEST,
                self.plan
                    .ipv4
                    .as_ref()
                    .is_some_and(|v4| dst == v4.gateway || dst == v4.dns),
            ),
            Addrs::V6 { dst, .. } => (
                icmpv6::ECHO_REQUEST,
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
            SocketAddr::new(ip.dst(), 0),
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
        let held = self
            .ping
            .on_request(&mut ctx, ip.src(), ip.dst(), dest, icmp_bytes);
        if let Some(owner) = held {
            // The request was copied whole into `frame_buf` (`load_whole`): hand that over.
            let request = std::mem::take(&mut self.frame_buf);
            self.hand_to(owner, &request[..]);
            self.frame_buf = request;
        }
        self.arm_timer();
        Verdict::Consumed
    }

    /// Gives `frame` to the queue pair `owner`, which holds its flow (see
    /// [`crate::queue_pairs`]); counted as handed off, or dropped when its inbox is full.
    fn hand_to<F: TxFrame + ?Sized>(&mut self, owner: u16, frame: &F) {
        let Some(pair) = &self.options.queue_pair else {
            return;
        };
        if pair.hand_to(owner, frame) {
            self.counters.tx_handed_off += 1;
        } else {
            self.counters.tx_handoff_dropped += 1;
        }
    }

    /// Frames other queue pairs handed to this one: handled as this pair's own, in order.
    pub(super) fn on_inbox<L: RxLink>(&mut self, rx: &mut L) {
        let Some(pair) = self.options.queue_pair.clone() else {
            return;
        };
        let mut handed = std::mem::take(&mut self.handed);
        pair.take_inbox(&mut handed);
        self.handling_handed = true;
        for frame in &handed {
            self.handle_frame(frame, rx);
        }
        self.handling_handed = false;
        handed.clear();
        self.handed = handed;
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
                    icmpv6::UNREACH_ADDRESS
                } else {
                    icmpv6::UNREACH_NO_ROUTE
                };
                ndp::unreachable(v6, &self.frame_buf, code, &mut self.reply_buf)
            }),
            _ => {
                let code = if host {
                    icmpv4::UNREACH_HOST
                } else {
                    icmpv4::UNREACH_NET
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
}
