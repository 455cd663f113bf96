//! The engine with its flow tables on: guest frames (raw, or TCP, UDP and ICMP built from
//! fuzzed fields with valid checksums, some left for the engine to complete as virtio
//! `NEEDS_CSUM` frames do) on a link with few receive buffers, and host peers that answer.
//!
//! # What the guest can reach
//!
//! Flows become real host sockets, so every frame's destination is rewritten before the
//! engine sees it: IPv4 to the gateway (which stands for the host's loopback), the DNS
//! address, the limited broadcast or an address the NAT refuses; IPv6 to the emulated hosts or
//! the prefix (the host's `::1`) or multicast and link-local addresses. Transport ports toward
//! the host are rewritten to the port this harness holds on loopback (a TCP listener and a UDP
//! socket on the same port per family, the DNS upstream being that port too), or to the
//! emulated servers' UDP ports, which never reach the NAT. So the engine only ever connects to
//! this process, on loopback.
//!
//! Guest frames reach the engine in batches of up to four, as a TX ring's do
//! ([`Engine::handle_frames`]), so a flow's payload may wait across frames for one write.
//!
//! # Each input on its own
//!
//! An input gets a fresh engine and link, so a finding replays alone. At its end the engine
//! (and with it every flow socket) is dropped, and the connections and datagrams it left at the
//! harness's sockets are drained; the number of open descriptors is checked every few thousand
//! runs, so a descriptor leak is a finding too.

use std::io::{Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::sync::{Mutex, OnceLock};

use netcore::link::{RxOffloads, TxFrame};
use netcore::nat::Upstream;
use netcore::{Engine, EngineOptions, MemoryLink};
use netplan::{NetPlan, Services};

use crate::bytes::*;

/// A guest frame with an optional virtio partial checksum.
struct Frame<'a> {
    bytes: &'a [u8],
    partial_csum: Option<(usize, usize)>,
}

impl TxFrame for Frame<'_> {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        self.bytes.read_at(offset, buf)
    }

    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut netcore::link::SendIovs<'_, 'm>) {
        self.bytes.iovecs(offset, len, out);
    }

    fn partial_csum(&self) -> Option<(usize, usize)> {
        self.partial_csum
    }
}

/// The harness's own loopback peers, made once per process.
struct Host {
    /// Per family (IPv4, then IPv6 where the host has `::1`), a TCP listener and a UDP socket
    /// on the same port, so that whatever protocol a frame carries to that port, it reaches
    /// this process.
    listeners: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    port: [u16; 2],
    runs: u64,
    /// Descriptors open between runs, counted at the first check.
    baseline_fds: Option<usize>,
}

/// A TCP listener and a UDP socket on the same port of `ip`.
fn bind_pair(ip: IpAddr) -> Option<(TcpListener, UdpSocket)> {
    for _ in 0..64 {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).ok()?;
        let port = listener.local_addr().ok()?.port();
        if let Ok(udp) = UdpSocket::bind(SocketAddr::new(ip, port)) {
            listener.set_nonblocking(true).ok()?;
            udp.set_nonblocking(true).ok()?;
            return Some((listener, udp));
        }
    }
    None
}

impl Host {
    fn new() -> Host {
        let (l4, u4) = bind_pair(Ipv4Addr::LOCALHOST.into()).expect("loopback sockets");
        let port4 = l4.local_addr().map_or(0, |a| a.port());
        let mut listeners = vec![l4];
        let mut udp = vec![u4];
        // Without IPv6 loopback, IPv6 flows fail to connect, and use the IPv4 port number.
        let mut port6 = port4;
        if let Some((l6, u6)) = bind_pair(Ipv6Addr::LOCALHOST.into()) {
            port6 = l6.local_addr().map_or(0, |a| a.port());
            listeners.push(l6);
            udp.push(u6);
        }
        Host {
            listeners,
            udp,
            port: [port4, port6],
            runs: 0,
            baseline_fds: None,
        }
    }

