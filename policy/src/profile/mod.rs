//! Profiles: what the guest sees, given what the user asked for.
//!
//! The front ends record a request; a profile turns it into the [`NetPlan`]. Both profiles
//! read every front end alike, so the guest's view depends on the request and the profile
//! only, never on which link (vhost-user or stream) carries the frames.
//!
//! * `slirp` (the default) is QEMU's `-netdev user` exactly: an address is a network
//!   (`net = addr & mask`), and gateway, DNS and the first DHCP address sit at
//!   `net | (0x0202, 0x0203, 0x020f & ~mask)` unless given; 16 leases; gateway MAC
//!   52:55 + the gateway's IPv4 bytes; QEMU's consistency checks. A libvirt `<ip>` is read as
//!   the `net=ADDR/PREFIX` libvirt passes QEMU, a default `<route>` as `host=`.
//! * `passt` hands out the address as given, with the given prefix as its netmask, one lease,
//!   and the gateway from the configuration (a default `<route>`, `--gateway`) or else the
//!   subnet's first host address (the second when the guest has the first); never the host
//!   machine's own router. With no IPv4 address configured it keeps slirp's 10.0.2.15/24,
//!   gateway 10.0.2.2 (passt itself would copy the host's address, which never happens here).
//!   The DNS address is `--dns` or slirp's `.3` position when free, else the lowest free
//!   host address. An IPv6 address is likewise the guest's own (offered by DHCPv6); without
//!   one, IPv6 stays slirp's fec0::/64. It refuses what would
//!   leave the guest broken: a network or broadcast address as the guest's, a gateway outside
//!   the guest's subnet, and (as the slirp profile does too) a gateway MAC equal to the
//!   guest's.
//!
//! Guest forwards (slirp's `guestfwd=`) and the smb share (`smb=`, `smbserver=`; smbd on ports
//! 139 and 445, as libslirp adds it) follow libslirp under either profile: an empty address is
//! the network's `.2.4` position (as the gateway is its `.2.2`), and the address must lie in
//! the network and be neither the gateway nor the DNS address.
//!
//! Anything legal but surprising becomes a warning that `--explain` shows.
//!
//! `resolve` is the whole pipeline; each profile's addressing is in `slirp.rs` and
//! `passt.rs`, the checks both share in `checks.rs`, and guest forwards and the smb share
//! (placed alike under both) in `exec.rs`.

mod checks;
mod exec;
mod kind;
mod passt;
mod slirp;

pub use kind::Profile;

use std::net::Ipv4Addr;

use crate::error::ConfigError;
use crate::request::Request;
use crate::warning::Warning;
use crate::{MacAddr, NetPlan};

/// The outcome of the policy layer: the plan, and what `--explain` says about it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub plan: NetPlan,
    /// Legal but surprising things, one sentence each.
    pub warnings: Vec<Warning>,
    /// The guest's own MAC from libvirt's `<mac>`: informational, netcore learns the real one.
    pub guest_mac: Option<MacAddr>,
    pub profile: Profile,
    /// Where the configuration came from (`--libvirt-xml dom.xml: <interface type='user'> #0`).
    pub inputs: Vec<String>,
}

/// Turn a request into the plan under `profile`; warnings come back alongside.
pub(crate) fn resolve(
    profile: Profile,
    mut req: Request,
) -> Result<(NetPlan, Vec<Warning>), ConfigError> {
    let mut w = std::mem::take(&mut req.notes);
    checks::check_disabled(&req)?;
    checks::check_services(&req)?;
    // A family switched off has no plan, whatever the profile would make of its settings
    // (check_disabled has refused any).
    let ipv4 = match profile {
        _ if req.ipv4_off.is_some() => None,
        Profile::Slirp => Some(slirp::ipv4(&req, &mut w)?),
        Profile::Passt => Some(passt::ipv4(&req, &mut w)?),
    };
    let ipv6 = match profile {
        _ if req.ipv6_off.is_some() => None,
        Profile::Slirp => Some(slirp::ipv6(&req, &mut w)?),
        Profile::Passt => Some(passt::ipv6(&req, &mut w)?),
    };
    let mut plan = NetPlan::slirp_default();
    let gw4 = ipv4
        .as_ref()
        .map_or(Ipv4Addr::new(10, 0, 2, 2), |v| v.gateway);
    plan.gateway_mac = checks::gateway_mac(profile, &req, gw4)?;
    plan.ipv4 = ipv4;
    plan.ipv6 = ipv6;
    plan.dhcp.pool_size = match profile {
        Profile::Slirp => slirp::POOL_SLIRP,
        Profile::Passt => 1,
    };
    plan.dhcp.hostname = req.hostname.clone();
    plan.dhcp.domain_name = req.domain_name.clone();
    plan.dhcp.search = req.search.clone().unwrap_or_default();
    plan.dhcp.bootfile = req.bootfile.clone();
    plan.dhcp.tftp_server_name = req.tftp_server_name.clone();
    match &req.mtu {
        Some(m) if m.value != 0 => {
            plan.mtu = m.value;
            plan.dhcp.mtu_option = Some(m.value);
        }
        _ => {}
    }
    if !req.services.udp
        && req.services.dhcp
        && let Some(v4) = &plan.ipv4
    {
        w.push(Warning::DnsWithoutUdp { dns: v4.dns });
    }
    if plan.ipv6.is_some() && plan.mtu < 1280 {
        w.push(Warning::MtuBelowIpv6 { mtu: plan.mtu });
    }
    plan.restrict = req.restrict;
    plan.map_gateway_to_loopback = req.map_gateway_to_loopback;
    plan.services = req.services;
    plan.tftp_root = req.tftp_root.clone();
    if let Some(b) = &plan.dhcp.bootfile
        && plan.tftp_root.is_none()
        && checks::fetched_by_tftp(b)
    {
        w.push(Warning::BootFileWithoutTftp {
            bootfile: b.clone(),
        });
    }
    if let Some(root) = &plan.tftp_root {
        checks::tftp_warnings(root, plan.dhcp.bootfile.as_deref(), &mut w);
    }
    checks::check_forwards(&req, &plan, &mut w)?;
    plan.guest_forwards = exec::resolve_guest_forwards(&req, &plan, &mut w)?;
    plan.smb = exec::resolve_smb(&req, &plan, &mut w)?;
    plan.forwards = req.forwards.into_iter().map(|f| f.value).collect();
    Ok((plan, w))
}

#[cfg(test)]
mod tests;
