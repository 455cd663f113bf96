//! Ethernet framing: the 14-byte header of every frame, both ways.
//!
//! Frames we send are at least [`MIN_FRAME_LEN`] bytes (zero-padded, as slirp pads since 4.8);
//! frames the guest sends are read through [`parse_header`], which checks only that the header
//! is there: which ethertypes are served is the engine's business.

use netplan::MacAddr;
use smoltcp::wire::EthernetFrame;

pub const HEADER_LEN: usize = 14;
/// Frames shorter than this are zero-padded, as slirp does since 4.8.
pub const MIN_FRAME_LEN: usize = 60;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Writes an Ethernet header into the first 14 bytes of `buf`.
pub fn write_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..HEADER_LEN]);
    eth.set_dst_addr(smoltcp::wire::EthernetAddress(dst.0));
    eth.set_src_addr(smoltcp::wire::EthernetAddress(src.0));
    eth.set_ethertype(ethertype.into());
}

/// Destination, source and ethertype of a frame, if it is long enough to have them.
pub fn parse_header(frame: &[u8]) -> Option<(MacAddr, MacAddr, u16)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    Some((
        MacAddr(eth.dst_addr().0),
        MacAddr(eth.src_addr().0),
        eth.ethertype().into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_short_frames() {
        let mut buf = [0u8; HEADER_LEN];
        write_header(&mut buf, MacAddr([1; 6]), MacAddr([2; 6]), ETHERTYPE_IPV6);
        assert_eq!(&buf[12..], &[0x86, 0xdd]);
        assert_eq!(
            parse_header(&buf),
            Some((MacAddr([1; 6]), MacAddr([2; 6]), ETHERTYPE_IPV6))
        );
        assert_eq!(parse_header(&buf[..13]), None);
    }
}
