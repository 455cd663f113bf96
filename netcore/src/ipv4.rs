//! IPv4 headers: accepting the guest's, writing ours.
//!
//! # Theory of operation
//!
//! [`parse`] applies slirp's `ip_input` acceptance rules to a packet the guest sent: version 4,
//! a header of at least 20 bytes that fits the buffer, a correct header checksum, and a total
//! length no shorter than the header and no longer than what arrived. Bytes past the total
//! length (Ethernet padding) are cut off. Anything else is malformed and the caller drops it.
//! Fragments are reported as such; nothing here reassembles them.
//!
//! [`write_header`] emits the 20-byte header of every IPv4 packet the engine builds: never any
//! options, the header checksum always filled in. The identification field comes from one
//! [`Ident`] counter per engine, as slirp takes it from one counter per instance, so the
//! guest sees the same sequence whatever protocol produced the packet.

use std::net::Ipv4Addr;

use smoltcp::wire::{IpProtocol, Ipv4Packet};

/// Length of an IPv4 header without options: all we ever emit.
pub const HEADER_LEN: usize = 20;
/// The largest IPv4 packet (the total-length field is 16 bits).
pub const MAX_PACKET_LEN: usize = 65535;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_UDP: u8 = 17;

/// The identification counter for IPv4 packets sent to the guest.
///
/// slirp numbers every IPv4 packet it emits from one counter that starts at 0; one `Ident`
/// per engine keeps that sequence.
#[derive(Debug, Default, Clone)]
pub struct Ident(u16);

impl Ident {
    pub fn new() -> Self {
        Self::default()
    }

    /// The identification for the next packet.
    pub fn next_id(&mut self) -> u16 {
        let id = self.0;
        self.0 = self.0.wrapping_add(1);
        id
    }
}

/// A guest IPv4 packet that passed slirp's `ip_input` checks.
#[derive(Debug, Clone, Copy)]
pub struct GuestPacket<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub tos: u8,
    pub ttl: u8,
    pub dont_frag: bool,
    /// More-fragments set or a non-zero offset: part of a datagram, not all of it.
    pub fragment: bool,
    /// The header as sent, options included.
    pub header: &'a [u8],
    /// What follows the header, cut at the total length.
    pub payload: &'a [u8],
}

/// Checks `packet` (an IPv4 header onwards) as slirp's `ip_input` does; `None` if malformed.
pub fn parse(packet: &[u8]) -> Option<GuestPacket<'_>> {
    // new_checked: at least 20 bytes, 20 <= header length <= total length <= buffer length.
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.version() != 4 || !ip.verify_checksum() {
        return None;
    }
    let header_len = usize::from(ip.header_len());
    let total_len = usize::from(ip.total_len());
    Some(GuestPacket {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: u8::from(ip.next_header()),
        tos: packet.get(1).copied().unwrap_or(0),
        ttl: ip.hop_limit(),
        dont_frag: ip.dont_frag(),
        fragment: ip.more_frags() || ip.frag_offset() != 0,
        header: packet.get(..header_len)?,
        payload: packet.get(header_len..total_len)?,
    })
}

/// The fields of an IPv4 header we emit.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub tos: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Bytes after the header; the caller keeps `HEADER_LEN + payload_len` within 65535.
    pub payload_len: usize,
}

/// Writes `h` as a 20-byte header with its checksum into the start of `buf`
/// (which must hold at least [`HEADER_LEN`] bytes).
pub fn write_header(buf: &mut [u8], h: &Header) {
    let total = u16::try_from(HEADER_LEN + h.payload_len).unwrap_or(u16::MAX);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..HEADER_LEN]);
    ip.set_version(4);
    ip.set_header_len(HEADER_LEN as u8);
    ip.set_dscp(h.tos >> 2);
    ip.set_ecn(h.tos & 0x3);
    ip.set_total_len(total);
    ip.set_ident(h.ident);
    ip.clear_flags();
    ip.set_dont_frag(h.dont_frag);
    ip.set_frag_offset(0);
    ip.set_hop_limit(h.ttl);
    ip.set_next_header(IpProtocol::from(h.protocol));
    ip.set_src_addr(h.src);
    ip.set_dst_addr(h.dst);
    ip.fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: usize) -> Header {
        Header {
            src: Ipv4Addr::new(10, 0, 2, 2),
            dst: Ipv4Addr::new(10, 0, 2, 15),
            protocol: PROTO_UDP,
            tos: 0x10,
            ttl: 64,
            ident: 7,
            dont_frag: false,
            payload_len,
        }
    }

    #[test]
    fn written_header_parses_back() {
        let mut buf = vec![0u8; HEADER_LEN + 4];
        write_header(&mut buf, &header(4));
        let p = parse(&buf).expect("valid");
        assert_eq!(p.src, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(p.dst, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(p.tos, 0x10);
        assert_eq!(p.ttl, 64);
        assert!(!p.dont_frag && !p.fragment);
        assert_eq!(p.payload.len(), 4);
        assert_eq!(&buf[4..6], &[0, 7]);
    }

    #[test]
    fn rejects_bad_checksum_version_and_lengths() {
        let mut buf = vec![0u8; HEADER_LEN + 4];
        write_header(&mut buf, &header(4));
        let mut bad = buf.clone();
        bad[10] ^= 1;
        assert!(parse(&bad).is_none());
        assert!(parse(&buf[..HEADER_LEN + 3]).is_none());
        assert!(parse(&buf[..10]).is_none());
        let mut v6 = buf.clone();
        v6[0] = 0x65;
        assert!(parse(&v6).is_none());
        // Trailing padding is cut off.
        let mut padded = buf.clone();
        padded.extend_from_slice(&[0xaa; 10]);
        assert_eq!(parse(&padded).unwrap().payload.len(), 4);
    }

    #[test]
    fn ident_counts_from_zero_and_wraps() {
        let mut id = Ident::new();
        assert_eq!(id.next_id(), 0);
        assert_eq!(id.next_id(), 1);
        id.0 = u16::MAX;
        assert_eq!(id.next_id(), u16::MAX);
        assert_eq!(id.next_id(), 0);
    }
}
