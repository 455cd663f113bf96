//! Frame builders and readers shared by the netcore integration tests.
//!
//! Guest frames are built with smoltcp's wire emitters (or byte by byte where a test needs a
//! field smoltcp would not set), and answers are read back through smoltcp's checked views.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use netcore::{Engine, MemoryLink};
use netplan::MacAddr;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, UdpPacket,
};

pub const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// Engine options whose forwards are `plan`'s, opened now as the program opens them at
/// startup, so that engine after engine can serve them.
pub fn options_with_forwards_of(plan: &netplan::NetPlan) -> netcore::EngineOptions {
    netcore::EngineOptions {
        control: std::sync::Arc::new(netcore::control::Control::fixed(
            netcore::forward::open_rules(plan, 0).unwrap(),
        )),
        ..netcore::EngineOptions::default()
    }
}

/// A guest MAC numbered `n`.
pub fn guest_mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, n])
}

/// Sends one frame through `engine` and returns what reached the guest.
pub fn run(engine: &mut Engine, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut link = MemoryLink::new();
    engine.handle_frame(frame, &mut link);
    link.take()
}

/// Sends one frame and returns the single answer, failing the test otherwise.
pub fn run_one(engine: &mut Engine, frame: &[u8]) -> Vec<u8> {
    let mut frames = run(engine, frame);
    assert_eq!(frames.len(), 1, "expected exactly one answer");
    frames.pop().unwrap()
}

pub fn ethernet(
    dst: MacAddr,
    src: MacAddr,
    ethertype: EthernetProtocol,
    payload: &[u8],
) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: EthernetAddress(src.0),
        dst_addr: EthernetAddress(dst.0),
        ethertype,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    repr.emit(&mut frame);
    frame.payload_mut().copy_from_slice(payload);
    buf
}

/// An ARP packet from the guest, in a broadcast frame.
pub fn arp(op: ArpOperation, sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(sha.0),
        source_protocol_addr: spa,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: tpa,
    };
    let mut body = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut body[..]));
    ethernet(MacAddr::BROADCAST, sha, EthernetProtocol::Arp, &body)
}

pub fn arp_request(spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(ArpOperation::Request, GUEST_MAC, spa, tpa)
}

/// Options for [`ipv4`] beyond addresses and protocol.
#[derive(Clone, Debug)]
pub struct IpOpts {
    pub tos: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    pub frag_offset: u16,
    /// IP options (a multiple of 4 bytes).
    pub options: Vec<u8>,
}

impl Default for IpOpts {
    fn default() -> Self {
        IpOpts {
            tos: 0,
            ttl: 64,
            ident: 0x1234,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            options: Vec::new(),
        }
    }
}

/// An IPv4 packet with a correct header checksum.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload: &[u8],
    o: &IpOpts,
) -> Vec<u8> {
    let hl = 20 + o.options.len();
    let mut buf = vec![0u8; hl + payload.len()];
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.set_version(4);
    ip.set_header_len(hl as u8);
    ip.set_dscp(o.tos >> 2);
    ip.set_ecn(o.tos & 3);
    ip.set_total_len((hl + payload.len()) as u16);
    ip.set_ident(o.ident);
    ip.clear_flags();
    ip.set_dont_frag(o.dont_frag);
    ip.set_more_frags(o.more_frags);
    ip.set_frag_offset(o.frag_offset);
    ip.set_hop_limit(o.ttl);
    ip.set_next_header(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    buf[20..hl].copy_from_slice(&o.options);
    buf[hl..].copy_from_slice(payload);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.fill_checksum();
    buf
}

pub fn ipv4_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload: &[u8],
    o: &IpOpts,
) -> Vec<u8> {
    ethernet(
        MacAddr::slirp_for_ipv4(GATEWAY),
        GUEST_MAC,
        EthernetProtocol::Ipv4,
        &ipv4(src, dst, proto, payload, o),
    )
}

/// A UDP datagram with a correct checksum.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + payload.len()];
    let mut udp = UdpPacket::new_unchecked(&mut buf[..]);
    udp.set_src_port(sport);
    udp.set_dst_port(dport);
    udp.set_len((8 + payload.len()) as u16);
    udp.payload_mut().copy_from_slice(payload);
    udp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    buf
}

