//! Guest forwards (`guestfwd=…-cmd:`) and the smb share: programs libslirp runs for guest
//! connections to an address of the network, placed and checked as libslirp does.

use std::net::Ipv4Addr;

use super::checks::dhcp_pool;
use crate::addr::v4_or;
use crate::error::ConfigError;
use crate::request::Request;
use crate::warning::Warning;
use crate::{GuestForward, NetPlan, SmbShare, prefix_to_mask};

/// QEMU's words for every address libslirp's `check_guestfwd` refuses.
const QEMU_GUESTFWD_REFUSED: &str = "QEMU: Conflicting/invalid host:port in guest forwarding rule";

/// QEMU's words when libslirp refuses the address of the smb share.
const QEMU_SMBSERVER_REFUSED: &str = "QEMU: Conflicting/invalid smbserver address";

/// A program libslirp runs for each guest connection to an address of the network (a guest
/// forward or the smb share), as errors and warnings name it.
struct ExecTarget<'a> {
    /// The setting that asked for it.
    origin: &'a str,
    /// The setting that gave its address (the same, or `smbserver=`).
    addr_origin: &'a str,
    /// Its address as written; `None` or 0.0.0.0: the network's `.2.4` position.
    addr: Option<Ipv4Addr>,
    /// "a guest forward", "the smb share".
    noun: &'static str,
    /// "this guest forward", "the smb share".
    this: &'static str,
    /// QEMU's error for an address libslirp refuses.
    qemu: &'static str,
}

/// The address of a guest forward or the smb share, checked as libslirp's `check_guestfwd`
/// checks both against the plan's IPv4 network, whichever profile made it: the address must be
/// inside the network and be neither the gateway nor the DNS address, which slirp answers
/// itself. One in the DHCP pool is legal but unreachable from the guest that is leased it.
fn exec_addr(
    req: &Request,
    plan: &NetPlan,
    t: &ExecTarget,
    w: &mut Vec<Warning>,
) -> Result<Ipv4Addr, ConfigError> {
    let Some(v4) = &plan.ipv4 else {
        return Err(ConfigError::Conflict(format!(
            "{}: {} needs IPv4, which is disabled by {}",
            t.origin,
            t.noun,
            req.ipv4_off.as_deref().unwrap_or("the configuration")
        )));
    };
    let cidr = format!("{}/{}", v4.network, v4.prefix_len);
    let refuse = |why: String| ConfigError::invalid(t.addr_origin, format!("{why} ({})", t.qemu));
    // libslirp's default, placed like the gateway and DNS addresses: the host bits of
    // 0.0.2.4 in the network (10.0.2.4 by default, 192.168.76.4 in 192.168.76.0/24).
    let (addr, shown) = match t.addr.filter(|a| !a.is_unspecified()) {
        Some(a) => (a, a.to_string()),
        None => {
            let mask = prefix_to_mask(v4.prefix_len);
            let a = v4_or(u32::from(v4.network) | (0x0204 & !mask));
            (a, format!("the default address {a}"))
        }
    };
    if !v4.contains(addr) {
        return Err(refuse(format!(
            "{shown} is outside {cidr}; {} needs an address of {cidr}",
            t.noun
        )));
    }
    for (what, taken) in [("gateway", v4.gateway), ("DNS address", v4.dns)] {
        if addr == taken {
            return Err(refuse(format!(
                "{shown} is the {what}; {} needs another address of {cidr}",
                t.noun
            )));
        }
    }
    let (first, last) = dhcp_pool(v4, plan);
    if (first..=last).contains(&u32::from(addr)) {
        w.push(Warning::ExecInPool {
            origin: t.addr_origin.to_string(),
            addr,
            first: v4.dhcp_start,
            last: v4_or(last),
            this: t.this,
        });
    }
    Ok(addr)
}

/// Give each guest forward its address, checked by [`exec_addr`]; two on one address and
/// port conflict.
pub(super) fn resolve_guest_forwards(
    req: &Request,
    plan: &NetPlan,
    w: &mut Vec<Warning>,
) -> Result<Vec<GuestForward>, ConfigError> {
    let mut out: Vec<GuestForward> = Vec::with_capacity(req.guest_forwards.len());
    for g in &req.guest_forwards {
        let target = ExecTarget {
            origin: &g.origin,
            addr_origin: &g.origin,
            addr: g.value.addr,
            noun: "a guest forward",
            this: "this guest forward",
            qemu: QEMU_GUESTFWD_REFUSED,
        };
        let addr = exec_addr(req, plan, &target, w)?;
        // libslirp means to refuse this too, but compares ports of different byte orders.
        // `out` holds the earlier rules in order, so `j` indexes both lists.
        if let Some(j) = out
            .iter()
            .position(|f| f.addr == addr && f.port == g.value.port)
        {
            return Err(ConfigError::Conflict(format!(
                "{} and {} both forward guest connections to {addr}:{}",
                req.guest_forwards[j].origin, g.origin, g.value.port
            )));
        }
        out.push(GuestForward {
            addr,
            port: g.value.port,
            command: g.value.command.clone(),
            argv: g.value.argv.clone(),
        });
    }
    Ok(out)
}

/// slirp's `smb=`: the share's address, checked by [`exec_addr`] as QEMU's two
/// `slirp_add_exec` calls check it, after the guest forwards (which QEMU adds first); a guest
/// forward on its address and port 139 or 445 conflicts with it. `restrict=on` leaves it be,
/// as it leaves guest forwards.
pub(super) fn resolve_smb(
    req: &Request,
    plan: &NetPlan,
    w: &mut Vec<Warning>,
) -> Result<Option<SmbShare>, ConfigError> {
    let Some(smb) = &req.smb else {
        return Ok(None);
    };
    let target = ExecTarget {
        origin: &smb.export.origin,
        addr_origin: smb
            .server
            .as_ref()
            .map_or(&smb.export.origin, |s| &s.origin),
        addr: smb.server.as_ref().map(|s| s.value),
        noun: "the smb share",
        this: "the smb share",
        qemu: QEMU_SMBSERVER_REFUSED,
    };
    let addr = exec_addr(req, plan, &target, w)?;
    // plan.guest_forwards and req.guest_forwards are in the same order.
    if let Some((j, f)) = plan
        .guest_forwards
        .iter()
        .enumerate()
        .find(|(_, f)| f.addr == addr && SmbShare::PORTS.contains(&f.port))
    {
        return Err(ConfigError::Conflict(format!(
            "{} and {} both forward guest connections to {addr}:{} (smbd listens on ports \
             139 and 445)",
            req.guest_forwards[j].origin, smb.export.origin, f.port
        )));
    }
    Ok(Some(SmbShare {
        addr,
        export: smb.export.value.clone(),
    }))
}
