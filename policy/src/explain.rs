//! `--explain`: the guest-visible plan, for people (text) and for scripts (JSON).
//!
//! Both renderings show the same facts: addresses and masks, gateway and its MAC, DNS, DHCP
//! options and lease, MTU, IPv6, port forwards, guest forwards (slirp's `guestfwd=`), the smb
//! share (slirp's `smb=`), host-loopback mapping, the services switched off (passt's
//! `--no-*`), and the warnings the profile raised. The JSON keys are a stable
//! interface, listed in `policy/EXPLAIN.md`; keys are only ever added, and `format_version`
//! changes if one changes meaning.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::profile::Resolved;
use crate::{HostListen, Ipv4Plan, PortForward};

/// Output format of `--explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExplainFormat {
    #[default]
    Text,
    Json,
}

/// The plan in the chosen format.
pub fn render(r: &Resolved, format: ExplainFormat) -> String {
    match format {
        ExplainFormat::Text => render_text(r),
        ExplainFormat::Json => render_json(r),
    }
}

/// Bumped only if a key changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

fn dhcp_end(v4: &Ipv4Plan, pool: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(v4.dhcp_start).saturating_add(u32::from(pool.max(1)) - 1))
}

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

fn guest_ports(f: &PortForward) -> (u16, u16) {
    let count = match &f.host {
        HostListen::Inet { ports, .. } => ports.count(),
        HostListen::Unix { .. } => 1,
    };
    let last = (u32::from(f.guest_port) + count - 1).min(65535) as u16;
    (f.guest_port, last)
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

#[derive(Serialize)]
struct Json<'a> {
    format_version: u32,
    profile: String,
    inputs: &'a [String],
    guest_mac: Option<String>,
    gateway_mac: String,
    ipv4: Option<JsonV4>,
    ipv6: Option<JsonV6>,
    dhcp: JsonDhcp<'a>,
    mtu: u16,
    restrict: bool,
    map_gateway_to_loopback: bool,
    tftp_root: Option<String>,
    forwards: Vec<JsonForward>,
    guest_forwards: Vec<JsonGuestForward<'a>>,
    smb: Option<JsonSmb>,
    services: JsonServices,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct JsonServices {
    dhcp: bool,
    dhcpv6: bool,
    ndp: bool,
    ra: bool,
    tcp: bool,
    udp: bool,
    icmp: bool,
}

#[derive(Serialize)]
struct JsonV4 {
    guest_address: String,
    prefix_len: u8,
    netmask: String,
    network: String,
    broadcast: String,
    gateway: String,
    dns: String,
    dhcp_start: String,
    dhcp_end: String,
}

#[derive(Serialize)]
struct JsonV6 {
    prefix: String,
    prefix_len: u8,
    gateway: String,
    dns: String,
    guest_address: Option<String>,
}

#[derive(Serialize)]
struct JsonDhcp<'a> {
    lease_secs: u32,
    pool_size: u8,
    router_and_dns_sent: bool,
    mtu_option: Option<u16>,
    hostname: Option<&'a str>,
    domain_name: Option<&'a str>,
    search: &'a [String],
    bootfile: Option<&'a str>,
    tftp_server_name: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonForward {
    proto: String,
    host_address: Option<String>,
    host_interface: Option<String>,
    host_unix_path: Option<String>,
    host_ports: Option<[u16; 2]>,
    guest_address: Option<String>,
    guest_ports: [u16; 2],
    skip_ephemeral: bool,
}

#[derive(Serialize)]
struct JsonGuestForward<'a> {
    address: String,
    port: u16,
    command: &'a str,
    argv: &'a [String],
}

#[derive(Serialize)]
struct JsonSmb {
    addr: String,
    export: String,
}