/// A whole IPv6 frame from the guest (hop limit 64) to `dst`'s slirp-style MAC (52:56 + its
/// low 32 bits), carrying `l4` of protocol `next_header` (TCP, UDP or ICMPv6), whose checksum
/// is filled in here.
pub fn ipv6_frame(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: IpProtocol,
    mut l4: Vec<u8>,
) -> Vec<u8> {
    use smoltcp::wire::checksum;
    let checksum_at = match next_header {
        IpProtocol::Tcp => 16,
        IpProtocol::Udp => 6,
        IpProtocol::Icmpv6 => 2,
        other => panic!("no checksum offset known for {other}"),
    };
    let len = l4.len() as u16;
    l4[checksum_at..checksum_at + 2].copy_from_slice(&[0, 0]);
    let pseudo = checksum::pseudo_header_v6(&src, &dst, next_header, u32::from(len));
    let sum = !checksum::combine(&[pseudo, checksum::data(&l4)]);
    l4[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[next_header.into(), 64]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&l4);
    ethernet(
        MacAddr::slirp_for_ipv6(dst),
        GUEST_MAC,
        EthernetProtocol::Ipv6,
        &packet,
    )
}

/// A whole IPv6 UDP frame from the guest, as [`ipv6_frame`] frames it.
pub fn udp6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let datagram = [
        &sport.to_be_bytes()[..],
        &dport.to_be_bytes(),
        &len.to_be_bytes(),
        &[0, 0],
        payload,
    ]
    .concat();
    ipv6_frame(src, dst, IpProtocol::Udp, datagram)
}

/// A bare TCP SYN (no options) from `sport` to `dport` with sequence number `seq`; its
/// checksum is left for the caller (zero).
pub fn tcp_syn(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp
}

/// An ICMP echo request with a correct checksum.
pub fn echo_request(ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
        &ChecksumCapabilities::default(),
    );
    buf
}

pub fn ping_frame(dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    ipv4_frame(
        GUEST_IP,
        dst,
        IpProtocol::Icmp,
        &echo_request(ident, seq_no, data),
        &IpOpts::default(),
    )
}

/// A DHCP message as a client sends it (BOOTREQUEST, broadcast flag set), padded to the
/// 300 bytes most clients send.
pub fn bootp(mac: MacAddr, xid: u32, ciaddr: Ipv4Addr, options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[10] = 0x80;
    b[12..16].copy_from_slice(&ciaddr.octets());
    b[28..34].copy_from_slice(&mac.0);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    for (code, data) in options {
        b.push(*code);
        b.push(data.len() as u8);
        b.extend_from_slice(data);
    }
    b.push(255);
    if b.len() < 300 {
        b.resize(300, 0);
    }
    b
}

/// A DHCP message of type `msg_type` (none when `None`), from 0.0.0.0:68 to
/// 255.255.255.255:67, with option 50 when `requested` is given.
pub fn dhcp_frame(
    mac: MacAddr,
    msg_type: Option<u8>,
    requested: Option<Ipv4Addr>,
    ciaddr: Ipv4Addr,
) -> Vec<u8> {
    let t;
    let r;
    let mut opts: Vec<(u8, &[u8])> = Vec::new();
    if let Some(m) = msg_type {
        t = [m];
        opts.push((53, &t));
    }
    if let Some(a) = requested {
        r = a.octets();
        opts.push((50, &r));
    }
    opts.push((55, &[1, 3, 6, 12, 15, 28, 42]));
    dhcp_frame_raw(
        mac,
        Ipv4Addr::BROADCAST,
        &bootp(mac, 0xdead_beef, ciaddr, &opts),
    )
}

