//! `--explain --format text`: aligned sections for a terminal.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::shared::{dhcp_end, guest_ports};
use crate::profile::Resolved;
use crate::{HostListen, PortForward};

fn or_dash(v: Option<&str>) -> String {
    v.map_or_else(|| "-".to_string(), str::to_string)
}

fn host_side(f: &PortForward) -> String {
    match &f.host {
        HostListen::Unix { path } => format!("unix:{}", path.display()),
        HostListen::Inet { addr, iface, ports } => {
            let a = match addr {
                None => "*".to_string(),
                Some(IpAddr::V6(a)) => format!("[{a}]"),
                Some(IpAddr::V4(a)) => a.to_string(),
            };
            let i = iface.as_ref().map(|i| format!("%{i}")).unwrap_or_default();
            format!("{a}{i}:{ports}")
        }
    }
}

fn guest_side(f: &PortForward) -> String {
    let a = match f.guest_addr {
        None => "guest".to_string(),
        Some(IpAddr::V6(a)) => format!("[{a}]"),
        Some(IpAddr::V4(a)) => a.to_string(),
    };
    let (first, last) = guest_ports(f);
    if first == last {
        format!("{a}:{first}")
    } else {
        format!("{a}:{first}-{last}")
    }
}

/// One `key value` line of a section, values aligned.
fn line(s: &mut String, k: &str, v: &str) {
    let _ = writeln!(s, "  {k:<18}{v}");
}

/// The plan as an aligned, sectioned text for a terminal.
pub fn render_text(r: &Resolved) -> String {
    let mut s = String::new();
    for section in [
        text_header,
        text_ipv4,
        text_dhcp,
        text_link,
        text_ipv6,
        text_host_access,
        text_forwards,
        text_warnings,
    ] {
        section(&mut s, r);
    }
    s
}

/// The profile, where the configuration came from, and the services switched off.
fn text_header(s: &mut String, r: &Resolved) {
    let p = &r.plan;
    let _ = writeln!(s, "Guest network plan (profile {})", r.profile);
    for i in &r.inputs {
        line(s, "from", i);
    }
    let off = p.services.off();
    if !off.is_empty() {
        line(s, "services off", &off.join(", "));
    }
}

/// The guest's IPv4 address, pool, network, gateway and DNS.
fn text_ipv4(s: &mut String, r: &Resolved) {
    let p = &r.plan;
    let _ = writeln!(s, "IPv4");
    match &p.ipv4 {
        None => line(s, "", "disabled"),
        Some(v4) => {
            line(
                s,
                "guest address",
                &format!(
                    "{}/{} (netmask {}), {}",
                    v4.dhcp_start,
                    v4.prefix_len,
                    v4.netmask(),
                    if p.services.dhcp {
                        "by DHCP"
                    } else {
                        "not by DHCP (--no-dhcp): configure it in the guest"
                    }
                ),
            );
            let pool = p.dhcp.pool_size;
            let pool_text = if pool <= 1 {
                format!("{} (1 lease)", v4.dhcp_start)
            } else {
                format!("{}-{} ({pool} leases)", v4.dhcp_start, dhcp_end(v4, pool))
            };
            line(s, "DHCP pool", &pool_text);
            line(
                s,
                "network",
                &format!(
                    "{}/{}, broadcast {}",
                    v4.network,
                    v4.prefix_len,
                    v4.broadcast()
                ),
            );
            line(
                s,
                "gateway",
                &format!("{}, MAC {}", v4.gateway, p.gateway_mac),
            );
            line(
                s,
                "DNS",
                &format!("{} (relayed to the host's resolver)", v4.dns),
            );
        }
    }
}

/// What DHCP tells the guest besides its address.
fn text_dhcp(s: &mut String, r: &Resolved) {
    let p = &r.plan;
    let _ = writeln!(s, "DHCP");
    line(s, "lease", &format!("{} s", p.dhcp.lease_secs));
    line(
        s,
        "router, DNS",
        if p.restrict {
            "not sent (restrict=on)"
        } else {
            "sent"
        },
    );
    line(
        s,
        "MTU option",
        &p.dhcp
            .mtu_option
            .map_or_else(|| "not sent".to_string(), |m| m.to_string()),
    );
    line(s, "hostname", &or_dash(p.dhcp.hostname.as_deref()));
    line(s, "domain name", &or_dash(p.dhcp.domain_name.as_deref()));
    let search = p.dhcp.search.join(" ");
    line(
        s,
        "search",
        &or_dash((!search.is_empty()).then_some(search.as_str())),
    );
    line(s, "boot file", &or_dash(p.dhcp.bootfile.as_deref()));
    line(
        s,
        "TFTP server name",
        &or_dash(p.dhcp.tftp_server_name.as_deref()),
    );
}