/// The plan as pretty-printed JSON (keys in `policy/EXPLAIN.md`), ending in a newline.
pub fn render_json(r: &Resolved) -> String {
    let p = &r.plan;
    let json = Json {
        format_version: FORMAT_VERSION,
        profile: r.profile.to_string(),
        inputs: &r.inputs,
        guest_mac: r.guest_mac.map(|m| m.to_string()),
        gateway_mac: p.gateway_mac.to_string(),
        ipv4: p.ipv4.as_ref().map(|v4| JsonV4 {
            guest_address: v4.dhcp_start.to_string(),
            prefix_len: v4.prefix_len,
            netmask: v4.netmask().to_string(),
            network: v4.network.to_string(),
            broadcast: v4.broadcast().to_string(),
            gateway: v4.gateway.to_string(),
            dns: v4.dns.to_string(),
            dhcp_start: v4.dhcp_start.to_string(),
            dhcp_end: dhcp_end(v4, p.dhcp.pool_size).to_string(),
        }),
        ipv6: p.ipv6.as_ref().map(|v6| JsonV6 {
            prefix: v6.prefix.to_string(),
            prefix_len: v6.prefix_len,
            gateway: v6.gateway.to_string(),
            dns: v6.dns.to_string(),
            guest_address: v6.guest_addr.map(|a| a.to_string()),
        }),
        dhcp: JsonDhcp {
            lease_secs: p.dhcp.lease_secs,
            pool_size: p.dhcp.pool_size,
            router_and_dns_sent: !p.restrict,
            mtu_option: p.dhcp.mtu_option,
            hostname: p.dhcp.hostname.as_deref(),
            domain_name: p.dhcp.domain_name.as_deref(),
            search: &p.dhcp.search,
            bootfile: p.dhcp.bootfile.as_deref(),
            tftp_server_name: p.dhcp.tftp_server_name.as_deref(),
        },
        mtu: p.mtu,
        restrict: p.restrict,
        map_gateway_to_loopback: p.map_gateway_to_loopback,
        tftp_root: p.tftp_root.as_ref().map(|t| t.display().to_string()),
        forwards: p
            .forwards
            .iter()
            .map(|f| {
                let (host_address, host_interface, host_unix_path, host_ports) = match &f.host {
                    HostListen::Inet { addr, iface, ports } => (
                        addr.map(|a| a.to_string()),
                        iface.clone(),
                        None,
                        Some([ports.first, ports.last]),
                    ),
                    HostListen::Unix { path } => {
                        (None, None, Some(path.display().to_string()), None)
                    }
                };
                let (g1, g2) = guest_ports(f);
                JsonForward {
                    proto: f.proto.to_string(),
                    host_address,
                    host_interface,
                    host_unix_path,
                    host_ports,
                    guest_address: f.guest_addr.map(|a| a.to_string()),
                    guest_ports: [g1, g2],
                    skip_ephemeral: f.skip_ephemeral,
                }
            })
            .collect(),
        guest_forwards: p
            .guest_forwards
            .iter()
            .map(|g| JsonGuestForward {
                address: g.addr.to_string(),
                port: g.port,
                command: &g.command,
                argv: &g.argv,
            })
            .collect(),
        smb: p.smb.as_ref().map(|smb| JsonSmb {
            addr: smb.addr.to_string(),
            export: smb.export.display().to_string(),
        }),
        services: JsonServices {
            dhcp: p.services.dhcp,
            dhcpv6: p.services.dhcpv6,
            ndp: p.services.ndp,
            ra: p.services.ra,
            tcp: p.services.tcp,
            udp: p.services.udp,
            icmp: p.services.icmp,
        },
        warnings: r.warnings.iter().map(ToString::to_string).collect(),
    };
    let mut out = serde_json::to_string_pretty(&json).expect("plain data serializes");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Inputs;

    fn resolved(slirp: &str) -> Resolved {
        Inputs {
            slirp: vec![slirp.into()],
            ..Inputs::default()
        }
        .build_with_xml(None)
        .unwrap_or_else(|e| panic!("{slirp}: {e}"))
    }

    const TWO_GUEST_FORWARDS: &str =
        "guestfwd=tcp:10.0.2.100:1234-cmd:netcat 127.0.0.1 4321,guestfwd=::22-cmd:sh -c 'nc x 22'";

    #[test]
    fn text_shows_guest_forwards() {
        let text = render_text(&resolved(TWO_GUEST_FORWARDS));
        let section = text
            .split_once("Port forwards\n")
            .and_then(|(_, rest)| rest.split_once("Warnings\n"))
            .map(|(section, _)| section)
            .unwrap();
        assert_eq!(
            section,
            "  guest forward     10.0.2.100:1234 -> command: netcat 127.0.0.1 4321\n\
             \x20 guest forward     10.0.2.4:22 -> command: sh -c 'nc x 22'\n"
        );
        // EXPLAIN.md shows the first line as the example.
        assert!(include_str!("../EXPLAIN.md").contains(section.lines().next().unwrap()));
        let text = render_text(&resolved(
            "hostfwd=tcp:127.0.0.1:2222-:22,guestfwd=::80-cmd:cat",
        ));
        assert!(
            text.contains(
                "Port forwards\n\
                 \x20 tcp               127.0.0.1:2222 -> guest:22\n\
                 \x20                   guest = 10.0.2.15 for IPv4, the guest's own address for IPv6\n\
                 \x20 guest forward     10.0.2.4:80 -> command: cat\n\
                 Warnings\n"
            ),
            "{text}"
        );
        let text = render_text(&resolved("net=10.0.0.0/8"));
        assert!(
            text.contains("Port forwards\n                    none\n"),
            "{text}"
        );
    }

    #[test]
    fn json_lists_guest_forwards() {
        let out = render_json(&resolved(TWO_GUEST_FORWARDS));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["guest_forwards"],
            serde_json::json!([
                {
                    "address": "10.0.2.100",
                    "port": 1234,
                    "command": "netcat 127.0.0.1 4321",
                    "argv": ["netcat", "127.0.0.1", "4321"],
                },
                {
                    "address": "10.0.2.4",
                    "port": 22,
                    "command": "sh -c 'nc x 22'",
                    "argv": ["sh", "-c", "nc x 22"],
                },
            ])
        );
        let doc = include_str!("../EXPLAIN.md");
        for key in ["address", "port", "command", "argv"] {
            assert!(
                doc.contains(&format!("| `guest_forwards[].{key}` |")),
                "{key}"
            );
        }
        assert!(doc.contains("| `guest_forwards` |"));

        let v: serde_json::Value =
            serde_json::from_str(&render_json(&resolved("net=10.0.0.0/8"))).unwrap();
        assert_eq!(v["guest_forwards"], serde_json::json!([]));
    }

    #[test]
    fn text_shows_the_smb_share() {
        let text = render_text(&resolved(
            "net=192.168.76.0/24,guestfwd=::22-cmd:cat,smb=/srv/share",
        ));
        assert!(
            text.contains(
                "Port forwards\n\
                 \x20 guest forward     192.168.76.4:22 -> command: cat\n\
                 \x20 smb share         /srv/share at 192.168.76.4 ports 139 and 445 (smbd; the \
                 guest opens \\\\192.168.76.4\\qemu)\n\
                 Warnings\n"
            ),
            "{text}"
        );
        // Alone, it is the section's only line.
        let text = render_text(&resolved("smb=/srv/share,smbserver=10.0.2.9"));
        let line = "  smb share         /srv/share at 10.0.2.9 ports 139 and 445 (smbd; the guest \
                    opens \\\\10.0.2.9\\qemu)\n";
        assert!(
            text.contains(&format!("Port forwards\n{line}Warnings\n")),
            "{text}"
        );
        // EXPLAIN.md shows the default share as the example.
        let text = render_text(&resolved("smb=/srv/share"));
        let line = text.lines().find(|l| l.contains("smb share")).unwrap();
        assert!(
            include_str!("../EXPLAIN.md").contains(&format!("\n{line}\n")),
            "{line}"
        );
    }

    #[test]
    fn json_has_the_smb_share() {
        let json = |opts: &str| -> serde_json::Value {
            serde_json::from_str(&render_json(&resolved(opts))).unwrap()
        };
        assert_eq!(
            json("net=192.168.76.0/24,smb=/srv/share")["smb"],
            serde_json::json!({"addr": "192.168.76.4", "export": "/srv/share"})
        );
        let v = json("net=10.0.0.0/8");
        assert!(v.as_object().unwrap().contains_key("smb"));
        assert_eq!(v["smb"], serde_json::Value::Null);
        let doc = include_str!("../EXPLAIN.md");
        for key in ["smb", "smb.addr", "smb.export"] {
            assert!(doc.contains(&format!("| `{key}` |")), "{key}");
        }
    }
}
