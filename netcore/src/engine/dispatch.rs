//! Guest frames, in: Ethernet, then IPv4 or IPv6, then the protocol that serves them (the
//! emulated services answer; TCP, UDP and echo requests go to the flow tables).

use super::*;

impl Engine {
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
