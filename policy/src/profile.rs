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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::{classful_passt, classful_qemu, v4_broadcast, v4_in, v4_net, v6_in, v6_net};
use crate::error::ConfigError;
use crate::request::{AddrKind, Request, Setting};
use crate::{
    GuestForward, HostListen, Ipv4Plan, Ipv6Plan, MacAddr, NetPlan, Proto, SmbShare, prefix_to_mask,
};

/// How addresses in the configuration become the guest's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// QEMU slirp's derivation (an address names the network).
    #[default]
    Slirp,
    /// passt's reading (the address is the guest's own), minus passt's broken cases.
    Passt,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Slirp => "slirp",
            Profile::Passt => "passt",
        })
    }
}

/// The outcome of the policy layer: the plan, and what `--explain` says about it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub plan: NetPlan,
    /// Legal but surprising things, one sentence each.
    pub warnings: Vec<String>,
    /// The guest's own MAC from libvirt's `<mac>`: informational, netcore learns the real one.
    pub guest_mac: Option<MacAddr>,
    pub profile: Profile,
    /// Where the configuration came from (`--libvirt-xml dom.xml: <interface type='user'> #0`).
    pub inputs: Vec<String>,
}

const POOL_SLIRP: u8 = 16;

fn v4_or(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr)
}

/// The words a setting came from, if given.
fn origin<T>(s: &Option<Setting<T>>) -> Option<&str> {
    s.as_ref().map(|s| s.origin.as_str())
}

