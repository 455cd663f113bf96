//! IP-layer framing toward the guest, shared by the transport modules and the services.
//!
//! Frames are built as a small header block (Ethernet + IP + transport) written into the
//! reserved RX slot after the payload landed there, so the payload is never copied by us.
//! Checksums over such payload are summed by reading it back in bounded chunks.
//!
//! [`Addrs`] holds the two ends of a packet as one family or the other, so that a packet with
//! an IPv4 source and an IPv6 destination cannot be described at all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netplan::MacAddr;
use smoltcp::wire::{IpProtocol, checksum};

use super::{ethernet, ipv4, ipv6};

/// Length of the Ethernet + IP headers for packets between these addresses.
pub fn l2_l3_len(addr: &IpAddr) -> usize {
    ethernet::HEADER_LEN
        + match addr {
            IpAddr::V4(_) => ipv4::HEADER_LEN,
            IpAddr::V6(_) => ipv6::HEADER_LEN,
        }
}

/// Source and destination of one packet, of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addrs {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl Addrs {
    /// `None` when the two are of different families.
    pub fn new(src: IpAddr, dst: IpAddr) -> Option<Addrs> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Some(Addrs::V4 { src, dst }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Some(Addrs::V6 { src, dst }),
            _ => None,
        }
    }

    pub fn src(&self) -> IpAddr {
        match *self {
            Addrs::V4 { src, .. } => src.into(),
            Addrs::V6 { src, .. } => src.into(),
        }
    }

    pub fn dst(&self) -> IpAddr {
        match *self {
            Addrs::V4 { dst, .. } => dst.into(),
            Addrs::V6 { dst, .. } => dst.into(),
        }
    }

    /// The other way round: the addresses of an answer.
    pub fn reversed(&self) -> Addrs {
        match *self {
            Addrs::V4 { src, dst } => Addrs::V4 { src: dst, dst: src },
            Addrs::V6 { src, dst } => Addrs::V6 { src: dst, dst: src },
        }
    }

    /// The pseudo-header checksum (not complemented) for an L4 segment between them.
    pub fn pseudo_header_sum(&self, protocol: IpProtocol, l4_len: usize) -> u16 {
        match self {
            Addrs::V4 { src, dst } => checksum::pseudo_header_v4(src, dst, protocol, l4_len as u32),
            Addrs::V6 { src, dst } => checksum::pseudo_header_v6(src, dst, protocol, l4_len as u32),
        }
    }
}

/// The checked IP header of a guest frame, of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestHeader {
    V4(ipv4::GuestHeader),
    V6(ipv6::GuestHeader),
}

/// A guest IP packet: its header, and where its payload (the L4 message) lies in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPacket {
    pub header: GuestHeader,
    /// Offset of the payload in the frame (Ethernet header included).
    pub l4_offset: usize,
    /// Bytes of payload, up to the IP length (Ethernet padding excluded).
    pub l4_len: usize,
}

impl GuestPacket {
    /// The IPv4 packet in `frame` (Ethernet onwards; a copied prefix holding at least the IP
    /// header, of a frame `frame_len` bytes long), checked by [`ipv4::parse`].
    pub fn ipv4(frame: &[u8], frame_len: usize) -> Option<GuestPacket> {
        let ip = ipv4::parse(
            frame.get(ethernet::HEADER_LEN..)?,
            frame_len.checked_sub(ethernet::HEADER_LEN)?,
        )?;
        Some(GuestPacket {
            header: GuestHeader::V4(ip),
            l4_offset: ethernet::HEADER_LEN + ip.header_len,
            l4_len: ip.payload_len,
        })
    }

    /// The IPv6 packet in `frame`, as [`GuestPacket::ipv4`] reads an IPv4 one, checked by
    /// [`ipv6::parse`].
    pub fn ipv6(frame: &[u8], frame_len: usize) -> Option<GuestPacket> {
        let ip = ipv6::parse(
            frame.get(ethernet::HEADER_LEN..)?,
            frame_len.checked_sub(ethernet::HEADER_LEN)?,
        )?;
        Some(GuestPacket {
            header: GuestHeader::V6(ip),
            l4_offset: ethernet::HEADER_LEN + ipv6::HEADER_LEN,
            l4_len: ip.payload_len,
        })
    }

    pub fn addrs(&self) -> Addrs {
        match self.header {
            GuestHeader::V4(h) => Addrs::V4 {
                src: h.src,
                dst: h.dst,
            },
            GuestHeader::V6(h) => Addrs::V6 {
                src: h.src,
                dst: h.dst,
            },
        }
    }

    pub fn src(&self) -> IpAddr {
        self.addrs().src()
    }

    pub fn dst(&self) -> IpAddr {
        self.addrs().dst()
    }

