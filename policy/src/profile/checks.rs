//! Checks of the request against itself and against the plan, whichever profile made it:
//! families and services switched off, forwards that collide, the gateway MAC, the TFTP root.

use std::net::{IpAddr, Ipv4Addr};

use super::kind::Profile;
use crate::addr::v4_or;
use crate::error::ConfigError;
use crate::request::{Request, origin};
use crate::warning::Warning;
use crate::{HostListen, Ipv4Plan, MacAddr, NetPlan, Proto};

/// Refuse settings for a family that is switched off (QEMU's own check covers `--slirp`;
/// this one catches the mix of `--slirp ipv4=off` with `--address`, say, and `-4`/`-6` with
/// whatever any front end set for the other family).
pub(super) fn check_disabled(req: &Request) -> Result<(), ConfigError> {
    if let Some(off) = &req.ipv4_off {
        let given = [
            origin(&req.v4_addr),
            origin(&req.v4_prefix),
            origin(&req.v4_gateway),
            origin(&req.v4_dns),
            origin(&req.v4_dhcp_start),
        ]
        .into_iter()
        .flatten()
        .next();
        if let Some(g) = given {
            return Err(ConfigError::Conflict(format!(
                "{g}: IPv4 is disabled by {off}"
            )));
        }
    }
    if let Some(off) = &req.ipv6_off {
        let given = [
            origin(&req.v6_addr),
            origin(&req.v6_prefix),
            origin(&req.v6_gateway),
            origin(&req.v6_dns),
        ]
        .into_iter()
        .flatten()
        .next();
        if let Some(g) = given {
            return Err(ConfigError::Conflict(format!(
                "{g}: IPv6 is disabled by {off}"
            )));
        }
    }
    Ok(())
}

/// Refuse forwards of a protocol that is switched off (`-t 8080 --no-tcp`): the connections
/// they bring in would reach a guest whose answers are all dropped.
pub(super) fn check_services(req: &Request) -> Result<(), ConfigError> {
    for f in &req.forwards {
        let (on, switch, name) = match f.value.proto {
            Proto::Tcp => (req.services.tcp, "--no-tcp", "TCP"),
            Proto::Udp => (req.services.udp, "--no-udp", "UDP"),
        };
        if !on {
            return Err(ConfigError::Conflict(format!(
                "{} and {switch}: {name} forwarding needs {name}",
                f.origin
            )));
        }
    }
    if !req.services.tcp
        && let Some(g) = req.guest_forwards.first()
    {
        return Err(ConfigError::Conflict(format!(
            "{} and --no-tcp: a guest forward needs TCP",
            g.origin
        )));
    }
    if !req.services.tcp
        && let Some(smb) = &req.smb
    {
        return Err(ConfigError::Conflict(format!(
            "{} and --no-tcp: the smb share needs TCP",
            smb.export.origin
        )));
    }
    Ok(())
}

/// Whether a guest fetches boot file `b` from the gateway by TFTP (not an HTTP URL for a
/// UEFI HTTP boot client).
pub(super) fn fetched_by_tftp(b: &str) -> bool {
    !(b.starts_with("http://") || b.starts_with("https://"))
}

/// What a TFTP root that cannot serve means for the guest: slirp accepts any `tftp=`, so these
/// are warnings, but a typo in the path otherwise shows only as a boot that fails.
pub(super) fn tftp_warnings(root: &std::path::Path, bootfile: Option<&str>, w: &mut Vec<Warning>) {
    if !root.is_dir() {
        w.push(Warning::TftpRootNotDir {
            root: root.to_path_buf(),
        });
        return;
    }
    if let Some(b) = bootfile
        && fetched_by_tftp(b)
        && !root.join(b.trim_start_matches('/')).is_file()
    {
        w.push(Warning::BootFileMissing {
            bootfile: b.to_string(),
            root: root.to_path_buf(),
        });
    }
}

/// The gateway MAC: given or slirp's 52:55 + gateway address; never the guest's own (the
/// seed's third symptom: libvirt 9.0 passed the guest's MAC as passt's `--mac-addr`).
pub(super) fn gateway_mac(
    profile: Profile,
    req: &Request,
    gateway: Ipv4Addr,
) -> Result<MacAddr, ConfigError> {
    let (mac, subject) = match &req.gateway_mac {
        Some(m) => (m.value, m.origin.clone()),
        None => {
            let m = MacAddr::slirp_for_ipv4(gateway);
            (
                m,
                format!("the gateway MAC {m} (52:55 + the gateway {gateway})"),
            )
        }
    };
    if mac.is_multicast() {
        return Err(ConfigError::invalid(
            subject,
            "the gateway MAC must be a unicast address",
        ));
    }
    if mac.0 == [0; 6] {
        return Err(ConfigError::invalid(
            subject,
            "the gateway MAC cannot be all zeros",
        ));
    }
    if let Some(g) = &req.guest_mac
        && g.value == mac
    {
        return Err(ConfigError::refused(
            profile,
            subject,
            format!(
                "{mac} is the guest's own MAC ({}): the guest would take the gateway for itself",
                g.origin
            ),
        ));
    }
    Ok(mac)
}

/// The first and last address the DHCP server hands out, as numbers.
pub(super) fn dhcp_pool(v4: &Ipv4Plan, plan: &NetPlan) -> (u32, u32) {
    let first = u32::from(v4.dhcp_start);
    (
        first,
        first.saturating_add(u32::from(plan.dhcp.pool_size.max(1)) - 1),
    )
}

pub(super) fn check_forwards(
    req: &Request,
    plan: &NetPlan,
    w: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let fwds = &req.forwards;
    for (i, f) in fwds.iter().enumerate() {
        match f.value.guest_addr {
            Some(IpAddr::V4(g)) => match &plan.ipv4 {
                None => {
                    return Err(ConfigError::Conflict(format!(
                        "{}: forwards to IPv4, which is disabled",
                        f.origin
                    )));
                }
                Some(v4) => {
                    let (first, last) = dhcp_pool(v4, plan);
                    if !(first..=last).contains(&u32::from(g)) {
                        w.push(Warning::ForwardOutsidePool {
                            origin: f.origin.clone(),
                            addr: g,
                            first: v4.dhcp_start,
                            last: v4_or(last),
                        });
                    }
                }
            },
            Some(IpAddr::V6(_)) if plan.ipv6.is_none() => {
                return Err(ConfigError::Conflict(format!(
                    "{}: forwards to IPv6, which is disabled",
                    f.origin
                )));
            }
            _ => {}
        }
        for g in &fwds[..i] {
            if let Some(what) = g.value.clash(&f.value) {
                return Err(ConfigError::Conflict(format!(
                    "{} and {} both forward {what}",
                    g.origin, f.origin
                )));
            }
        }
    }
    let origins: Vec<String> = fwds
        .iter()
        .filter(|f| {
            matches!(f.value.host, HostListen::Inet { addr, .. }
                if addr.is_none_or(|a| a.is_unspecified()))
        })
        .map(|f| f.origin.clone())
        .fold(Vec::new(), |mut v, o| {
            if !v.contains(&o) {
                v.push(o);
            }
            v
        });
    if !origins.is_empty() {
        w.push(Warning::ForwardsOpen { origins });
    }
    Ok(())
}