/// Refuse settings for a family that is switched off (QEMU's own check covers `--slirp`;
/// this one catches the mix of `--slirp ipv4=off` with `--address`, say, and `-4`/`-6` with
/// whatever any front end set for the other family).
fn check_disabled(req: &Request) -> Result<(), ConfigError> {
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
fn check_services(req: &Request) -> Result<(), ConfigError> {
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

/// Who to blame for a derived value: its own setting when given, else the network it came from.
fn blame<T>(s: &Option<Setting<T>>, derived_from: &str) -> String {
    match s {
        Some(s) => s.origin.clone(),
        None => derived_from.to_string(),
    }
}

fn slirp_v4(req: &Request, w: &mut Vec<String>) -> Result<Option<Ipv4Plan>, ConfigError> {
    if req.ipv4_off.is_some() {
        return Ok(None);
    }
    let d = NetPlan::slirp_default()
        .ipv4
        .expect("slirp default has IPv4");
    let (mut net, mut prefix) = (d.network, d.prefix_len);
    let (mut host, mut dns, mut dhcp) = (d.gateway, d.dns, d.dhcp_start);
    let mut net_origin = "the default network 10.0.2.0/24".to_string();
    if let Some(a) = &req.v4_addr {
        prefix = match &req.v4_prefix {
            Some(p) if !(4..=32).contains(&p.value) => {
                return Err(ConfigError::invalid(
                    &p.origin,
                    format!("/{} is outside the 4-32 slirp accepts", p.value),
                ));
            }
            Some(p) => p.value,
            None => {
                let p = classful_qemu(a.value);
                if req.v4_addr_kind == AddrKind::Address {
                    w.push(format!(
                        "{}: no prefix given, so QEMU's classful mask /{p} applies",
                        a.origin
                    ));
                }
                p
            }
        };
        let mask = prefix_to_mask(prefix);
        net = v4_net(a.value, prefix);
        let n = u32::from(net);
        host = v4_or(n | (0x0202 & !mask));
        dhcp = v4_or(n | (0x020f & !mask));
        dns = v4_or(n | (0x0203 & !mask));
        net_origin = a.origin.clone();
    } else if let Some(p) = &req.v4_prefix {
        return Err(ConfigError::invalid(
            &p.origin,
            "a netmask needs an IPv4 address (--address, <ip> or net=)",
        ));
    }
    let cidr = format!("{net}/{prefix}");
    if let Some(g) = &req.v4_gateway {
        host = g.value;
        if !v4_in(net, prefix, host) {
            return Err(ConfigError::invalid(
                &g.origin,
                format!("the gateway {host} is outside the guest's network {cidr}"),
            ));
        }
    }
    if let Some(d) = &req.v4_dns {
        dns = d.value;
        if req.restrict && !v4_in(net, prefix, dns) {
            return Err(ConfigError::invalid(
                &d.origin,
                format!("with restrict=on the DNS address must be inside {cidr}"),
            ));
        }
    }
    if dns == host {
        return Err(ConfigError::invalid(
            blame(&req.v4_dns, &net_origin),
            format!("the DNS address {dns} must differ from the gateway {host}"),
        ));
    }
    if let Some(s) = &req.v4_dhcp_start {
        dhcp = s.value;
        if !v4_in(net, prefix, dhcp) {
            return Err(ConfigError::invalid(
                &s.origin,
                format!("the first DHCP address {dhcp} is outside {cidr}"),
            ));
        }
    }
    if dhcp == host || dhcp == dns {
        return Err(ConfigError::invalid(
            blame(&req.v4_dhcp_start, &net_origin),
            format!(
                "the first DHCP address {dhcp} must differ from the gateway {host} and the DNS address {dns}"
            ),
        ));
    }

    if let Some(a) = &req.v4_addr {
        match req.v4_addr_kind {
            AddrKind::Address if a.value == net && a.value != dhcp => w.push(format!(
                "{} is a network address: slirp semantics give the guest {dhcp}",
                a.value
            )),
            AddrKind::Address if a.value != dhcp => w.push(format!(
                "{} is read as the network {cidr} (slirp semantics): the guest gets {dhcp}, not {}; \
                 --profile passt hands out the address as given",
                a.value, a.value
            )),
            AddrKind::Network if a.value != net => w.push(format!(
                "{} has host bits set: the network is {cidr}",
                a.origin
            )),
            _ => {}
        }
    }
    let bcast = v4_broadcast(net, prefix);
    let last = v4_or(u32::from(dhcp).saturating_add(u32::from(POOL_SLIRP) - 1));
    let pool = dhcp..=last;
    if pool.contains(&bcast) || !v4_in(net, prefix, last) {
        w.push(format!(
            "the DHCP pool {dhcp}-{last} runs into the broadcast address {bcast} of {cidr} (QEMU does not check this)"
        ));
    }
    for (what, a) in [("gateway", host), ("DNS address", dns)] {
        if pool.contains(&a) {
            w.push(format!(
                "the DHCP pool {dhcp}-{last} includes the {what} {a}: a guest may be leased it"
            ));
        }
    }
    Ok(Some(Ipv4Plan {
        network: net,
        prefix_len: prefix,
        gateway: host,
        dns,
        dhcp_start: dhcp,
    }))
}

fn passt_v4(req: &Request, w: &mut Vec<String>) -> Result<Option<Ipv4Plan>, ConfigError> {
    if req.ipv4_off.is_some() {
        return Ok(None);
    }
    let refused = |s: &str, r: String| ConfigError::refused(Profile::Passt, s, r);
    let default_origin = "the default guest address 10.0.2.15/24".to_string();
    let (addr, origin) = match &req.v4_addr {
        Some(a) => (a.value, a.origin.clone()),
        None => {
            if let Some(p) = &req.v4_prefix {
                return Err(ConfigError::invalid(
                    &p.origin,
                    "a netmask needs an IPv4 address (--address or <ip>)",
                ));
            }
            (Ipv4Addr::new(10, 0, 2, 15), default_origin)
        }
    };
    let (prefix, prefix_origin) = match (&req.v4_prefix, &req.v4_addr) {
        (Some(p), _) => (p.value, p.origin.clone()),
        (None, None) => (24, origin.clone()),
        (None, Some(_)) => {
            let p = classful_passt(addr).ok_or_else(|| {
                refused(
                    &origin,
                    format!("{addr} has no address class to take a netmask from"),
                )
            })?;
            w.push(format!(
                "{origin}: no prefix given, so {addr} gets its address class's /{p} (as passt does)"
            ));
            (p, origin.clone())
        }
    };
    if prefix == 0 || prefix > 30 {
        return Err(refused(
            &prefix_origin,
            format!("a /{prefix} subnet has no room for both the guest and a gateway"),
        ));
    }
    let net = v4_net(addr, prefix);
    let bcast = v4_broadcast(addr, prefix);
    let cidr = format!("{net}/{prefix}");
    let o = addr.octets();
    if o[0] == 0 {
        return Err(refused(
            &origin,
            format!("{addr} is in 0.0.0.0/8, which no host may use"),
        ));
    }
    if addr.is_loopback() {
        return Err(refused(&origin, format!("{addr} is a loopback address")));
    }
    if o[0] >= 224 {
        return Err(refused(
            &origin,
            format!("{addr} is a multicast or reserved address"),
        ));
    }
    if addr == net {
        let slirp_guest = v4_or(u32::from(net) | (0x020f & !prefix_to_mask(prefix)));
        return Err(refused(
            &origin,
            format!(
                "{addr} is the network address of {cidr}, not a host address \
                 (slirp semantics would give the guest {slirp_guest})"
            ),
        ));
    }
    if addr == bcast {
        return Err(refused(
            &origin,
            format!("{addr} is the broadcast address of {cidr}, not a host address"),
        ));
    }
    let first_host = v4_or(u32::from(net) + 1);
    let gateway = match &req.v4_gateway {
        Some(g) => {
            let gw = g.value;
            if !v4_in(net, prefix, gw) {
                return Err(refused(
                    &g.origin,
                    format!(
                        "the gateway {gw} is outside the guest's subnet {cidr}: the guest could not reach it"
                    ),
                ));
            }
            if gw == addr {
                return Err(refused(
                    &g.origin,
                    format!("the gateway {gw} is the guest's own address"),
                ));
            }
            if gw == net || gw == bcast {
                return Err(refused(
                    &g.origin,
                    format!("the gateway {gw} is the network or broadcast address of {cidr}"),
                ));
            }
            gw
        }
        // Nothing configured at all: slirp's familiar 10.0.2.2, as passt is run to mimic it.
        None if req.v4_addr.is_none() => Ipv4Addr::new(10, 0, 2, 2),
        None if first_host == addr => v4_or(u32::from(net) + 2),
        None => first_host,
    };
    let usable =
        |a: Ipv4Addr| v4_in(net, prefix, a) && a != net && a != bcast && a != addr && a != gateway;
    let dns = match &req.v4_dns {
        Some(d) => {
            let dns = d.value;
            if dns == gateway {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("the DNS address {dns} must differ from the gateway {gateway}"),
                ));
            }
            if dns == addr {
                return Err(refused(
                    &d.origin,
                    format!("the DNS address {dns} is the guest's own address"),
                ));
            }
            let inside = v4_in(net, prefix, dns);
            if req.restrict && !inside {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("with restrict=on the DNS address must be inside {cidr}"),
                ));
            }
            if inside && !usable(dns) {
                return Err(refused(
                    &d.origin,
                    format!("the DNS address {dns} is the network or broadcast address of {cidr}"),
                ));
            }
            dns
        }
        None => {
            // slirp's .3 position when free, else the lowest free host address.
            let slirp_pos = v4_or(u32::from(net) | (0x0203 & !prefix_to_mask(prefix)));
            std::iter::once(slirp_pos)
                .chain((u32::from(net) + 1..u32::from(bcast)).map(v4_or))
                .find(|a| usable(*a))
                .ok_or_else(|| {
                    refused(
                        &prefix_origin,
                        format!("{cidr} has no address left for the DNS relay: give --dns"),
                    )
                })?
        }
    };
    Ok(Some(Ipv4Plan {
        network: net,
        prefix_len: prefix,
        gateway,
        dns,
        dhcp_start: addr,
    }))
}

