//! The NAT core of vhost-net-user.
//!
//! An [`Engine`] takes frames the guest sent, answers what the emulated hosts answer (ARP,
//! DHCP, ICMP echo, TFTP), and splices flows onto host sockets. It is driven by one immutable
//! [`netplan::NetPlan`] and talks to the guest only through the [`link`] traits, so it knows
//! nothing of vhost-user.
//!
//! Layers, lowest first: [`wire`] turns bytes into typed headers and back; [`service`] answers
//! for the emulated hosts; the flow tables ([`tcp`], [`udp`], [`ping`]) splice flows onto host
//! sockets; the [`engine`] parses each frame once and decides which of them gets it.

pub mod capture;
mod command;
pub mod control;
pub mod engine;
pub mod flow;
pub mod forward;
pub mod guestfwd;
pub mod launcher;
pub mod link;
pub mod nat;
pub mod queue_pairs;
pub mod ratelimit;
pub mod service;
pub mod smb;
mod sys;
pub mod wire;

pub use engine::{Counters, Engine, EngineOptions};
pub use flow::{ping, tcp, udp};
pub use link::{LinkFull, MemoryLink, RxLink, RxSlot, TxFrame};

/// Waits for epoll events in unit tests, retrying when a signal interrupts the wait: the
/// guest forward tests run commands in the same process, and a child's SIGCHLD that arrives
/// while a thread blocks signals (inside `posix_spawn`) can wake any other thread's
/// `epoll_wait` with `EINTR`.
#[cfg(test)]
pub(crate) fn wait_for_events(
    epoll: &vmm_sys_util::epoll::Epoll,
    timeout_ms: i32,
    events: &mut [vmm_sys_util::epoll::EpollEvent],
) -> usize {
    loop {
        match epoll.wait(timeout_ms, events) {
            Ok(n) => return n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        }
    }
}
