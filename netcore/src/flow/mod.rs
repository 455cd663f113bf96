//! Flows: guest connections and datagram streams spliced onto host sockets.
//!
//! # Theory of operation
//!
//! TCP ([`tcp`]), UDP ([`udp`]) and ICMP echo ([`ping`]) each keep their flows in a
//! `table::FlowTable`: a slab of slots, an index from the flow's addresses to its slot, a
//! limit on how many exist, and a list of slots owed work at the end of a batch. A slot number
//! names its flow's host socket in the engine's epoll set through an [`epoll::Token`], which
//! also says which table the slot belongs to; the engine decodes the token and hands the event
//! to that table. Slots are reused once their flow is gone (closing its socket takes it out of
//! the epoll set).

pub mod epoll;
pub mod ping;
pub(crate) mod table;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::time::Duration;

/// One open flow, as runtime control lists it ([`crate::Engine::flows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// `tcp`, `udp` or `icmp`.
    pub proto: &'static str,
    /// The guest's end (for ICMP echo, the echo identifier as the port).
    pub guest: SocketAddr,
    /// The other end as the guest addresses it: `None` for a UDP flow that sent nothing yet
    /// (a UDP flow is one guest socket; this is whom it last sent to).
    pub remote: Option<SocketAddr>,
    /// Where the flow is in its life (TCP: `CONNECTING`, `SYN_SENT`, `SYN_RECEIVED`,
    /// `ESTABLISHED`, `GUEST_CLOSED`, `HOST_CLOSED`, `CLOSING`; others `OPEN`, or `FORWARDED`
    /// for a forwarded UDP port's socket).
    pub state: &'static str,
    /// Payload bytes from the guest to the host (TCP: taken by the host socket), and from
    /// the host to the guest (TCP: acknowledged by the guest).
    pub to_host: u64,
    pub to_guest: u64,
    pub age: Duration,
    /// Since the last traffic either way.
    pub idle: Duration,
}