    fn upstream(&self) -> Upstream {
        Upstream {
            dns_v4: self.udp[0].local_addr().ok(),
            dns_v6: self.udp.get(1).and_then(|u| u.local_addr().ok()),
        }
    }

    /// Takes the connections and datagrams a run left behind.
    fn drain(&mut self) {
        for l in &self.listeners {
            while l.accept().is_ok() {}
        }
        let mut buf = [0u8; 64];
        for u in &self.udp {
            while u.recv_from(&mut buf).is_ok() {}
        }
    }

    /// Every few thousand runs: the descriptors open now are the ones open after the first
    /// runs (a few spare for libFuzzer's own files).
    fn check_fds(&mut self) {
        self.runs += 1;
        if self.runs % 4096 != 1 {
            return;
        }
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let open = dir.count();
        match self.baseline_fds {
            None => self.baseline_fds = Some(open),
            Some(base) => assert!(
                open <= base + 8,
                "descriptor leak: {open} open after {} runs, {base} at first",
                self.runs
            ),
        }
    }
}

fn host() -> &'static Mutex<Host> {
    static HOST: OnceLock<Mutex<Host>> = OnceLock::new();
    HOST.get_or_init(|| Mutex::new(Host::new()))
}

/// A plan varied by two bytes: families, services, restriction, MTU, gateway mapping, TFTP.
fn plan(a: u8, b: u8) -> NetPlan {
    let mut plan = NetPlan::slirp_default();
    match a & 3 {
        1 => plan.ipv6 = None,
        2 => plan.ipv4 = None,
        _ => {}
    }
    plan.restrict = a & 4 != 0;
    plan.map_gateway_to_loopback = a & 8 == 0;
    plan.mtu = [1500, 576, 9000, 1280][usize::from(a >> 4 & 3)];
    if a & 64 != 0 {
        plan.tftp_root = Some(crate::parsers::tftp_root().clone());
    }
    if b & 0x80 != 0 {
        plan.services = Services {
            dhcp: b & 1 == 0,
            dhcpv6: b & 2 == 0,
            ndp: b & 4 == 0,
            ra: b & 8 == 0,
            tcp: b & 16 == 0,
            udp: b & 32 == 0,
            icmp: b & 64 == 0,
        };
    }
    plan
}

/// Guest TCP ports the structured segments come from, and per port the next sequence number
/// each side is expected to use (learnt from the segments sent and seen).
const GUEST_PORTS: [u16; 4] = [40000, 40001, 40002, 40003];

#[derive(Default)]
struct Seqs {
    guest_next: [u32; 4],
    peer_next: [u32; 4],
}

impl Seqs {
    /// Learns the engine's sequence numbers from the TCP segments it sent the guest.
    fn learn(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            let Some((l4, ip_payload_len)) = transport_of(f, PROTO_TCP) else {
                continue;
            };
            let Some(tcp) = f.get(l4..l4 + 20) else {
                continue;
            };
            let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            let Some(i) = GUEST_PORTS.iter().position(|&p| p == dport) else {
                continue;
            };
            let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            let header = usize::from(tcp[12] >> 4) * 4;
            let flags = tcp[13];
            let data = ip_payload_len.saturating_sub(header) as u32;
            let syn_fin = u32::from(flags & 2 != 0) + u32::from(flags & 1 != 0);
            self.peer_next[i] = seq.wrapping_add(data).wrapping_add(syn_fin);
        }
    }
}

/// Where the transport header of `protocol` lies in a frame toward the guest, and the IP
/// payload length.
fn transport_of(f: &[u8], protocol: u8) -> Option<(usize, usize)> {
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0800 => {
            let ihl = usize::from(f.get(14)? & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([*f.get(16)?, *f.get(17)?]));
            (*f.get(23)? == protocol).then(|| (14 + ihl, total.saturating_sub(ihl)))
        }
        0x86dd => {
            let len = usize::from(u16::from_be_bytes([*f.get(18)?, *f.get(19)?]));
            (*f.get(20)? == protocol).then_some((54, len))
        }
        _ => None,
    }
}