/// A DHCP payload in UDP 68 → 67 to `dst`, from 0.0.0.0 and `mac`.
pub fn dhcp_frame_raw(mac: MacAddr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let src = Ipv4Addr::UNSPECIFIED;
    let o = IpOpts {
        tos: 0x10,
        ttl: 64,
        dont_frag: false,
        ..IpOpts::default()
    };
    ethernet(
        MacAddr::BROADCAST,
        mac,
        EthernetProtocol::Ipv4,
        &ipv4(
            src,
            dst,
            IpProtocol::Udp,
            &udp(src, 68, dst, 67, payload),
            &o,
        ),
    )
}

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const DECLINE: u8 = 4;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
pub const RELEASE: u8 = 7;
pub const INFORM: u8 = 8;

/// A DHCP answer taken apart, every layer checked on the way.
#[derive(Debug)]
pub struct DhcpAnswer {
    pub frame: Vec<u8>,
    pub ip_ident: u16,
    pub xid: u32,
    pub flags: u16,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub file: Vec<u8>,
    /// The whole options area (cookie included), 312 bytes.
    pub options_area: Vec<u8>,
    /// (code, data) in order, up to END.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl DhcpAnswer {
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d.as_slice())
    }

    pub fn codes(&self) -> Vec<u8> {
        self.options.iter().map(|(c, _)| *c).collect()
    }
}

/// Checks the envelope every DHCP answer shares and returns the message.
pub fn parse_dhcp_answer(frame: &[u8], gateway_mac: MacAddr, gateway: Ipv4Addr) -> DhcpAnswer {
    assert_eq!(frame.len(), 14 + 20 + 8 + 548, "answer frame length");
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress([0xff; 6]));
    assert_eq!(eth.src_addr(), EthernetAddress(gateway_mac.0));
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    assert_eq!(ip.header_len(), 20);
    assert_eq!(ip.dscp() << 2 | ip.ecn(), 0x10, "TOS");
    assert_eq!(ip.hop_limit(), 64, "TTL");
    assert!(!ip.dont_frag() && !ip.more_frags() && ip.frag_offset() == 0);
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    assert_eq!(ip.src_addr(), gateway);
    assert_eq!(ip.dst_addr(), Ipv4Addr::BROADCAST);
    assert_eq!(ip.total_len(), 20 + 8 + 548);
    let ip_ident = ip.ident();
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_ne!(udp.checksum(), 0, "UDP checksum present");
    assert!(
        udp.verify_checksum(
            &IpAddress::Ipv4(gateway),
            &IpAddress::Ipv4(Ipv4Addr::BROADCAST)
        ),
        "UDP checksum"
    );
    assert_eq!(udp.src_port(), 67);
    assert_eq!(udp.dst_port(), 68);
    assert_eq!(udp.len(), 8 + 548);
    let b = udp.payload();
    assert_eq!(b.len(), 548);
    assert_eq!(&b[0..4], &[2, 1, 6, 0], "op, htype, hlen, hops");
    assert_eq!(&b[8..10], &[0, 0], "secs");
    assert_eq!(&b[12..16], &[0; 4], "ciaddr");
    assert_eq!(&b[24..28], &[0; 4], "giaddr");
    assert!(b[44..108].iter().all(|&x| x == 0), "sname empty");
    assert_eq!(&b[236..240], &[99, 130, 83, 99], "magic cookie");
    let mut options = Vec::new();
    let mut p = 240;
    loop {
        let code = b[p];
        if code == 255 {
            assert!(b[p + 1..].iter().all(|&x| x == 0), "zero padding after END");
            break;
        }
        assert_ne!(code, 0, "slirp writes no PAD options");
        let len = usize::from(b[p + 1]);
        options.push((code, b[p + 2..p + 2 + len].to_vec()));
        p += 2 + len;
    }
    let file_end = b[108..236].iter().position(|&x| x == 0).unwrap_or(128);
    DhcpAnswer {
        frame: frame.to_vec(),
        ip_ident,
        xid: u32::from_be_bytes(b[4..8].try_into().unwrap()),
        flags: u16::from_be_bytes([b[10], b[11]]),
        yiaddr: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        siaddr: Ipv4Addr::new(b[20], b[21], b[22], b[23]),
        chaddr: b[28..44].try_into().unwrap(),
        file: b[108..108 + file_end].to_vec(),
        options_area: b[236..548].to_vec(),
        options,
    }
}
