//! The synthetic vhost-user driver behind `synthetic-datapath`: the backend's data path alone,
//! without QEMU or a TCG guest.
//!
//! # Theory of operation
//!
//! [`ring::Device`] and its [`ring::Driver`]s play QEMU and the guest's virtio-net driver at
//! once: the device connects to a vhost-user net backend's socket (vhost-net-user, or passt in
//! vhost-user mode) with the `vhost` crate's frontend and shares guest memory; each queue
//! pair's driver fills and drains its split virtqueues directly, from its own thread.
//! [`session::Session`] is a minimal guest TCP on top (raw Ethernet/IPv4/TCP frames from
//! [`wire`], no DHCP or ARP: slirp's addresses are used as they are), connected through the
//! gateway address, which the backend maps to its host's 127.0.0.1, to a [`peer::Peer`] thread
//! there (inside the backend's network namespace, for passt). The guest sends (TSO frames, or
//! MSS-sized segments without offloads) or receives (mergeable buffers, GSO frames) for a fixed
//! time; both ends check the bytes against a shared pattern.
//!
//! [`floor::run`] is the same host side with nothing in between: one thread makes the socket
//! calls a backend makes for the flow, as if the guest took every byte at once, so that its CPU
//! per GB says how much of a backend's cost those calls alone set.
//!
//! Everything runs on this machine's loopback. The driver and the peer are as cheap as they can
//! be (no payload copies on the sending side, payload compared once on the receiving side), so
//! that the numbers are the backend's; their own CPU time is reported beside it.

pub mod floor;
pub mod peer;
pub mod ring;
pub mod session;
pub mod wire;