/// IPv4 destinations a guest frame may have here: the gateway (the host's loopback, or
/// refused without the mapping), the DNS address, the limited broadcast (loopback too), and
/// addresses the NAT refuses. None leads off this machine.
const V4_DESTS: [Ipv4Addr; 6] = [
    GATEWAY,
    DNS,
    Ipv4Addr::BROADCAST,
    Ipv4Addr::UNSPECIFIED,
    Ipv4Addr::new(224, 0, 0, 1),
    Ipv4Addr::new(239, 255, 255, 250),
];

/// IPv6 destinations: the emulated hosts, the prefix (the host's loopback), multicast and
/// link-local addresses (refused).
const V6_DESTS: [Ipv6Addr; 7] = [
    GATEWAY6,
    DNS6,
    Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0x99),
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
    GUEST_IP6,
];

/// The destination port for a packet of `protocol` to `dst`: the harness's own port, the DNS
/// port of the DNS address (the upstream is the harness's port), a port the DNS address does
/// not serve, or a UDP port an emulated server takes before the NAT sees it.
fn safe_port(host: &Host, dst: IpAddr, protocol: u8, choice: u8) -> u16 {
    let own = host.port[usize::from(dst.is_ipv6())];
    let is_dns = dst == IpAddr::V4(DNS) || dst == IpAddr::V6(DNS6);
    let is_gateway = dst == IpAddr::V4(GATEWAY) || dst == IpAddr::V6(GATEWAY6);
    let udp = protocol == PROTO_UDP;
    match choice % 4 {
        0 if is_dns => 53,
        1 if is_dns => 5353,
        1 if is_gateway && udp => 69,
        2 if udp && (dst == IpAddr::V4(GATEWAY) || dst == IpAddr::V4(Ipv4Addr::BROADCAST)) => 67,
        2 if udp && dst == IpAddr::V6(GATEWAY6) => 547,
        _ => own,
    }
}

/// Rewrites a raw guest frame's IP destination and transport ports to safe ones, as the engine
/// will parse them; fixes its checksums when `fix` says so.
fn sanitise(host: &Host, frame: &mut [u8], choice: u8, fix: bool) {
    let ethertype = match frame.get(12..14) {
        Some(t) => u16::from_be_bytes([t[0], t[1]]),
        None => return,
    };
    let (src, dst, protocol, l4) = match ethertype {
        0x0800 if frame.len() >= 34 => {
            let dst = V4_DESTS[usize::from(choice) % V4_DESTS.len()];
            frame[30..34].copy_from_slice(&dst.octets());
            let ihl = usize::from(frame[14] & 0xf) * 4;
            if fix {
                frame[24..26].fill(0);
                let end = (14 + ihl.max(20)).min(frame.len());
                let sum = fold(sum_bytes(&frame[14..end], 0));
                frame[24..26].copy_from_slice(&sum.to_be_bytes());
            }
            let src: [u8; 4] = frame[26..30].try_into().unwrap_or([0; 4]);
            (IpAddr::from(src), IpAddr::V4(dst), frame[23], 14 + ihl)
        }
        0x86dd if frame.len() >= 54 => {
            let dst = V6_DESTS[usize::from(choice) % V6_DESTS.len()];
            frame[38..54].copy_from_slice(&dst.octets());
            let src: [u8; 16] = frame[22..38].try_into().unwrap_or([0; 16]);
            (IpAddr::from(src), IpAddr::V6(dst), frame[20], 54)
        }
        _ => return,
    };
    if let Some(ports) = frame.get_mut(l4 + 2..l4 + 4) {
        let port = safe_port(host, dst, protocol, choice >> 3);
        ports.copy_from_slice(&port.to_be_bytes());
    }
    if fix && l4 < frame.len() {
        fix_transport_checksum(frame, l4, src, dst, protocol);
    }
}

