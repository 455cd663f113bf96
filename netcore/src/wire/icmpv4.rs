//! ICMPv4 message numbers and checksums.
//!
//! The messages themselves are short enough to build in place (see `service::icmp`); what
//! lives here is what every user of ICMP needs to agree on.

use smoltcp::wire::Icmpv4Packet;

/// Type, code, checksum and the 4-byte rest of the header (identifier and sequence number of
/// an echo, the next-hop MTU of "fragmentation needed").
pub const HEADER_LEN: usize = 8;
pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
/// Destination-unreachable codes.
pub const UNREACH_NET: u8 = 0;
pub const UNREACH_HOST: u8 = 1;
/// "Fragmentation needed", with the next-hop MTU.
pub const UNREACH_NEEDFRAG: u8 = 4;

/// Whether `icmp` is a whole header whose checksum holds.
pub fn verify(icmp: &[u8]) -> bool {
    icmp.len() >= HEADER_LEN && Icmpv4Packet::new_unchecked(icmp).verify_checksum()
}

/// Fills in the checksum of the message in `icmp` (at least the 4 bytes up to it).
pub fn fill_checksum(icmp: &mut [u8]) {
    Icmpv4Packet::new_unchecked(icmp).fill_checksum();
}
