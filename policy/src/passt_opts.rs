//! passt-style options: `--address`, `--netmask`, `--gateway`, `--mac-addr`, `--dns`,
//! `--search`, `--mtu`, `-t`/`-u`, `--no-map-gw`, and the switches `-4`/`--ipv4-only`,
//! `-6`/`--ipv6-only`, `--no-dhcp`, `--no-dhcpv6`, `--no-ndp`, `--no-ra`, `--no-tcp`, `--no-udp`,
//! `--no-icmp`.
//!
//! They read as passt reads them (`inet_pton` addresses, `--netmask` as bits or a dotted mask,
//! passt's port-spec grammar) and are laid over whatever the libvirt XML or `--slirp` said:
//! an option given on the command line wins, and a warning names what it replaced. What the
//! address *means* (a network to derive from, or the guest's own address) is left to the
//! profile, so `--address 169.254.0.0 --netmask 16` and the libvirt `<ip>` element that
//! libvirt turns into those options give the guest the same view.
//!
//! `--mac-addr` is passt's: the gateway's MAC as the guest sees it, never the guest's own.
//! Unlike passt, `-t` does not also forward the same UDP ports: the guest gets the forwards
//! that were asked for, no more.
//!
//! `-4` and `-6` turn the other family off exactly as `--slirp ipv6=off` and `ipv4=off` do,
//! so settings of the family turned off are refused the same way. The `--no-*` switches only
//! record which services are off; the profile refuses forwards of a protocol switched off.
//! `--no-ndp` stops router advertisements too, since they are NDP messages.

use std::net::IpAddr;

use crate::addr::{decimal, parse_netmask, valid_domain};
use crate::cli::PolicyArgs;
use crate::error::ConfigError;
use crate::request::{AddrKind, Request, Setting, overlay};
use crate::{HostListen, MacAddr, PortForward, PortRange, Proto};

/// The largest MTU passt advertises (65535 minus the Ethernet header, rounded to 32 bits).
pub const MAX_MTU: u16 = 65520;
/// The smallest MTU an IPv4 link may have.
pub const MIN_MTU: u16 = 68;
/// How errors name `-4`: either spelling may have been typed.
pub const IPV4_ONLY: &str = "-4/--ipv4-only";
/// How errors name `-6`.
pub const IPV6_ONLY: &str = "-6/--ipv6-only";