/// A TCP segment (checksum zero) with `options` padded to whole words (at most 40 bytes).
#[allow(clippy::too_many_arguments)]
fn tcp_segment(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let options = &options[..options.len().min(40)];
    let header_len = (20 + options.len()).div_ceil(4) * 4;
    let mut s = vec![0u8; header_len];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..8].copy_from_slice(&seq.to_be_bytes());
    s[8..12].copy_from_slice(&ack.to_be_bytes());
    s[12] = ((header_len / 4) as u8) << 4;
    s[13] = flags;
    s[14..16].copy_from_slice(&window.to_be_bytes());
    s[20..20 + options.len()].copy_from_slice(options);
    s.extend_from_slice(payload);
    s
}

/// The payload of a built frame: a fuzzed run, or a long patterned one (up to the largest
/// frame) so that big frames are tried without big inputs.
fn payload(input: &mut Input<'_>) -> Vec<u8> {
    let how = input.u8();
    if how < 250 {
        return input.chunk().to_vec();
    }
    // Past the largest frame only now and then: summing 64 KiB frames is most of a run.
    let len = usize::from(input.u16()) % if how == 255 { 66_000 } else { 9_100 };
    vec![how; len]
}

/// Sets the virtio checksum state of a built frame whose transport header is at `l4`: left
/// complete, or partial (the field holding the pseudo-header sum, the engine to finish it) at
/// the right place or at fuzzed offsets.
fn partial(
    input: &mut Input<'_>,
    frame: &mut [u8],
    l4: usize,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
) -> Option<(usize, usize)> {
    let how = input.u8();
    match how % 4 {
        0 => None,
        1 => {
            // A wrong checksum, left as it is.
            let at = checksum_offset(protocol)?;
            if let Some(field) = frame.get_mut(l4 + at..l4 + at + 2) {
                field[0] ^= how | 1;
            }
            None
        }
        2 => {
            let at = checksum_offset(protocol)?;
            let len = frame.len().checked_sub(l4)?;
            let field = frame.get_mut(l4 + at..l4 + at + 2)?;
            let seed = if protocol == PROTO_ICMP {
                0
            } else {
                pseudo_sum(src, dst, protocol, len)
            };
            let sum = !fold(seed);
            field.copy_from_slice(&sum.to_be_bytes());
            Some((l4, at))
        }
        _ => Some((usize::from(input.u16()), usize::from(input.u16()))),
    }
}

