//! Ethernet framing shared by the protocol modules.

use netplan::MacAddr;

pub const HEADER_LEN: usize = 14;
/// Frames shorter than this are zero-padded, as slirp does since 4.8.
pub const MIN_FRAME_LEN: usize = 60;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Writes an Ethernet header into the first 14 bytes of `buf`.
pub fn write_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&src.0);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Destination, source and ethertype of a frame, if it is long enough to have them.
pub fn parse_header(frame: &[u8]) -> Option<(MacAddr, MacAddr, u16)> {
    if frame.len() < HEADER_LEN {
        return None;
    }
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    Some((
        MacAddr(dst),
        MacAddr(src),
        u16::from_be_bytes([frame[12], frame[13]]),
    ))
}
