//! `--explain --format json`: the stable keys of `policy/EXPLAIN.md`.

use serde::Serialize;

use super::shared::{dhcp_end, guest_ports};
use crate::HostListen;
use crate::profile::Resolved;

/// Bumped only if a key changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

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