/// `addr` with its last byte or-ed with `b`: QEMU's `s6_addr[15] |= b`.
fn v6_or_last(addr: Ipv6Addr, b: u8) -> Ipv6Addr {
    let mut o = addr.octets();
    o[15] |= b;
    Ipv6Addr::from(o)
}

fn slirp_v6(req: &Request, w: &mut Vec<String>) -> Result<Option<Ipv6Plan>, ConfigError> {
    if req.ipv6_off.is_some() {
        return Ok(None);
    }
    let (prefix_addr, origin) = match &req.v6_addr {
        Some(a) => (a.value, a.origin.clone()),
        None => (
            Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            "the default prefix fec0::/64".to_string(),
        ),
    };
    let len = match &req.v6_prefix {
        None => 64,
        Some(p) if p.value == 0 => 64,
        Some(p) if p.value > 126 => {
            return Err(ConfigError::invalid(
                &p.origin,
                format!("/{} is longer than the 126 slirp accepts", p.value),
            ));
        }
        Some(p) => p.value,
    };
    let net = v6_net(prefix_addr, len);
    let gateway = match &req.v6_gateway {
        Some(g) => {
            if !v6_in(prefix_addr, len, g.value) {
                return Err(ConfigError::invalid(
                    &g.origin,
                    format!(
                        "the IPv6 gateway {} is outside the prefix {net}/{len}",
                        g.value
                    ),
                ));
            }
            g.value
        }
        None => v6_or_last(prefix_addr, 2),
    };
    let dns = match &req.v6_dns {
        Some(d) => {
            if req.restrict && !v6_in(prefix_addr, len, d.value) {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("with restrict=on the IPv6 DNS address must be inside {net}/{len}"),
                ));
            }
            d.value
        }
        None => v6_or_last(prefix_addr, 3),
    };
    if prefix_addr != net {
        w.push(match req.v6_addr_kind {
            AddrKind::Address => format!(
                "{prefix_addr} is read as the IPv6 prefix {net}/{len} (slirp semantics): \
                 the guest autoconfigures its own address, and the gateway is {gateway}"
            ),
            AddrKind::Network => format!("{origin} has host bits set: the prefix is {net}/{len}"),
        });
    }
    if dns == gateway {
        w.push(format!(
            "the IPv6 DNS address {dns} is the gateway's address (QEMU does not check this)"
        ));
    }
    Ok(Some(Ipv6Plan {
        prefix: net,
        prefix_len: len,
        gateway,
        dns,
        guest_addr: None,
    }))
}

fn passt_v6(req: &Request, w: &mut Vec<String>) -> Result<Option<Ipv6Plan>, ConfigError> {
    let Some(a) = &req.v6_addr else {
        return slirp_v6(req, w);
    };
    if req.ipv6_off.is_some() {
        return Ok(None);
    }
    let refused = |s: &str, r: String| ConfigError::refused(Profile::Passt, s, r);
    let addr = a.value;
    let (len, len_origin) = match &req.v6_prefix {
        Some(p) => (p.value, p.origin.clone()),
        None => (64, a.origin.clone()),
    };
    if len == 0 || len > 126 {
        return Err(refused(
            &len_origin,
            format!("a /{len} IPv6 prefix has no room for both the guest and a gateway"),
        ));
    }
    let net = v6_net(addr, len);
    let cidr = format!("{net}/{len}");
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
        return Err(refused(
            &a.origin,
            format!("{addr} is not a unicast host address"),
        ));
    }
    if addr == net {
        return Err(refused(
            &a.origin,
            format!("{addr} is the subnet-router anycast address of {cidr}, not a host address"),
        ));
    }
    let n = u128::from(net);
    let gateway = match &req.v6_gateway {
        Some(g) => {
            if !v6_in(net, len, g.value) {
                return Err(refused(
                    &g.origin,
                    format!(
                        "the IPv6 gateway {} is outside the guest's prefix {cidr}",
                        g.value
                    ),
                ));
            }
            if g.value == addr || g.value == net {
                return Err(refused(
                    &g.origin,
                    format!(
                        "the IPv6 gateway {} is the guest's own or the subnet's address",
                        g.value
                    ),
                ));
            }
            g.value
        }
        None if Ipv6Addr::from(n + 1) == addr => Ipv6Addr::from(n + 2),
        None => Ipv6Addr::from(n + 1),
    };
    let dns = match &req.v6_dns {
        Some(d) => {
            if d.value == addr {
                return Err(refused(
                    &d.origin,
                    format!("the IPv6 DNS address {} is the guest's own", d.value),
                ));
            }
            if req.restrict && !v6_in(net, len, d.value) {
                return Err(ConfigError::invalid(
                    &d.origin,
                    format!("with restrict=on the IPv6 DNS address must be inside {cidr}"),
                ));
            }
            d.value
        }
        None => [3u128, 2, 4, 5]
            .into_iter()
            .map(|k| Ipv6Addr::from(n | k))
            .find(|c| *c != addr && *c != gateway)
            .expect("two of four candidates are free"),
    };
    w.push(format!(
        "the guest's IPv6 address {addr} is not handed out: the DHCPv6 server is stateless (as \
         slirp's), so the guest autoconfigures its address in {cidr}"
    ));
    Ok(Some(Ipv6Plan {
        prefix: net,
        prefix_len: len,
        gateway,
        dns,
        guest_addr: Some(addr),
    }))
}