    /// The transport protocol (for IPv6, the next header, extension headers not walked).
    pub fn protocol(&self) -> IpProtocol {
        match self.header {
            GuestHeader::V4(h) => h.protocol,
            GuestHeader::V6(h) => h.next_header,
        }
    }

    /// The payload, from `frame` (the same frame, copied at least that far).
    pub fn payload<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        frame.get(self.l4_offset..self.l4_offset.checked_add(self.l4_len)?)
    }
}

/// Everything needed to frame one IP packet for the guest.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub addrs: Addrs,
    pub protocol: IpProtocol,
    pub ttl: u8,
    pub tos: u8,
    /// IPv4 identification.
    pub ident: u16,
}

impl PacketMeta {
    pub fn src(&self) -> IpAddr {
        self.addrs.src()
    }

    pub fn dst(&self) -> IpAddr {
        self.addrs.dst()
    }
}

/// Writes Ethernet and IP headers into `buf` for an L4 segment of `l4_len` bytes; returns the
/// header length.
pub fn write_headers(buf: &mut [u8], meta: &PacketMeta, l4_len: usize) -> usize {
    match meta.addrs {
        Addrs::V4 { src, dst } => {
            ethernet::write_header(buf, meta.dst_mac, meta.src_mac, ethernet::ETHERTYPE_IPV4);
            ipv4::write_header(
                &mut buf[ethernet::HEADER_LEN..],
                &ipv4::Header {
                    src,
                    dst,
                    protocol: meta.protocol,
                    tos: meta.tos,
                    ttl: meta.ttl,
                    ident: meta.ident,
                    dont_frag: false,
                    payload_len: l4_len,
                },
            );
            ethernet::HEADER_LEN + ipv4::HEADER_LEN
        }
        Addrs::V6 { src, dst } => {
            ethernet::write_header(buf, meta.dst_mac, meta.src_mac, ethernet::ETHERTYPE_IPV6);
            ipv6::write_header(
                &mut buf[ethernet::HEADER_LEN..],
                &ipv6::Header {
                    src,
                    dst,
                    next_header: meta.protocol,
                    traffic_class: meta.tos,
                    hop_limit: meta.ttl,
                    payload_len: l4_len,
                },
            );
            ethernet::HEADER_LEN + ipv6::HEADER_LEN
        }
    }
}

/// The pseudo-header checksum (not complemented) for an L4 segment.
/// 0 when the two are of different families.
pub fn pseudo_header_sum(src: &IpAddr, dst: &IpAddr, protocol: IpProtocol, l4_len: usize) -> u16 {
    Addrs::new(*src, *dst).map_or(0, |a| a.pseudo_header_sum(protocol, l4_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv4_header_checksum_verifies() {
        let meta = PacketMeta {
            src_mac: MacAddr([2; 6]),
            dst_mac: MacAddr([4; 6]),
            addrs: Addrs::V4 {
                src: Ipv4Addr::new(10, 0, 2, 2),
                dst: Ipv4Addr::new(10, 0, 2, 15),
            },
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
    fn mixed_families_are_not_addresses_of_one_packet() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(Addrs::new(v4, v6), None);
        assert_eq!(Addrs::new(v6, v4), None);
        assert_eq!(pseudo_header_sum(&v4, &v6, IpProtocol::Udp, 8), 0);
        let a = Addrs::new(v6, v6).unwrap();
        assert_eq!((a.reversed().src(), a.reversed().dst()), (v6, v6));
    }

    /// The engine parses from a copied prefix: the payload is located, not required, and
    /// read only from a copy that holds it.
    #[test]
    fn a_guest_packet_is_parsed_from_a_prefix_of_its_frame() {
        let meta = PacketMeta {
            src_mac: MacAddr([2; 6]),
            dst_mac: MacAddr([4; 6]),
            addrs: Addrs::V4 {
                src: Ipv4Addr::new(10, 0, 2, 15),
                dst: Ipv4Addr::new(10, 0, 2, 2),
            },
            protocol: IpProtocol::Udp,
            ttl: 64,
            tos: 0,
            ident: 1,
        };
        let mut frame = vec![0u8; 34 + 100];
        write_headers(&mut frame, &meta, 100);
        let p = GuestPacket::ipv4(&frame[..40], frame.len()).unwrap();
        assert_eq!((p.l4_offset, p.l4_len), (34, 100));
        assert_eq!((p.src(), p.dst()), (meta.src(), meta.dst()));
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.payload(&frame[..40]), None);
        assert_eq!(p.payload(&frame).map(<[u8]>::len), Some(100));
        assert_eq!(
            GuestPacket::ipv4(&frame[..40], frame.len() - 1),
            None,
            "cut short"
        );
        assert_eq!(GuestPacket::ipv6(&frame, frame.len()), None, "not IPv6");
    }
}
