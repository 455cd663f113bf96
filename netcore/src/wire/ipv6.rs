//! IPv6 headers: accepting the guest's, writing ours.
//!
//! # Theory of operation
//!
//! [`parse`] reads the fixed 40-byte header of a guest packet: version 6, and a payload length
//! that fits what arrived (slirp's `ip6_input`). Extension headers are not walked: the next
//! header is reported as it is, and the engine drops what it does not serve, as slirp does.
//! As for IPv4, the header may come from a copied prefix of a larger frame.
//!
//! [`write_header`] emits the fixed header of every IPv6 packet we send: the traffic class
//! given, flow label 0.

use std::net::Ipv6Addr;

use smoltcp::wire::{IpProtocol, Ipv6Packet};

/// The fixed IPv6 header: all we ever read or write.
pub const HEADER_LEN: usize = 40;
/// slirp's hop limit for every IPv6 packet it sends.
pub const HOP_LIMIT: u8 = 255;

/// The fixed header of a guest IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestHeader {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: IpProtocol,
    pub hop_limit: u8,
    /// Bytes after the fixed header (the payload-length field).
    pub payload_len: usize,
}

/// Parses the fixed header at the start of `packet`; `arrived` is how many bytes of the packet
/// the guest sent (`packet` may be a shorter copied prefix). `None` if malformed.
pub fn parse(packet: &[u8], arrived: usize) -> Option<GuestHeader> {
    let ip = Ipv6Packet::new_unchecked(packet.get(..HEADER_LEN)?);
    if ip.version() != 6 {
        return None;
    }
    let payload_len = usize::from(ip.payload_len());
    if HEADER_LEN + payload_len > arrived.max(packet.len()) {
        return None;
    }
    Some(GuestHeader {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        next_header: ip.next_header(),
        hop_limit: ip.hop_limit(),
        payload_len,
    })
}

/// The fields of an IPv6 header we emit.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: IpProtocol,
    pub traffic_class: u8,
    pub hop_limit: u8,
    /// Bytes after the header, at most 65535.
    pub payload_len: usize,
}

/// Writes `h` into the first [`HEADER_LEN`] bytes of `buf`.
pub fn write_header(buf: &mut [u8], h: &Header) {
    let mut ip = Ipv6Packet::new_unchecked(&mut buf[..HEADER_LEN]);
    ip.set_version(6);
    ip.set_traffic_class(h.traffic_class);
    ip.set_flow_label(0);
    ip.set_payload_len(h.payload_len as u16);
    ip.set_next_header(h.next_header);
    ip.set_hop_limit(h.hop_limit);
    ip.set_src_addr(h.src);
    ip.set_dst_addr(h.dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_header_parses_back_and_lengths_are_checked() {
        let mut buf = [0xffu8; HEADER_LEN + 8];
        let h = Header {
            src: "fe80::2".parse().unwrap(),
            dst: "fec0::15".parse().unwrap(),
            next_header: IpProtocol::Udp,
            traffic_class: 0xab,
            hop_limit: 255,
            payload_len: 8,
        };
        write_header(&mut buf, &h);
        assert_eq!(&buf[..4], &[0x6a, 0xb0, 0, 0], "class, no flow label");
        let p = parse(&buf, buf.len()).unwrap();
        assert_eq!((p.src, p.dst), (h.src, h.dst));
        assert_eq!(p.next_header, IpProtocol::Udp);
        assert_eq!((p.hop_limit, p.payload_len), (255, 8));
        assert!(parse(&buf[..HEADER_LEN], HEADER_LEN + 7).is_none());
        assert!(parse(&buf[..HEADER_LEN - 1], 100).is_none());
        buf[0] = 0x4a;
        assert!(parse(&buf, buf.len()).is_none());
    }
}