/// Whether a guest fetches boot file `b` from the gateway by TFTP (not an HTTP URL for a
/// UEFI HTTP boot client).
fn fetched_by_tftp(b: &str) -> bool {
    !(b.starts_with("http://") || b.starts_with("https://"))
}

/// What a TFTP root that cannot serve means for the guest: slirp accepts any `tftp=`, so these
/// are warnings, but a typo in the path otherwise shows only as a boot that fails.
fn tftp_warnings(root: &std::path::Path, bootfile: Option<&str>, w: &mut Vec<String>) {
    let shown = root.display();
    if !root.is_dir() {
        w.push(format!(
            "tftp={shown} is not a directory: every TFTP request will get File not found"
        ));
        return;
    }
    if let Some(b) = bootfile
        && fetched_by_tftp(b)
        && !root.join(b.trim_start_matches('/')).is_file()
    {
        w.push(format!(
            "bootfile={b} is not a file in tftp={shown}: the guest's network boot will not find it"
        ));
    }
}

/// The gateway MAC: given or slirp's 52:55 + gateway address; never the guest's own (the
/// seed's third symptom: libvirt 9.0 passed the guest's MAC as passt's `--mac-addr`).
fn gateway_mac(profile: Profile, req: &Request, gateway: Ipv4Addr) -> Result<MacAddr, ConfigError> {
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

/// Whether two listening addresses can collide (`None` and unspecified addresses cover their
/// family, or both families).
fn addrs_meet(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => {
            x == y || (x.is_ipv4() == y.is_ipv4() && (x.is_unspecified() || y.is_unspecified()))
        }
    }
}

/// The first and last address the DHCP server hands out, as numbers.
fn dhcp_pool(v4: &Ipv4Plan, plan: &NetPlan) -> (u32, u32) {
    let first = u32::from(v4.dhcp_start);
    (
        first,
        first.saturating_add(u32::from(plan.dhcp.pool_size.max(1)) - 1),
    )
}

fn check_forwards(req: &Request, plan: &NetPlan, w: &mut Vec<String>) -> Result<(), ConfigError> {
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
                        w.push(format!(
                            "{}: {g} is not an address the DHCP server hands out ({}-{})",
                            f.origin,
                            v4.dhcp_start,
                            v4_or(last)
                        ));
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
            if g.value.proto != f.value.proto {
                continue;
            }
            let clash = match (&g.value.host, &f.value.host) {
                (
                    HostListen::Inet {
                        addr: a1,
                        ports: p1,
                        ..
                    },
                    HostListen::Inet {
                        addr: a2,
                        ports: p2,
                        ..
                    },
                ) => (addrs_meet(*a1, *a2) && p1.overlaps(p2))
                    .then(|| format!("{} port {}", f.value.proto, p1.first.max(p2.first))),
                (HostListen::Unix { path: a }, HostListen::Unix { path: b }) => {
                    (a == b).then(|| format!("the socket {}", a.display()))
                }
                _ => None,
            };
            if let Some(what) = clash {
                return Err(ConfigError::Conflict(format!(
                    "{} and {} both forward {what}",
                    g.origin, f.origin
                )));
            }
        }
    }
    let open: Vec<&str> = fwds
        .iter()
        .filter(|f| {
            matches!(f.value.host, HostListen::Inet { addr, .. }
                if addr.is_none_or(|a| a.is_unspecified()))
        })
        .map(|f| f.origin.as_str())
        .fold(Vec::new(), |mut v, o| {
            if !v.contains(&o) {
                v.push(o);
            }
            v
        });
    if !open.is_empty() {
        w.push(format!(
            "{} listen{} on every host address: other machines can reach the guest through {}",
            open.join(", "),
            if open.len() == 1 { "s" } else { "" },
            if open.len() == 1 { "it" } else { "them" }
        ));
    }
    Ok(())
}

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
    noun: &'a str,
    /// "this guest forward", "the smb share".
    this: &'a str,
    /// QEMU's error for an address libslirp refuses.
    qemu: &'a str,
}

