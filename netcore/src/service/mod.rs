//! The emulated hosts' local answers: ARP, DHCP, DHCPv6, NDP and ICMPv6 echo, ICMP echo and
//! errors, TFTP.
//!
//! # Theory of operation
//!
//! The engine parses each guest frame once (`engine::dispatch`, through [`crate::wire`]) and
//! hands a service what it asks for already typed: the ARP representation, the checked IP
//! header and the ICMP message after it (whose checksum the service verifies, as slirp's
//! `icmp_input` does), the UDP datagram with its length and checksum checked (DHCPv4, TFTP) or
//! as it stands (DHCPv6, see there). A service parses only its own protocol's body, decides
//! what slirp would answer, writes the answer frame into the buffer it is given and says what
//! it did in a [`Verdict`]; whether and when the frame goes out, and what is counted, the
//! engine decides. No service imports from the engine.
//!
//! The ICMP error builders (`icmp::error`, [`ndp::error`]) are the exception to "typed in":
//! they quote the offending packet as the guest sent it, so they take its bytes.

// Public for the fuzzing crate, which drives these servers directly.
pub mod dhcp;
pub mod dhcpv6;
pub mod ndp;
pub mod tftp;

pub(crate) mod arp;
pub(crate) mod icmp;

/// What a service did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer frame is in the output buffer.
    Reply,
    /// Handled; nothing to send.
    Consumed,
    /// Not for this service, or not served.
    Unhandled,
    /// Broken beyond use.
    Malformed,
}