/// Lay the passt-style options of `args` over `req`.
pub(crate) fn apply(args: &PolicyArgs, req: &mut Request) -> Result<(), ConfigError> {
    let mut seen4 = None::<&str>;
    let mut seen6 = None::<&str>;
    for a in &args.address {
        let shown = format!("--address {a}");
        let (ip, len) = match a.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (a.as_str(), None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| ConfigError::invalid(&shown, "not an IPv4 or IPv6 address"))?;
        match ip {
            IpAddr::V4(v4) => {
                if let Some(prev) = seen4.replace(a) {
                    return Err(ConfigError::Conflict(format!(
                        "--address {prev} and --address {a}: one IPv4 address only"
                    )));
                }
                overlay(&mut req.v4_addr, Setting::new(v4, &shown), &mut req.notes);
                req.v4_addr_kind = AddrKind::Address;
                if let Some(len) = len {
                    if let Some(m) = &args.netmask {
                        return Err(ConfigError::Conflict(format!(
                            "{shown} carries a prefix length and --netmask {m} is given too: use one"
                        )));
                    }
                    let n = decimal(len).filter(|n| *n <= 32).ok_or_else(|| {
                        ConfigError::invalid(&shown, "the prefix length must be 0-32")
                    })?;
                    overlay(
                        &mut req.v4_prefix,
                        Setting::new(n as u8, &shown),
                        &mut req.notes,
                    );
                }
            }
            IpAddr::V6(v6) => {
                if let Some(prev) = seen6.replace(a) {
                    return Err(ConfigError::Conflict(format!(
                        "--address {prev} and --address {a}: one IPv6 address only"
                    )));
                }
                overlay(&mut req.v6_addr, Setting::new(v6, &shown), &mut req.notes);
                req.v6_addr_kind = AddrKind::Address;
                if let Some(len) = len {
                    let n = decimal(len).filter(|n| *n <= 128).ok_or_else(|| {
                        ConfigError::invalid(&shown, "the prefix length must be 0-128")
                    })?;
                    overlay(
                        &mut req.v6_prefix,
                        Setting::new(n as u8, &shown),
                        &mut req.notes,
                    );
                }
            }
        }
    }
    if let Some(m) = &args.netmask {
        let shown = format!("--netmask {m}");
        let n = parse_netmask(m).map_err(|why| ConfigError::invalid(&shown, why))?;
        overlay(&mut req.v4_prefix, Setting::new(n, shown), &mut req.notes);
    }

    let mut gw4 = None::<&str>;
    let mut gw6 = None::<&str>;
    for g in &args.gateway {
        let shown = format!("--gateway {g}");
        let ip: IpAddr = g
            .parse()
            .map_err(|_| ConfigError::invalid(&shown, "not an IPv4 or IPv6 address"))?;
        match ip {
            IpAddr::V4(v4) => {
                if let Some(prev) = gw4.replace(g) {
                    return Err(ConfigError::Conflict(format!(
                        "--gateway {prev} and --gateway {g}: one IPv4 gateway only"
                    )));
                }
                overlay(&mut req.v4_gateway, Setting::new(v4, shown), &mut req.notes);
            }
            IpAddr::V6(v6) => {
                if let Some(prev) = gw6.replace(g) {
                    return Err(ConfigError::Conflict(format!(
                        "--gateway {prev} and --gateway {g}: one IPv6 gateway only"
                    )));
                }
                overlay(&mut req.v6_gateway, Setting::new(v6, shown), &mut req.notes);
            }
        }
    }

    if let Some(m) = &args.mac_addr {
        let shown = format!("--mac-addr {m}");
        let mac: MacAddr = m
            .parse()
            .map_err(|why: String| ConfigError::invalid(&shown, why))?;
        overlay(
            &mut req.gateway_mac,
            Setting::new(mac, shown),
            &mut req.notes,
        );
    }

    let mut dns4 = None::<&str>;
    let mut dns6 = None::<&str>;
    for d in &args.dns {
        let shown = format!("--dns {d}");
        if d == "none" {
            return Err(ConfigError::invalid(
                shown,
                "not supported: the guest is always offered the DNS relay \
                 (--slirp restrict=on leaves router and DNS out of DHCP)",
            ));
        }
        let ip: IpAddr = d
            .parse()
            .map_err(|_| ConfigError::invalid(&shown, "not an IPv4 or IPv6 address"))?;
        match ip {
            IpAddr::V4(v4) => {
                if let Some(prev) = dns4.replace(d) {
                    return Err(ConfigError::Conflict(format!(
                        "--dns {prev} and --dns {d}: the guest gets one IPv4 DNS address"
                    )));
                }
                overlay(&mut req.v4_dns, Setting::new(v4, shown), &mut req.notes);
            }
            IpAddr::V6(v6) => {
                if let Some(prev) = dns6.replace(d) {
                    return Err(ConfigError::Conflict(format!(
                        "--dns {prev} and --dns {d}: the guest gets one IPv6 DNS address"
                    )));
                }
                overlay(&mut req.v6_dns, Setting::new(v6, shown), &mut req.notes);
            }
        }
    }

    if !args.search.is_empty() {
        let mut list = Vec::new();
        for s in &args.search {
            for d in s.split_whitespace() {
                list.push(d.to_string());
            }
        }
        // passt: `--search none` sends no search list (`none.` searches a domain "none").
        if list == ["none"] {
            list.clear();
        }
        for d in &list {
            if !valid_domain(d) {
                return Err(ConfigError::invalid(
                    format!("--search {d}"),
                    "not a valid domain name",
                ));
            }
        }
        if let Some(old) = &req.search
            && *old != list
        {
            req.notes.push(format!(
                "--search overrides the search list [{}] from the configuration",
                old.join(" ")
            ));
        }
        req.search = Some(list);
    }

    if let Some(m) = &args.mtu {
        let shown = format!("--mtu {m}");
        let n = decimal(m)
            .filter(|n| *n == 0 || (u64::from(MIN_MTU)..=u64::from(MAX_MTU)).contains(n))
            .ok_or_else(|| {
                ConfigError::invalid(
                    &shown,
                    format!("the MTU must be {MIN_MTU}-{MAX_MTU} (or 0: do not advertise one)"),
                )
            })?;
        overlay(&mut req.mtu, Setting::new(n as u16, shown), &mut req.notes);
    }

    for (proto, specs, opt) in [
        (Proto::Tcp, &args.tcp_ports, "-t"),
        (Proto::Udp, &args.udp_ports, "-u"),
    ] {
        for spec in specs {
            let shown = format!("{opt} {spec}");
            for f in parse_port_spec(proto, spec, &shown)? {
                req.forwards.push(Setting::new(f, &shown));
            }
        }
    }

    if args.no_map_gw {
        req.map_gateway_to_loopback = false;
    }

    match (args.ipv4_only, args.ipv6_only) {
        (true, true) => {
            return Err(ConfigError::Conflict(format!(
                "{IPV4_ONLY} and {IPV6_ONLY} exclude each other: give one"
            )));
        }
        (true, false) => keep_one_family(&req.ipv4_off, &mut req.ipv6_off, IPV4_ONLY, "IPv4")?,
        (false, true) => keep_one_family(&req.ipv6_off, &mut req.ipv4_off, IPV6_ONLY, "IPv6")?,
        (false, false) => {}
    }

    let s = &mut req.services;
    for (given, service) in [
        (args.no_dhcp, &mut s.dhcp),
        (args.no_dhcpv6, &mut s.dhcpv6),
        (args.no_ra, &mut s.ra),
        (args.no_tcp, &mut s.tcp),
        (args.no_udp, &mut s.udp),
        (args.no_icmp, &mut s.icmp),
    ] {
        if given {
            *service = false;
        }
    }
    if args.no_ndp {
        s.ndp = false;
        s.ra = false;
    }
    Ok(())
}