/// The address of a guest forward or the smb share, checked as libslirp's `check_guestfwd`
/// checks both against the plan's IPv4 network, whichever profile made it: the address must be
/// inside the network and be neither the gateway nor the DNS address, which slirp answers
/// itself. One in the DHCP pool is legal but unreachable from the guest that is leased it.
fn exec_addr(
    req: &Request,
    plan: &NetPlan,
    t: &ExecTarget,
    w: &mut Vec<String>,
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
        w.push(format!(
            "{}: {addr} is an address the DHCP server hands out ({}-{}): the guest that gets \
             it cannot reach {}",
            t.addr_origin,
            v4.dhcp_start,
            v4_or(last),
            t.this
        ));
    }
    Ok(addr)
}

/// Give each guest forward its address, checked by [`exec_addr`]; two on one address and
/// port conflict.
fn resolve_guest_forwards(
    req: &Request,
    plan: &NetPlan,
    w: &mut Vec<String>,
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
fn resolve_smb(
    req: &Request,
    plan: &NetPlan,
    w: &mut Vec<String>,
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

/// Turn a request into the plan under `profile`; warnings come back alongside.
pub(crate) fn resolve(
    profile: Profile,
    mut req: Request,
) -> Result<(NetPlan, Vec<String>), ConfigError> {
    let mut w = std::mem::take(&mut req.notes);
    check_disabled(&req)?;
    check_services(&req)?;
    let (ipv4, ipv6) = match profile {
        Profile::Slirp => (slirp_v4(&req, &mut w)?, slirp_v6(&req, &mut w)?),
        Profile::Passt => (passt_v4(&req, &mut w)?, passt_v6(&req, &mut w)?),
    };
    let mut plan = NetPlan::slirp_default();
    let gw4 = ipv4
        .as_ref()
        .map_or(Ipv4Addr::new(10, 0, 2, 2), |v| v.gateway);
    plan.gateway_mac = gateway_mac(profile, &req, gw4)?;
    plan.ipv4 = ipv4;
    plan.ipv6 = ipv6;
    plan.dhcp.pool_size = match profile {
        Profile::Slirp => POOL_SLIRP,
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
        w.push(format!(
            "--no-udp: DHCP still offers the DNS address {}, but its relay is UDP, so the \
             guest's lookups go unanswered",
            v4.dns
        ));
    }
    if plan.ipv6.is_some() && plan.mtu < 1280 {
        w.push(format!(
            "MTU {} is below IPv6's minimum of 1280: the guest will not use IPv6 on this link",
            plan.mtu
        ));
    }
    plan.restrict = req.restrict;
    plan.map_gateway_to_loopback = req.map_gateway_to_loopback;
    plan.services = req.services;
    plan.tftp_root = req.tftp_root.clone();
    if let Some(b) = &plan.dhcp.bootfile
        && plan.tftp_root.is_none()
        && fetched_by_tftp(b)
    {
        w.push(format!(
            "bootfile={b} without tftp=: the TFTP server refuses every request, so the boot file cannot be fetched from the gateway"
        ));
    }
    if let Some(root) = &plan.tftp_root {
        tftp_warnings(root, plan.dhcp.bootfile.as_deref(), &mut w);
    }
    check_forwards(&req, &plan, &mut w)?;
    plan.guest_forwards = resolve_guest_forwards(&req, &plan, &mut w)?;
    plan.smb = resolve_smb(&req, &plan, &mut w)?;
    plan.forwards = req.forwards.into_iter().map(|f| f.value).collect();
    Ok((plan, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::slirp;
    use crate::request::RawGuestForward;

    /// Resolve `--slirp OPTS` under the slirp profile.
    fn slirp(opts: &str) -> Result<(NetPlan, Vec<String>), ConfigError> {
        resolve(Profile::Slirp, slirp::parse(opts)?)
    }

    fn slirp_ok(opts: &str) -> (NetPlan, Vec<String>) {
        slirp(opts).unwrap_or_else(|e| panic!("{opts}: {e}"))
    }

    fn slirp_err(opts: &str) -> String {
        match slirp(opts) {
            Ok((plan, _)) => panic!("{opts}: expected an error, got {plan:?}"),
            Err(e) => e.to_string(),
        }
    }

    const QEMU: &str = "(QEMU: Conflicting/invalid host:port in guest forwarding rule)";

    #[test]
    fn guest_forward_plan() {
        let (plan, w) = slirp_ok(
            "guestfwd=tcp:10.0.2.100:1234-cmd:netcat 127.0.0.1 4321,guestfwd=::1234-cmd:cat",
        );
        assert_eq!(
            plan.guest_forwards,
            vec![
                GuestForward {
                    addr: Ipv4Addr::new(10, 0, 2, 100),
                    port: 1234,
                    command: "netcat 127.0.0.1 4321".into(),
                    argv: vec!["netcat".into(), "127.0.0.1".into(), "4321".into()],
                },
                GuestForward {
                    addr: Ipv4Addr::new(10, 0, 2, 4),
                    port: 1234,
                    command: "cat".into(),
                    argv: vec!["cat".into()],
                },
            ]
        );
        assert!(w.is_empty(), "{w:?}");
        assert!(slirp_ok("").0.guest_forwards.is_empty());
    }

    /// Checked against QEMU 7.2 with libslirp 4.7.0: `net=192.168.76.0/24,host=192.168.76.4`
    /// refuses an empty SERVER as "Conflicting/invalid", and so does `net=192.168.76.0/23`.
    #[test]
    fn guest_forward_default_address_is_0_0_2_4_in_the_network() {
        let default_addr = |opts: &str| slirp_ok(opts).0.guest_forwards[0].addr.to_string();
        for (net, want) in [
            ("", "10.0.2.4"),
            ("net=10.0.2.0/24,", "10.0.2.4"),
            ("net=10.0.0.0/8,", "10.0.2.4"),
            ("net=192.168.76.0/24,", "192.168.76.4"),
            ("net=192.168.76.0/23,", "192.168.76.4"),
            ("net=192.168.0.0/16,", "192.168.2.4"),
            (
                "net=10.0.2.0/30,dhcpstart=10.0.2.1,host=10.0.2.2,dns=10.0.2.3,",
                "10.0.2.0",
            ),
        ] {
            assert_eq!(
                default_addr(&format!("{net}guestfwd=::80-cmd:cat")),
                want,
                "{net}"
            );
        }
        // 0.0.0.0 is "not given" to libslirp too.
        assert_eq!(
            default_addr("net=192.168.76.0/24,guestfwd=tcp:0.0.0.0:80-cmd:cat"),
            "192.168.76.4"
        );
        assert_eq!(
            slirp_err("net=192.168.76.0/24,host=192.168.76.4,guestfwd=::80-cmd:cat"),
            format!(
                "--slirp guestfwd=::80-cmd:cat: the default address 192.168.76.4 is the gateway; \
                 a guest forward needs another address of 192.168.76.0/24 {QEMU}"
            )
        );
    }

    #[test]
    fn guest_forward_refuses_what_slirp_answers_itself() {
        let cases = [
            ("tcp:10.0.2.2:1234-cmd:cat", "10.0.2.2 is the gateway"),
            ("tcp:10.0.2.3:1234-cmd:cat", "10.0.2.3 is the DNS address"),
            ("tcp:10.0.2.3:53-cmd:cat", "10.0.2.3 is the DNS address"),
        ];
        for (rule, what) in cases {
            assert_eq!(
                slirp_err(&format!("guestfwd={rule}")),
                format!(
                    "--slirp guestfwd={rule}: {what}; a guest forward needs another address \
                     of 10.0.2.0/24 {QEMU}"
                )
            );
        }
        assert_eq!(
            slirp_err("guestfwd=tcp:192.168.9.1:1234-cmd:cat"),
            format!(
                "--slirp guestfwd=tcp:192.168.9.1:1234-cmd:cat: 192.168.9.1 is outside \
                 10.0.2.0/24; a guest forward needs an address of 10.0.2.0/24 {QEMU}"
            )
        );
        // A moved gateway or DNS address takes the default address with it.
        assert_eq!(
            slirp_err("host=10.0.2.4,guestfwd=::80-cmd:cat"),
            format!(
                "--slirp guestfwd=::80-cmd:cat: the default address 10.0.2.4 is the gateway; \
                 a guest forward needs another address of 10.0.2.0/24 {QEMU}"
            )
        );
        assert!(
            slirp_err("dns=10.0.2.4,guestfwd=::80-cmd:cat")
                .contains("the default address 10.0.2.4 is the DNS address"),
        );
        // Network, broadcast and any other address of the network: accepted, as by QEMU.
        for a in ["10.0.2.0", "10.0.2.255", "10.0.2.100", "10.0.2.15"] {
            let (plan, _) = slirp_ok(&format!("guestfwd=tcp:{a}:1234-cmd:cat"));
            assert_eq!(plan.guest_forwards[0].addr.to_string(), a);
        }
    }

    #[test]
    fn guest_forward_needs_ipv4() {
        assert_eq!(
            slirp_err("ipv4=off,guestfwd=tcp:10.0.2.100:1234-cmd:cat"),
            "--slirp guestfwd=tcp:10.0.2.100:1234-cmd:cat: a guest forward needs IPv4, which \
             is disabled by --slirp ipv4=off"
        );
        assert!(
            slirp_err("ipv6=on,guestfwd=::1234-cmd:cat")
                .ends_with("disabled by --slirp ipv6=on (without ipv4=on)")
        );
    }

    #[test]
    fn guest_forwards_on_one_address_and_port_conflict() {
        assert_eq!(
            slirp_err(
                "guestfwd=::80-cmd:a,guestfwd=tcp:10.0.2.9:80-cmd:b,guestfwd=tcp:10.0.2.4:80-cmd:c"
            ),
            "--slirp guestfwd=::80-cmd:a and --slirp guestfwd=tcp:10.0.2.4:80-cmd:c both forward \
             guest connections to 10.0.2.4:80"
        );
        let (plan, _) =
            slirp_ok("guestfwd=::80-cmd:a,guestfwd=::81-cmd:a,guestfwd=:10.0.2.5:80-cmd:a");
        assert_eq!(plan.guest_forwards.len(), 3);
    }

    #[test]
    fn guest_forward_in_the_dhcp_pool_warns() {
        for (a, warns) in [
            ("10.0.2.14", false),
            ("10.0.2.15", true),
            ("10.0.2.30", true),
            ("10.0.2.31", false),
        ] {
            let rule = format!("guestfwd=tcp:{a}:22-cmd:cat");
            let (_, w) = slirp_ok(&rule);
            let want = format!(
                "--slirp {rule}: {a} is an address the DHCP server hands out \
                 (10.0.2.15-10.0.2.30): the guest that gets it cannot reach this guest forward"
            );
            assert_eq!(w.contains(&want), warns, "{a}: {w:?}");
            assert_eq!(w.len(), usize::from(warns), "{a}: {w:?}");
        }
    }

    /// The passt profile has no front end with guest forwards, but applies the same rules to
    /// its own network when handed one.
    #[test]
    fn guest_forwards_under_the_passt_profile() {
        let with = |addr: Option<Ipv4Addr>| {
            let mut req = Request {
                v4_addr: Some(Setting::new(
                    Ipv4Addr::new(192, 168, 1, 10),
                    "--address 192.168.1.10/24",
                )),
                v4_prefix: Some(Setting::new(24, "--address 192.168.1.10/24")),
                ..Request::default()
            };
            req.guest_forwards.push(Setting::new(
                RawGuestForward {
                    addr,
                    port: 7,
                    command: "cat".into(),
                    argv: vec!["cat".into()],
                },
                "a guest forward",
            ));
            resolve(Profile::Passt, req)
        };
        // Gateway 192.168.1.1, DNS 192.168.1.3, guest 192.168.1.10.
        let (plan, w) = with(None).unwrap();
        assert_eq!(plan.guest_forwards[0].addr, Ipv4Addr::new(192, 168, 1, 4));
        assert!(w.is_empty(), "{w:?}");
        let e = with(Some(Ipv4Addr::new(192, 168, 2, 4)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("192.168.2.4 is outside 192.168.1.0/24"), "{e}");
        let e = with(Some(Ipv4Addr::new(192, 168, 1, 1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("192.168.1.1 is the gateway"), "{e}");
        let (plan, w) = with(Some(Ipv4Addr::new(192, 168, 1, 10))).unwrap();
        assert_eq!(plan.guest_forwards[0].addr, Ipv4Addr::new(192, 168, 1, 10));
        assert!(
            w.contains(
                &"a guest forward: 192.168.1.10 is an address the DHCP server hands out \
                  (192.168.1.10-192.168.1.10): the guest that gets it cannot reach this guest \
                  forward"
                    .to_string()
            ),
            "{w:?}"
        );
    }

    const QEMU_SMB: &str = "(QEMU: Conflicting/invalid smbserver address)";

    /// The smb share of `--slirp OPTS` as `(address, export)`.
    fn smb_of(opts: &str) -> (String, String) {
        let (plan, _) = slirp_ok(opts);
        let smb = plan.smb.unwrap_or_else(|| panic!("{opts}: no smb share"));
        (smb.addr.to_string(), smb.export.display().to_string())
    }

    #[test]
    fn smb_share_plan() {
        let (plan, w) = slirp_ok("smb=/srv/share");
        assert_eq!(
            plan.smb,
            Some(SmbShare {
                addr: Ipv4Addr::new(10, 0, 2, 4),
                export: "/srv/share".into(),
            })
        );
        assert!(w.is_empty(), "{w:?}");
        // The share is no guest forward of the plan: the runtime adds those.
        assert!(plan.guest_forwards.is_empty());
        assert_eq!(slirp_ok("").0.smb, None);
        assert_eq!(slirp_ok("smbserver=10.0.2.9").0.smb, None);
        assert_eq!(
            smb_of("smb=/srv/share,smbserver=10.0.2.9"),
            ("10.0.2.9".into(), "/srv/share".into())
        );
        // restrict=on leaves it be, as libslirp's exec forwards work under restrict.
        let (plan, w) = slirp_ok("restrict=on,smb=/srv/share");
        assert!(plan.restrict);
        assert_eq!(plan.smb.unwrap().addr, Ipv4Addr::new(10, 0, 2, 4));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn smb_default_address_is_0_0_2_4_in_the_network() {
        for (opts, want) in [
            ("smb=/s", "10.0.2.4"),
            ("net=192.168.76.0/24,smb=/s", "192.168.76.4"),
            ("net=192.168.0.0/16,smb=/s", "192.168.2.4"),
            ("net=10.0.0.0/8,smb=/s", "10.0.2.4"),
            // 0.0.0.0 is "not given" to libslirp, as for a guest forward.
            (
                "net=192.168.76.0/24,smb=/s,smbserver=0.0.0.0",
                "192.168.76.4",
            ),
        ] {
            assert_eq!(smb_of(opts).0, want, "{opts}");
        }
        // The same address as an empty guestfwd SERVER.
        let (plan, _) = slirp_ok("net=192.168.76.0/24,guestfwd=::80-cmd:cat,smb=/s");
        assert_eq!(plan.smb.unwrap().addr, plan.guest_forwards[0].addr);
    }

    #[test]
    fn smb_refuses_what_slirp_answers_itself() {
        let cases = [
            (
                "smb=/s,smbserver=10.0.3.4",
                "--slirp smbserver=10.0.3.4: 10.0.3.4 is outside 10.0.2.0/24; the smb share \
                 needs an address of 10.0.2.0/24",
            ),
            (
                "smb=/s,smbserver=10.0.2.2",
                "--slirp smbserver=10.0.2.2: 10.0.2.2 is the gateway; the smb share needs \
                 another address of 10.0.2.0/24",
            ),
            (
                "smb=/s,smbserver=10.0.2.3",
                "--slirp smbserver=10.0.2.3: 10.0.2.3 is the DNS address; the smb share needs \
                 another address of 10.0.2.0/24",
            ),
            (
                "host=10.0.2.4,smb=/s",
                "--slirp smb=/s: the default address 10.0.2.4 is the gateway; the smb share \
                 needs another address of 10.0.2.0/24",
            ),
            (
                "net=192.168.76.0/24,dns=192.168.76.4,smb=/s",
                "--slirp smb=/s: the default address 192.168.76.4 is the DNS address; the smb \
                 share needs another address of 192.168.76.0/24",
            ),
            (
                "dns=10.0.2.4,smb=/s,smbserver=0.0.0.0",
                "--slirp smbserver=0.0.0.0: the default address 10.0.2.4 is the DNS address; \
                 the smb share needs another address of 10.0.2.0/24",
            ),
        ];
        for (opts, want) in cases {
            assert_eq!(slirp_err(opts), format!("{want} {QEMU_SMB}"), "{opts}");
        }
    }

    #[test]
    fn smb_needs_ipv4() {
        assert_eq!(
            slirp_err("ipv4=off,smb=/srv/share"),
            "--slirp smb=/srv/share: the smb share needs IPv4, which is disabled by --slirp \
             ipv4=off"
        );
        assert!(
            slirp_err("ipv6=on,smb=/s,smbserver=10.0.2.9")
                .starts_with("--slirp smb=/s: the smb share needs IPv4, which is disabled by")
        );
        // Without smb=, smbserver= is ignored, IPv4 or not.
        let (plan, w) = slirp_ok("ipv4=off,smbserver=10.0.2.9");
        assert!(plan.ipv4.is_none() && plan.smb.is_none());
        assert_eq!(
            w,
            ["--slirp smbserver=10.0.2.9: does nothing without smb= (QEMU ignores it too)"]
        );
    }

    #[test]
    fn smb_conflicts_with_a_guest_forward_on_its_ports() {
        for port in [139, 445] {
            assert_eq!(
                slirp_err(&format!(
                    "guestfwd=tcp:10.0.2.4:{port}-cmd:cat,smb=/srv/share"
                )),
                format!(
                    "--slirp guestfwd=tcp:10.0.2.4:{port}-cmd:cat and --slirp smb=/srv/share \
                     both forward guest connections to 10.0.2.4:{port} (smbd listens on ports \
                     139 and 445)"
                )
            );
            // The smb share's address as given, and a default guestfwd SERVER.
            assert_eq!(
                slirp_err(&format!(
                    "guestfwd=::22-cmd:cat,guestfwd=::{port}-cmd:cat,smb=/s,smbserver=10.0.2.4"
                )),
                format!(
                    "--slirp guestfwd=::{port}-cmd:cat and --slirp smb=/s both forward guest \
                     connections to 10.0.2.4:{port} (smbd listens on ports 139 and 445)"
                )
            );
        }
        // Another port of the same address, or the same port of another address: no conflict.
        let (plan, w) =
            slirp_ok("guestfwd=tcp:10.0.2.4:1234-cmd:cat,guestfwd=tcp:10.0.2.5:445-cmd:cat,smb=/s");
        assert_eq!(plan.guest_forwards.len(), 2);
        assert_eq!(plan.smb.unwrap().addr, Ipv4Addr::new(10, 0, 2, 4));
        assert!(w.is_empty(), "{w:?}");
        let (plan, _) = slirp_ok("guestfwd=::445-cmd:cat,smb=/s,smbserver=10.0.2.9");
        assert_eq!(plan.smb.unwrap().addr, Ipv4Addr::new(10, 0, 2, 9));
    }

    #[test]
    fn smb_in_the_dhcp_pool_warns() {
        for (a, warns) in [
            ("10.0.2.14", false),
            ("10.0.2.15", true),
            ("10.0.2.30", true),
            ("10.0.2.31", false),
        ] {
            let (plan, w) = slirp_ok(&format!("smb=/s,smbserver={a}"));
            assert_eq!(plan.smb.unwrap().addr.to_string(), a);
            let want = format!(
                "--slirp smbserver={a}: {a} is an address the DHCP server hands out \
                 (10.0.2.15-10.0.2.30): the guest that gets it cannot reach the smb share"
            );
            assert_eq!(w.contains(&want), warns, "{a}: {w:?}");
            assert_eq!(w.len(), usize::from(warns), "{a}: {w:?}");
        }
    }

    #[test]
    fn smb_needs_tcp() {
        let mut req = slirp::parse("smb=/srv/share").unwrap();
        req.services.tcp = false;
        assert_eq!(
            resolve(Profile::Slirp, req).unwrap_err().to_string(),
            "--slirp smb=/srv/share and --no-tcp: the smb share needs TCP"
        );
    }
}