/// MTU and MAC of the link.
fn text_link(s: &mut String, r: &Resolved) {
    let p = &r.plan;
    let _ = writeln!(s, "Link");
    line(s, "MTU", &p.mtu.to_string());
    line(
        s,
        "guest MAC",
        &r.guest_mac.map_or_else(
            || "learned from the guest's frames".to_string(),
            |m| format!("{m} (from <mac>; the backend learns it from the guest's frames)"),
        ),
    );
}

/// The IPv6 prefix, gateway and DNS.
fn text_ipv6(s: &mut String, r: &Resolved) {
    let p = &r.plan;
    let _ = writeln!(s, "IPv6");
    match &p.ipv6 {
        None => line(s, "", "disabled"),
        Some(v6) => {
            line(
                s,
                "prefix",
                &format!(
                    "{}/{} ({})",
                    v6.prefix,
                    v6.prefix_len,
                    if p.services.router_advertisements() {
                        "router advertisements"
                    } else {
                        "not advertised: no router advertisements"
                    }
                ),
            );
            line(
                s,
                "guest address",
                &v6.guest_addr.map_or_else(
                    || "autoconfigured (SLAAC) by the guest".to_string(),
                    |a| format!("{a} requested; autoconfigured (SLAAC) by the guest"),
                ),
            );
            line(s, "gateway", &v6.gateway.to_string());
            line(s, "DNS", &v6.dns.to_string());
        }
    }
}

/// What of the host the guest reaches through the gateway, and TFTP.
fn text_host_access(s: &mut String, r: &Resolved) {
    let p = &r.plan;
    let _ = writeln!(s, "Host access");
    let mut maps = Vec::new();
    if let Some(v4) = &p.ipv4 {
        maps.push(format!("{} -> 127.0.0.1", v4.gateway));
    }
    if let Some(v6) = &p.ipv6 {
        maps.push(format!("{} -> ::1", v6.gateway));
    }
    line(
        s,
        "gateway->loopback",
        &if p.map_gateway_to_loopback {
            maps.join(", ")
        } else {
            "off (--no-map-gw)".to_string()
        },
    );
    line(
        s,
        "restrict",
        if p.restrict {
            "on: the guest reaches only the gateway and DNS; forwards still work"
        } else {
            "off"
        },
    );
    line(
        s,
        "TFTP root",
        &p.tftp_root
            .as_ref()
            .map_or_else(|| "-".to_string(), |t| t.display().to_string()),
    );
}

/// Host ports forwarded to the guest, guest forwards and the smb share.
fn text_forwards(s: &mut String, r: &Resolved) {
    let p = &r.plan;
    let _ = writeln!(s, "Port forwards");
    if p.forwards.is_empty() && p.guest_forwards.is_empty() && p.smb.is_none() {
        line(s, "", "none");
    }
    for f in &p.forwards {
        let mut v = format!("{} -> {}", host_side(f), guest_side(f));
        if f.skip_ephemeral {
            v.push_str(" (host ephemeral ports left out)");
        }
        line(s, &f.proto.to_string(), &v);
    }
    if p.forwards.iter().any(|f| f.guest_addr.is_none())
        && let Some(v4) = &p.ipv4
    {
        line(
            s,
            "",
            &format!(
                "guest = {} for IPv4, the guest's own address for IPv6",
                v4.dhcp_start
            ),
        );
    }
    for g in &p.guest_forwards {
        line(
            s,
            "guest forward",
            &format!("{}:{} -> command: {}", g.addr, g.port, g.command),
        );
    }
    if let Some(smb) = &p.smb {
        line(
            s,
            "smb share",
            &format!(
                "{} at {} ports 139 and 445 (smbd; the guest opens \\\\{}\\qemu)",
                smb.export.display(),
                smb.addr,
                smb.addr
            ),
        );
    }
}

/// The warnings, or "none".
fn text_warnings(s: &mut String, r: &Resolved) {
    let _ = writeln!(s, "Warnings");
    if r.warnings.is_empty() {
        line(s, "", "none");
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  ! {w}");
    }
}
