//! The wire layer: bytes <-> typed headers, and nothing else.
//!
//! # Theory of operation
//!
//! Every header the engine reads from the guest or writes toward it goes through here, on
//! smoltcp's `wire` module where it fits (Ethernet, ARP, IPv4, IPv6, UDP, ICMP checksums,
//! protocol numbers as [`smoltcp::wire::IpProtocol`]). Nothing here knows the plan, keeps
//! state (but the IPv4 identification counter the caller owns) or decides what to answer:
//! that is the services' and the engine's business.
//!
//! Guest bytes are read through `frame::Frame`, whose getters are bounds-checked, or through
//! smoltcp's checked views, so that a short or lying packet yields `None`, never a panic. The
//! guest's IPv4 header is accepted in one place ([`ipv4::parse`]), its IPv6 header in another
//! ([`ipv6::parse`]), both from a copied prefix of the frame plus the length that arrived.
//!
//! What slirp's byte order forces to be written by hand stays hand-written, and says so: the
//! DHCP options area (`service::dhcp`), the DHCP domain search option (`dnssearch`) and the
//! router advertisement's options (`service::ndp`).

// Public for the fuzzing crate, which hands the services what the engine would: a parsed
// header, a checked datagram, the IPv4 identification counter.
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

pub(crate) mod dnssearch;
pub(crate) mod ethernet;
pub(crate) mod frame;
pub(crate) mod icmpv4;
pub(crate) mod icmpv6;
