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