/// `-4` or `-6` (`opt`): the other family goes off, unless the configuration already turned
/// off the one `opt` keeps, which would leave the guest no network at all.
fn keep_one_family(
    kept_off: &Option<String>,
    other_off: &mut Option<String>,
    opt: &str,
    kept: &str,
) -> Result<(), ConfigError> {
    if let Some(off) = kept_off {
        return Err(ConfigError::Conflict(format!(
            "{opt} keeps only {kept}, which {off} disables"
        )));
    }
    // Already off (`--slirp ipv4=on -4`): what turned it off first stays its cause.
    other_off.get_or_insert_with(|| opt.to_string());
    Ok(())
}

/// One include item of a port spec: host ports and the guest port of the first one.
pub(crate) type Include = (PortRange, u16);

/// Parse `first[-last]` (1-65535).
fn port_range(s: &str, shown: &str) -> Result<PortRange, ConfigError> {
    let port = |p: &str| {
        decimal(p)
            .filter(|n| (1..=65535).contains(n))
            .map(|n| n as u16)
            .ok_or_else(|| ConfigError::invalid(shown, format!("'{p}' is not a port (1-65535)")))
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if last < first {
        return Err(ConfigError::invalid(
            shown,
            format!("the range {first}-{last} runs backwards"),
        ));
    }
    Ok(PortRange { first, last })
}

/// passt's port spec: `none`, `[addr][%if]/all`, or `[addr][%if]/item,item,…` with items
/// `first[-last][:tofirst[-tolast]]` and exclusions `~first[-last]`.
pub fn parse_port_spec(
    proto: Proto,
    spec: &str,
    shown: &str,
) -> Result<Vec<PortForward>, ConfigError> {
    if spec == "none" {
        return Ok(Vec::new());
    }
    let (bind, ports) = match spec.split_once('/') {
        Some((b, p)) => (Some(b), p),
        None => (None, spec),
    };
    let (addr, iface) = match bind {
        None => (None, None),
        Some(b) => {
            let (a, i) = match b.split_once('%') {
                Some((a, i)) => (a, Some(i)),
                None => (b, None),
            };
            if i == Some("") {
                return Err(ConfigError::invalid(
                    shown,
                    "empty interface name after '%'",
                ));
            }
            let addr = if a.is_empty() {
                None
            } else {
                Some(a.parse::<IpAddr>().map_err(|_| {
                    ConfigError::invalid(shown, format!("'{a}' is not an IPv4 or IPv6 address"))
                })?)
            };
            if addr.is_none() && i.is_none() {
                return Err(ConfigError::invalid(
                    shown,
                    "an address or %interface must come before '/'",
                ));
            }
            (addr, i.map(str::to_string))
        }
    };
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    let mut all = false;
    if ports == "all" {
        all = true;
    } else {
        for item in ports.split(',') {
            if let Some(x) = item.strip_prefix('~') {
                excludes.push(port_range(x, shown)?);
                continue;
            }
            let (from, to) = match item.split_once(':') {
                Some((f, t)) => (f, Some(t)),
                None => (item, None),
            };
            let host = port_range(from, shown)?;
            let guest = match to {
                None => host,
                Some(t) => {
                    let g = port_range(t, shown)?;
                    // passt: a single target port means "starting at".
                    if g.first != g.last && g.count() != host.count() {
                        return Err(ConfigError::invalid(
                            shown,
                            format!("{host} and {g} are not the same size"),
                        ));
                    }
                    if u32::from(g.first) + host.count() - 1 > 65535 {
                        return Err(ConfigError::invalid(
                            shown,
                            format!("{host} mapped from {} runs past port 65535", g.first),
                        ));
                    }
                    g
                }
            };
            includes.push((host, guest.first));
        }
    }
    to_forwards(proto, addr, iface, all, includes, &excludes, shown)
}

/// Turn includes and exclusions into concrete forwards, splitting ranges around exclusions
/// (each piece keeps its host-to-guest offset). No includes means every port.
pub(crate) fn to_forwards(
    proto: Proto,
    addr: Option<IpAddr>,
    iface: Option<String>,
    all: bool,
    includes: Vec<Include>,
    excludes: &[PortRange],
    shown: &str,
) -> Result<Vec<PortForward>, ConfigError> {
    let skip_ephemeral = all || includes.is_empty();
    let mut pieces = if includes.is_empty() {
        vec![(
            PortRange {
                first: 1,
                last: 65535,
            },
            1,
        )]
    } else {
        includes
    };
    for x in excludes {
        let mut next = Vec::new();
        for (r, g) in pieces {
            if !r.overlaps(x) {
                next.push((r, g));
                continue;
            }
            if r.first < x.first {
                next.push((
                    PortRange {
                        first: r.first,
                        last: x.first - 1,
                    },
                    g,
                ));
            }
            if r.last > x.last {
                let first = x.last + 1;
                next.push((
                    PortRange {
                        first,
                        last: r.last,
                    },
                    g + (first - r.first),
                ));
            }
        }
        pieces = next;
    }
    if pieces.is_empty() {
        return Err(ConfigError::invalid(
            shown,
            "the exclusions leave no port to forward",
        ));
    }
    Ok(pieces
        .into_iter()
        .map(|(ports, guest_port)| PortForward {
            proto,
            host: HostListen::Inet {
                addr,
                iface: iface.clone(),
                ports,
            },
            guest_addr: None,
            guest_port,
            skip_ephemeral,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(host first, host last, guest first)` of each forward.
    fn shape(spec: &str) -> Result<Vec<(u16, u16, u16)>, String> {
        parse_port_spec(Proto::Tcp, spec, &format!("-t {spec}"))
            .map(|v| {
                v.into_iter()
                    .map(|f| match f.host {
                        HostListen::Inet { ports, .. } => (ports.first, ports.last, f.guest_port),
                        HostListen::Unix { .. } => unreachable!(),
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn port_specs_as_passt_documents_them() {
        type Case<'a> = (&'a str, &'a [(u16, u16, u16)]);
        let cases: &[Case] = &[
            ("8080", &[(8080, 8080, 8080)]),
            ("22:23", &[(22, 22, 23)]),
            ("22,25", &[(22, 22, 22), (25, 25, 25)]),
            ("22-80", &[(22, 80, 22)]),
            ("22-80:32-90", &[(22, 80, 32)]),
            ("1000-1010:2000-2010", &[(1000, 1010, 2000)]),
            ("1000-1010:2000", &[(1000, 1010, 2000)]),
            ("127.0.0.1/22", &[(22, 22, 22)]),
            ("192.0.2.1%eth0/22", &[(22, 22, 22)]),
            ("%eth0/22", &[(22, 22, 22)]),
            (
                "2000-5000,~3000-3010",
                &[(2000, 2999, 2000), (3011, 5000, 3011)],
            ),
            ("192.0.2.1/20-30,~25", &[(20, 24, 20), (26, 30, 26)]),
            (
                "1000-1010:2000-2010,~1005",
                &[(1000, 1004, 2000), (1006, 1010, 2006)],
            ),
            ("~20000-20010", &[(1, 19999, 1), (20011, 65535, 20011)]),
            ("all", &[(1, 65535, 1)]),
            ("none", &[]),
        ];
        for (spec, want) in cases {
            assert_eq!(shape(spec).as_deref(), Ok(*want), "-t {spec}");
        }
        let f = parse_port_spec(Proto::Udp, "192.0.2.1%eth0/22", "-u").unwrap();
        assert_eq!(
            f[0].host,
            HostListen::Inet {
                addr: Some("192.0.2.1".parse().unwrap()),
                iface: Some("eth0".into()),
                ports: PortRange::single(22)
            }
        );
        assert!(parse_port_spec(Proto::Tcp, "all", "-t").unwrap()[0].skip_ephemeral);
        assert!(!parse_port_spec(Proto::Tcp, "22", "-t").unwrap()[0].skip_ephemeral);
        let f = parse_port_spec(Proto::Tcp, "::1/22", "-t").unwrap();
        assert!(matches!(
            &f[0].host,
            HostListen::Inet {
                addr: Some(IpAddr::V6(_)),
                ..
            }
        ));
    }

    #[test]
    fn bad_port_specs_name_the_spec() {
        let cases = [
            ("0", "'0' is not a port"),
            ("70000", "'70000' is not a port"),
            ("80-22", "runs backwards"),
            ("22-80:32-40", "not the same size"),
            ("65000-65535:65500", "runs past port 65535"),
            ("x/22", "'x' is not an IPv4 or IPv6 address"),
            ("/22", "an address or %interface"),
            ("1.2.3.4%/22", "empty interface name"),
            ("22,~22", "leave no port"),
            ("", "'' is not a port"),
        ];
        for (spec, want) in cases {
            let e = shape(spec).unwrap_err();
            assert!(e.contains(want), "-t {spec}: {e}");
            assert!(e.starts_with(&format!("-t {spec}:")), "-t {spec}: {e}");
        }
    }
}
