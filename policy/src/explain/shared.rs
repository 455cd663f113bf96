//! Facts both renderings derive from the plan the same way.

use std::net::Ipv4Addr;

use crate::{HostListen, Ipv4Plan, PortForward};

/// The last address of a pool of `pool` leases from the first.
pub(super) fn dhcp_end(v4: &Ipv4Plan, pool: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(v4.dhcp_start).saturating_add(u32::from(pool.max(1)) - 1))
}

/// The guest ports a forward reaches: its first, and as many more as it has host ports.
pub(super) fn guest_ports(f: &PortForward) -> (u16, u16) {
    let count = match &f.host {
        HostListen::Inet { ports, .. } => ports.count(),
        HostListen::Unix { .. } => 1,
    };
    let last = (u32::from(f.guest_port) + count - 1).min(65535) as u16;
    (f.guest_port, last)
}
