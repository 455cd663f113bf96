//! IP-layer framing toward the guest, shared by the transport modules.
//!
//! Frames are built as a small header block (Ethernet + IP + transport) written into the
//! reserved RX slot after the payload landed there, so the payload is never copied by us.
//! Checksums over such payload are summed by reading it back in bounded chunks.

use std::net::IpAddr;

use netplan::MacAddr;
use smoltcp::wire::{IpProtocol, checksum};

use crate::link::RxBytes;
use crate::{ethernet, ipv4};

pub const IPV6_HEADER_LEN: usize = 40;

/// Length of the Ethernet + IP headers for packets between these addresses.
pub fn l2_l3_len(addr: &IpAddr) -> usize {
    ethernet::HEADER_LEN
        + match addr {
            IpAddr::V4(_) => ipv4::HEADER_LEN,
            IpAddr::V6(_) => IPV6_HEADER_LEN,
        }
}

/// Everything needed to frame one IP packet for the guest.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: IpProtocol,
    pub ttl: u8,
    pub tos: u8,
    /// IPv4 identification.
    pub ident: u16,
}

/// Writes Ethernet and IP headers into `buf` for an L4 segment of `l4_len` bytes; returns the
/// header length.
pub fn write_headers(buf: &mut [u8], meta: &PacketMeta, l4_len: usize) -> usize {
    match (meta.src, meta.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            ethernet::write_header(buf, meta.dst_mac, meta.src_mac, ethernet::ETHERTYPE_IPV4);
            ipv4::write_header(
                &mut buf[ethernet::HEADER_LEN..],
                &ipv4::Header {
                    src,
                    dst,
                    protocol: meta.protocol.into(),
                    tos: meta.tos,
                    ttl: meta.ttl,
                    ident: meta.ident,
                    dont_frag: false,
                    payload_len: l4_len,
                },
            );
            ethernet::HEADER_LEN + ipv4::HEADER_LEN
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            ethernet::write_header(buf, meta.dst_mac, meta.src_mac, ethernet::ETHERTYPE_IPV6);
            let ip = &mut buf[ethernet::HEADER_LEN..ethernet::HEADER_LEN + IPV6_HEADER_LEN];
            ip[0] = 0x60 | (meta.tos >> 4);
            ip[1] = meta.tos << 4;
            ip[2..4].copy_from_slice(&[0, 0]);
            ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ip[6] = meta.protocol.into();
            ip[7] = meta.ttl;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            ethernet::HEADER_LEN + IPV6_HEADER_LEN
        }
        _ => unreachable!("mixed IPv4/IPv6 addresses in one packet"),
    }
}

/// The pseudo-header checksum (not complemented) for an L4 segment.
pub fn pseudo_header_sum(src: &IpAddr, dst: &IpAddr, protocol: IpProtocol, l4_len: usize) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, protocol, l4_len as u32),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(s, d, protocol, l4_len as u32),
        _ => 0,
    }
}

/// Sums (RFC 1071, not complemented) `len` bytes of `slot` from `offset`, reading them back in
/// chunks: the payload may sit in guest memory, which we never view as a slice.
pub fn slot_sum<S: RxBytes + ?Sized>(slot: &S, offset: usize, len: usize) -> u16 {
    let mut chunk = [0u8; 2048];
    let mut sums = 0u32;
    let mut done = 0;
    while done < len {
        let want = chunk.len().min(len - done);
        let got = slot.read_at(offset + done, &mut chunk[..want]);
        if got == 0 {
            break;
        }
        sums += u32::from(checksum::data(&chunk[..got]));
        done += got;
    }
    checksum::combine(&[(sums & 0xffff) as u16, (sums >> 16) as u16])
}

/// The payload of a UDP datagram the guest sent, `frame[l4_offset..][..l4_len]` holding its
/// UDP header onwards, if the header's length fits and the checksum holds: optional in IPv4
/// (zero: none), required in IPv6. Local services check it, as slirp's `udp_input` does.
pub fn udp_payload(
    frame: &[u8],
    src: IpAddr,
    dst: IpAddr,
    l4_offset: usize,
    l4_len: usize,
) -> Option<&[u8]> {
    let l4 = frame.get(l4_offset..l4_offset.checked_add(l4_len)?)?;
    let udp_len = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
    let udp = l4.get(..udp_len).filter(|u| u.len() >= 8)?;
    let unchecked = src.is_ipv4() && udp[6..8] == [0, 0];
    let pseudo = pseudo_header_sum(&src, &dst, IpProtocol::Udp, udp_len);
    (unchecked || checksum::combine(&[pseudo, checksum::data(udp)]) == 0xffff).then(|| &udp[8..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{MemoryLink, RxLink};
    use std::net::Ipv4Addr;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let meta = PacketMeta {
            src_mac: MacAddr([2; 6]),
            dst_mac: MacAddr([4; 6]),
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)),
            protocol: IpProtocol::Tcp,
            ttl: 64,
            tos: 0,
            ident: 7,
        };
        let mut buf = [0u8; 64];
        let n = write_headers(&mut buf, &meta, 20);
        assert_eq!(n, 34);
        assert_eq!(checksum::data(&buf[14..34]), 0xffff);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
        assert_eq!(u16::from_be_bytes([buf[16], buf[17]]), 40);
    }

    #[test]
    fn slot_sum_matches_contiguous_sum_for_odd_lengths() {
        let data: Vec<u8> = (0..5001u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut link = MemoryLink::new();
        let mut slot = link.reserve(6000).unwrap();
        slot.write_at(100, &data);
        assert_eq!(slot_sum(&slot, 100, data.len()), checksum::data(&data));
    }
}
