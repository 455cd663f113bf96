//! UDP headers: reading the guest's datagrams to the emulated servers, writing their answers.
//!
//! Datagrams the NAT forwards are never parsed past their ports here; the flow table sends
//! their payload on as it is. Datagrams a local server answers are checked as slirp's
//! `udp_input` checks them: a UDP length no longer than the IP payload (a shorter one trims
//! the datagram), at least the 8-byte header, and a checksum that holds, optional over IPv4
//! (zero: none) and required over IPv6.

use super::frame::Frame;
use super::ip::{Addrs, GuestPacket};
use smoltcp::wire::{IpProtocol, checksum};

pub const HEADER_LEN: usize = 8;

/// Source and destination ports of the UDP header at the start of `l4`.
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    let l4 = Frame::new(l4);
    Some((l4.u16(0)?, l4.u16(2)?))
}

/// A guest datagram for a local server, checked.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// The datagram in `l4` read as it stands: ports, and everything after the header as the
    /// payload, its length and checksum not checked (for DHCPv6, which has always read it so).
    pub fn unchecked(l4: &'a [u8]) -> Option<Datagram<'a>> {
        let (src_port, dst_port) = ports(l4)?;
        Some(Datagram {
            src_port,
            dst_port,
            payload: l4.get(HEADER_LEN..)?,
        })
    }
}

/// Checks the datagram in `l4` (the IP payload, cut at the IP length) sent between `addrs`.
pub fn parse<'a>(addrs: &Addrs, l4: &'a [u8]) -> Option<Datagram<'a>> {
    let udp_len = usize::from(Frame::new(l4).u16(4)?);
    let udp = l4.get(..udp_len).filter(|u| u.len() >= HEADER_LEN)?;
    let unchecked = matches!(addrs, Addrs::V4 { .. }) && udp[6..8] == [0, 0];
    let pseudo = addrs.pseudo_header_sum(IpProtocol::Udp, udp_len);
    if !unchecked && checksum::combine(&[pseudo, checksum::data(udp)]) != 0xffff {
        return None;
    }
    Some(Datagram {
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[HEADER_LEN..],
    })
}

/// The datagram `ip` carries in `frame` (copied whole), checked as [`parse`] checks it.
pub fn parse_in<'a>(ip: &GuestPacket, frame: &'a [u8]) -> Option<Datagram<'a>> {
    parse(&ip.addrs(), ip.payload(frame)?)
}

/// Writes the header of the datagram in `udp` (header and payload, the payload already in
/// place) from `addrs.src()`:`src_port` to `addrs.dst()`:`dst_port`, with its checksum: a
/// computed zero goes out as all ones (zero means "no checksum" over IPv4 and is invalid over
/// IPv6).
pub fn write_header(udp: &mut [u8], addrs: &Addrs, src_port: u16, dst_port: u16) {
    let udp_len = udp.len();
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let pseudo = addrs.pseudo_header_sum(IpProtocol::Udp, udp_len);
    let sum = !checksum::combine(&[pseudo, checksum::data(udp)]);
    let sum = if sum == 0 { 0xffff } else { sum };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4() -> Addrs {
        Addrs::V4 {
            src: Ipv4Addr::new(10, 0, 2, 15),
            dst: Ipv4Addr::new(10, 0, 2, 2),
        }
    }

    #[test]
    fn written_datagram_parses_back_and_checksums_hold() {
        let mut d = vec![0u8; HEADER_LEN + 3];
        d[HEADER_LEN..].copy_from_slice(b"abc");
        write_header(&mut d, &v4(), 1000, 69);
        let got = parse(&v4(), &d).unwrap();
        assert_eq!(
            (got.src_port, got.dst_port, got.payload),
            (1000, 69, &b"abc"[..])
        );
        // Padding past the UDP length is not payload.
        let mut padded = d.clone();
        padded.push(0);
        assert_eq!(parse(&v4(), &padded).unwrap().payload, b"abc");
        let mut bad = d.clone();
        bad[9] ^= 1;
        assert!(parse(&v4(), &bad).is_none());
        // No checksum: accepted over IPv4 only.
        bad[6..8].fill(0);
        assert!(parse(&v4(), &bad).is_some());
        let v6 = Addrs::V6 {
            src: "fe80::1".parse().unwrap(),
            dst: "fe80::2".parse().unwrap(),
        };
        assert!(parse(&v6, &bad).is_none());
        assert!(parse(&v4(), &d[..HEADER_LEN + 2]).is_none(), "cut short");
        assert_eq!(ports(&d), Some((1000, 69)));
        assert_eq!(ports(&d[..3]), None);
    }
}