/// Runs one scenario; see the module comment.
pub fn run(data: &[u8]) {
    let mut host = host().lock().unwrap_or_else(|e| e.into_inner());
    let mut input = Input::new(data);
    let (a, b) = (input.u8(), input.u8());
    let plan = plan(a, b);
    let mtu = usize::from(plan.mtu);
    let options = EngineOptions {
        upstream: host.upstream(),
        max_flows: 1 + usize::from(b & 3) * 2,
        control: Default::default(),
        ..EngineOptions::default()
    };
    let mut engine = Engine::with_options(plan, options).expect("epoll and timerfd");
    let c = input.u8();
    let mut link = MemoryLink {
        buffers_left: (c & 0x80 == 0).then_some(usize::from(c & 7)),
        offloads: RxOffloads {
            csum: c & 8 != 0,
            tso4: c & 16 != 0,
            tso6: c & 32 != 0,
        },
        ..MemoryLink::default()
    };
    let mut seqs = Seqs::default();
    let mut accepted: Vec<TcpStream> = Vec::new();
    let mut ops = 0;
    // Guest frames wait here to reach the engine together, as a TX ring's do: up to four,
    // or until anything else happens.
    let mut batch: Vec<WaitingFrame> = Vec::new();
    while !input.is_empty() && ops < 48 {
        ops += 1;
        let op = input.u8();
        if !matches!(op & 15, 0..=7 | 12 | 13) || batch.len() >= 4 {
            deliver(&mut engine, &mut batch, &mut link);
        }
        // The low four bits choose what happens; the high ones vary it (`op >> 4 & 3` a
        // connection or port, `op & 0x40` IPv6, `op & 0x80` a mangled frame).
        match op & 15 {
            // A raw frame, its addresses made safe.
            0 | 1 => {
                let mut bytes = input.chunk().to_vec();
                let choice = input.u8();
                sanitise(&host, &mut bytes, choice, op & 0x80 == 0);
                let csum = match input.u8() {
                    0..=223 => None,
                    _ => Some((usize::from(input.u16()), usize::from(input.u16()))),
                };
                batch.push((bytes, csum));
            }
            // A TCP segment of one of the guest's connections.
            2..=4 | 12 => {
                let i = usize::from(op >> 4 & 3);
                let v6 = op & 0x40 != 0;
                let (src, dst) = if v6 {
                    (IpAddr::V6(GUEST_IP6), IpAddr::V6(GATEWAY6))
                } else {
                    (IpAddr::V4(GUEST_IP), IpAddr::V4(GATEWAY))
                };
                let dport = host.port[usize::from(v6)];
                let flags = input.pick(&[0x02, 0x10, 0x18, 0x11, 0x04, 0x12, 0x19, 0x14])
                    ^ if op & 0x80 != 0 { input.u8() } else { 0 };
                let seq = match input.u8() % 4 {
                    0 => seqs.guest_next[i],
                    1 => seqs.guest_next[i].wrapping_add(u32::from(input.u16())),
                    2 => seqs.guest_next[i].wrapping_sub(u32::from(input.u8())),
                    _ => input.u32(),
                };
                let ack = match input.u8() % 4 {
                    0 => seqs.peer_next[i],
                    1 => seqs.peer_next[i].wrapping_add(u32::from(input.u8())),
                    2 => seqs.peer_next[i].wrapping_sub(u32::from(input.u16())),
                    _ => input.u32(),
                };
                let window = input.pick(&[0xffff, 0, 1, 512, 29200]);
                let opts = if input.u8() < 64 {
                    input.chunk()
                } else {
                    &[2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0][..]
                };
                let data = payload(&mut input);
                let seg = tcp_segment(GUEST_PORTS[i], dport, seq, ack, flags, window, opts, &data);
                let syn_fin = u32::from(flags & 2 != 0) + u32::from(flags & 1 != 0);
                seqs.guest_next[i] = seq.wrapping_add(data.len() as u32).wrapping_add(syn_fin);
                let mut bytes = ip_frame(src, dst, PROTO_TCP, 64, &seg, true);
                let l4 = if v6 { 54 } else { 34 };
                let csum = partial(&mut input, &mut bytes, l4, src, dst, PROTO_TCP);
                batch.push((bytes, csum));
            }
            // A UDP datagram to the host, the DNS relay or an emulated server.
            5 | 6 | 13 => {
                let v6 = op & 0x40 != 0;
                let choice = input.u8();
                let (src, dst) = if v6 {
                    let dst = V6_DESTS[usize::from(choice) % 3];
                    (IpAddr::V6(GUEST_IP6), IpAddr::V6(dst))
                } else {
                    let dst = V4_DESTS[usize::from(choice) % 3];
                    (IpAddr::V4(GUEST_IP), IpAddr::V4(dst))
                };
                let dport = safe_port(&host, dst, PROTO_UDP, choice >> 4);
                let sport = 50000 + u16::from(op >> 4 & 3);
                let data = payload(&mut input);
                let dgram = udp(sport, dport, &data);
                let mut bytes = ip_frame(src, dst, PROTO_UDP, 64, &dgram, true);
                let l4 = if v6 { 54 } else { 34 };
                let csum = partial(&mut input, &mut bytes, l4, src, dst, PROTO_UDP);
                batch.push((bytes, csum));
            }
            // An echo request to an emulated host or through a ping socket to loopback.
            7 => {
                let v6 = op & 0x40 != 0;
                let choice = input.u8();
                let (src, dst, proto, echo) = if v6 {
                    let dst = V6_DESTS[usize::from(choice) % 3];
                    (IpAddr::V6(GUEST_IP6), IpAddr::V6(dst), PROTO_ICMPV6, 128)
                } else {
                    let dst = V4_DESTS[usize::from(choice) % 3];
                    (IpAddr::V4(GUEST_IP), IpAddr::V4(dst), PROTO_ICMP, 8)
                };
                let mut msg = vec![echo, 0, 0, 0];
                msg.extend_from_slice(&input.u32().to_be_bytes());
                msg.extend_from_slice(&payload(&mut input));
                let mut bytes = ip_frame(src, dst, proto, 64, &msg, true);
                let l4 = if v6 { 54 } else { 34 };
                let csum = partial(&mut input, &mut bytes, l4, src, dst, proto);
                batch.push((bytes, csum));
            }
            // Host peers: accept, write, half-close or close a connection.
            8 | 14 => {
                for l in &host.listeners {
                    while let Ok((s, _)) = l.accept() {
                        let _ = s.set_nonblocking(true);
                        accepted.push(s);
                    }
                }
                let how = input.u8();
                let i = usize::from(how >> 2) % accepted.len().max(1);
                if let Some(s) = accepted.get_mut(i) {
                    match how & 3 {
                        0 | 1 => {
                            let _ = s.write(&payload(&mut input));
                        }
                        2 => {
                            let _ = s.shutdown(Shutdown::Write);
                        }
                        _ => {
                            let mut buf = [0u8; 4096];
                            let _ = s.read(&mut buf);
                        }
                    }
                    if how & 0x80 != 0 {
                        accepted.swap_remove(i);
                    }
                }
            }
            // Host peers: answer the datagrams that reached the harness's UDP sockets.
            9 => {
                let mut buf = [0u8; 2048];
                let reply = payload(&mut input);
                for u in &host.udp {
                    if let Ok((_, from)) = u.recv_from(&mut buf) {
                        let _ = u.send_to(&reply, from);
                    }
                }
            }
            // The link's turn: host events, the end of a batch, new receive buffers.
            10 | 15 => engine.poll_host(&mut link),
            _ => {
                if let Some(left) = link.buffers_left.as_mut() {
                    *left += usize::from(op >> 4);
                }
                engine.end_batch(&mut link);
            }
        }
        check_frames(&link, mtu);
        seqs.learn(&link.frames);
        link.frames.clear();
        link.metas.clear();
    }
    deliver(&mut engine, &mut batch, &mut link);
    engine.poll_host(&mut link);
    check_frames(&link, mtu);
    drop(engine);
    drop(accepted);
    host.drain();
    host.check_fds();
}

/// A guest frame built for the next batch: its bytes and virtio partial checksum.
type WaitingFrame = (Vec<u8>, Option<(usize, usize)>);

/// Hands the waiting guest frames to the engine as one batch.
fn deliver(engine: &mut Engine, batch: &mut Vec<WaitingFrame>, link: &mut MemoryLink) {
    let frames: Vec<Frame<'_>> = batch
        .iter()
        .map(|(bytes, partial_csum)| Frame {
            bytes,
            partial_csum: *partial_csum,
        })
        .collect();
    engine.handle_frames(&frames, link);
    batch.clear();
}

/// Frames toward the guest are whole Ethernet frames no longer than the largest one, and
/// their IP length fields say how long they are (short ones padded to the Ethernet minimum).
/// Local answers may be longer than the MTU: an echo reply is as long as the request, as in
/// slirp.
fn check_frames(link: &MemoryLink, mtu: usize) {
    for (f, meta) in link.frames.iter().zip(&link.metas) {
        assert!(
            (14..=14 + 65535).contains(&f.len()),
            "a frame of {} bytes",
            f.len()
        );
        let ip_len = match u16::from_be_bytes([f[12], f[13]]) {
            0x0800 => f
                .get(16..18)
                .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))),
            0x86dd => f
                .get(18..20)
                .map(|l| 40 + usize::from(u16::from_be_bytes([l[0], l[1]]))),
            _ => None,
        };
        if let Some(ip_len) = ip_len {
            assert!(
                14 + ip_len == f.len() || (f.len() == 60 && 14 + ip_len < 60),
                "a frame of {} bytes holding an IP packet of {ip_len} (gso {:?}, MTU {mtu}): \
                 {:02x?}",
                f.len(),
                meta.gso,
                &f[..f.len().min(80)]
            );
        }
    }
}
