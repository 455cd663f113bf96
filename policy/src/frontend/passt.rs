//! passt-style options: `--address`, `--netmask`, `--gateway`, `--mac-addr`, `--dns`,
//! `--search`, `--mtu`, `--hostname`, `-t`/`-u`, `--no-map-gw`, and the switches `-4`/`--ipv4-only`,
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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::{MAX_MTU, MIN_MTU, decimal, parse_netmask, valid_domain};
use crate::error::ConfigError;
use crate::frontend::ports::parse_port_spec;
use crate::request::{AddrKind, Request, Setting, overlay};
use crate::warning::Warning;
use crate::{MacAddr, Proto};

/// How errors name `-4`: either spelling may have been typed.
const IPV4_ONLY: &str = "-4/--ipv4-only";
/// How errors name `-6`.
const IPV6_ONLY: &str = "-6/--ipv6-only";

/// The passt-style options as typed, before any is read: the binary's command-line parser
/// fills this in, so the policy layer needs no command-line library. Values stay text so that
/// errors and `--explain` quote them as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasstOptions {
    /// `--address ADDR[/LEN]`, at most once per family.
    pub address: Vec<String>,
    /// `--netmask MASK`.
    pub netmask: Option<String>,
    /// `--gateway ADDR`, at most once per family.
    pub gateway: Vec<String>,
    /// `--mac-addr MAC`: the gateway's MAC.
    pub mac_addr: Option<String>,
    /// `--dns ADDR`, at most once per family.
    pub dns: Vec<String>,
    /// `--search LIST`, each space-separated.
    pub search: Vec<String>,
    /// `--mtu MTU`.
    pub mtu: Option<String>,
    /// `-H`/`--hostname NAME`: DHCP option 12.
    pub hostname: Option<String>,
    /// `-t SPEC`.
    pub tcp_ports: Vec<String>,
    /// `-u SPEC`.
    pub udp_ports: Vec<String>,
    pub no_map_gw: bool,
    pub ipv4_only: bool,
    pub ipv6_only: bool,
    pub no_dhcp: bool,
    pub no_dhcpv6: bool,
    pub no_ndp: bool,
    pub no_ra: bool,
    pub no_tcp: bool,
    pub no_udp: bool,
    pub no_icmp: bool,
}

impl PasstOptions {
    /// The options given, as typed (empty when none), for `--explain`'s "from" line.
    pub(crate) fn summary(&self) -> String {
        let mut v = Vec::new();
        let mut push = |opt: &str, vals: &[String]| {
            for x in vals {
                v.push(format!("{opt} {x}"));
            }
        };
        push("--address", &self.address);
        push("--netmask", self.netmask.as_slice());
        push("--gateway", &self.gateway);
        push("--mac-addr", self.mac_addr.as_slice());
        push("--dns", &self.dns);
        push("--search", &self.search);
        push("--mtu", self.mtu.as_slice());
        push("--hostname", self.hostname.as_slice());
        push("-t", &self.tcp_ports);
        push("-u", &self.udp_ports);
        for (given, opt) in [
            (self.no_map_gw, "--no-map-gw"),
            (self.ipv4_only, IPV4_ONLY),
            (self.ipv6_only, IPV6_ONLY),
            (self.no_dhcp, "--no-dhcp"),
            (self.no_dhcpv6, "--no-dhcpv6"),
            (self.no_ndp, "--no-ndp"),
            (self.no_ra, "--no-ra"),
            (self.no_tcp, "--no-tcp"),
            (self.no_udp, "--no-udp"),
            (self.no_icmp, "--no-icmp"),
        ] {
            if given {
                v.push(opt.into());
            }
        }
        v.join(" ")
    }
}

/// Lay the passt-style options over `req`, option by option in the order passt documents them.
pub(crate) fn apply(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    apply_addresses(opts, req)?;
    apply_gateways(opts, req)?;
    apply_mac(opts, req)?;
    apply_dns(opts, req)?;
    apply_search(opts, req)?;
    apply_mtu(opts, req)?;
    apply_hostname(opts, req)?;
    apply_ports(opts, req)?;
    if opts.no_map_gw {
        req.map_gateway_to_loopback = false;
    }
    apply_families(opts, req)?;
    apply_services(opts, req);
    Ok(())
}

/// Each `OPT VALUE` of `values` in order, its address read from `addr_part(VALUE)`, handed to
/// `each` with the words to quote (`OPT VALUE`). A second value of one family is refused, in
/// the words `only(family)`: passt keeps one address, gateway and DNS server per family.
fn each_once_per_family<'a>(
    opt: &str,
    values: &'a [String],
    addr_part: impl Fn(&'a str, &str) -> Result<&'a str, ConfigError>,
    only: impl Fn(&str) -> String,
    mut each: impl FnMut(&'a str, String, IpAddr) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    let mut seen4 = None::<&str>;
    let mut seen6 = None::<&str>;
    for value in values {
        let shown = format!("{opt} {value}");
        let ip: IpAddr = addr_part(value, &shown)?
            .parse()
            .map_err(|_| ConfigError::invalid(&shown, "not an IPv4 or IPv6 address"))?;
        let (seen, family) = match ip {
            IpAddr::V4(_) => (&mut seen4, "IPv4"),
            IpAddr::V6(_) => (&mut seen6, "IPv6"),
        };
        if let Some(prev) = seen.replace(value) {
            return Err(ConfigError::Conflict(format!(
                "{opt} {prev} and {opt} {value}: {}",
                only(family)
            )));
        }
        each(value, shown, ip)?;
    }
    Ok(())
}

/// The address of `ADDR[/LEN]`.
fn before_slash<'v>(value: &'v str, _shown: &str) -> Result<&'v str, ConfigError> {
    Ok(value.split_once('/').map_or(value, |(ip, _)| ip))
}

/// A value that is an address and nothing else.
fn whole<'v>(value: &'v str, _shown: &str) -> Result<&'v str, ConfigError> {
    Ok(value)
}

/// The address of `--dns VALUE`; passt's `--dns none` has no meaning here, since the guest is
/// always offered the relay.
fn dns_server<'v>(value: &'v str, shown: &str) -> Result<&'v str, ConfigError> {
    if value == "none" {
        return Err(ConfigError::invalid(
            shown,
            "not supported: the guest is always offered the DNS relay \
             (--slirp restrict=on leaves router and DNS out of DHCP)",
        ));
    }
    Ok(value)
}

/// `--address ADDR[/LEN]` and `--netmask`: the address is recorded as the guest's own; the
/// profile decides what that means.
fn apply_addresses(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    let only = |family: &str| format!("one {family} address only");
    each_once_per_family(
        "--address",
        &opts.address,
        before_slash,
        only,
        |a, shown, ip| {
            let len = a.split_once('/').map(|(_, len)| len);
            let (max, prefix) = match ip {
                IpAddr::V4(v4) => {
                    overlay(&mut req.v4_addr, Setting::new(v4, &shown), &mut req.notes);
                    req.v4_addr_kind = AddrKind::Address;
                    if let (Some(_), Some(m)) = (len, &opts.netmask) {
                        return Err(ConfigError::Conflict(format!(
                            "{shown} carries a prefix length and --netmask {m} is given too: use one"
                        )));
                    }
                    (32, &mut req.v4_prefix)
                }
                IpAddr::V6(v6) => {
                    overlay(&mut req.v6_addr, Setting::new(v6, &shown), &mut req.notes);
                    req.v6_addr_kind = AddrKind::Address;
                    (128, &mut req.v6_prefix)
                }
            };
            if let Some(len) = len {
                let n = decimal(len).filter(|n| *n <= max).ok_or_else(|| {
                    ConfigError::invalid(&shown, format!("the prefix length must be 0-{max}"))
                })?;
                overlay(prefix, Setting::new(n as u8, &shown), &mut req.notes);
            }
            Ok(())
        },
    )?;
    if let Some(m) = &opts.netmask {
        let shown = format!("--netmask {m}");
        let n = parse_netmask(m).map_err(|why| ConfigError::invalid(&shown, why))?;
        overlay(&mut req.v4_prefix, Setting::new(n, shown), &mut req.notes);
    }
    Ok(())
}

/// The IPv4 and IPv6 setting of one kind in a request, and its notes (which are not part of
/// either, so that all three can be borrowed at once).
type FamilySlots<'r> = (
    &'r mut Option<Setting<Ipv4Addr>>,
    &'r mut Option<Setting<Ipv6Addr>>,
    &'r mut Vec<Warning>,
);

/// `OPT ADDR` once per family, each laid over the setting `slots` picks for its family.
fn overlay_per_family<'a>(
    req: &mut Request,
    opt: &str,
    values: &'a [String],
    addr_part: impl Fn(&'a str, &str) -> Result<&'a str, ConfigError>,
    only: impl Fn(&str) -> String,
    slots: fn(&mut Request) -> FamilySlots<'_>,
) -> Result<(), ConfigError> {
    each_once_per_family(opt, values, addr_part, only, |_, shown, ip| {
        let (v4, v6, notes) = slots(req);
        match ip {
            IpAddr::V4(a) => overlay(v4, Setting::new(a, shown), notes),
            IpAddr::V6(a) => overlay(v6, Setting::new(a, shown), notes),
        }
        Ok(())
    })
}

/// `--gateway ADDR`, once per family.
fn apply_gateways(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    overlay_per_family(
        req,
        "--gateway",
        &opts.gateway,
        whole,
        |family| format!("one {family} gateway only"),
        |r| (&mut r.v4_gateway, &mut r.v6_gateway, &mut r.notes),
    )
}

/// `--mac-addr MAC`: the gateway's MAC, as passt means it.
fn apply_mac(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    if let Some(m) = &opts.mac_addr {
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
    Ok(())
}

/// `--dns ADDR`, once per family.
fn apply_dns(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    overlay_per_family(
        req,
        "--dns",
        &opts.dns,
        dns_server,
        |family| format!("the guest gets one {family} DNS address"),
        |r| (&mut r.v4_dns, &mut r.v6_dns, &mut r.notes),
    )
}

/// `--search LIST`: every word of every `--search` is one domain.
fn apply_search(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    if opts.search.is_empty() {
        return Ok(());
    }
    let mut list: Vec<String> = opts
        .search
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_string)
        .collect();
    // passt: `--search none` sends no search list (`none.` searches a domain "none").
    if list == ["none"] {
        list.clear();
    }
    if let Some(d) = list.iter().find(|d| !valid_domain(d)) {
        return Err(ConfigError::invalid(
            format!("--search {d}"),
            "not a valid domain name",
        ));
    }
    if let Some(old) = &req.search
        && *old != list
    {
        req.notes
            .push(Warning::SearchOverrides { old: old.clone() });
    }
    req.search = Some(list);
    Ok(())
}

/// `--mtu MTU`; 0 keeps the link's MTU and advertises none, as in passt.
fn apply_mtu(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    if let Some(m) = &opts.mtu {
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
    Ok(())
}

/// `--hostname NAME`: the name DHCP gives the guest (option 12), as slirp's `hostname=`; a
/// different one from the configuration is replaced with a warning.
fn apply_hostname(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    if let Some(h) = &opts.hostname {
        if h.is_empty() || h.len() > 255 {
            return Err(ConfigError::invalid(
                format!("--hostname {h}"),
                "must be 1-255 bytes",
            ));
        }
        if let Some(old) = req.hostname.replace(h.clone())
            && old != *h
        {
            req.notes.push(Warning::Overrides {
                by: format!("--hostname {h}"),
                replaced: "the configuration's hostname".into(),
                new: h.clone(),
                old,
            });
        }
    }
    Ok(())
}

/// `-t SPEC` and `-u SPEC`: forwards add to those of the configuration.
fn apply_ports(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    for (proto, specs, opt) in [
        (Proto::Tcp, &opts.tcp_ports, "-t"),
        (Proto::Udp, &opts.udp_ports, "-u"),
    ] {
        for spec in specs {
            let shown = format!("{opt} {spec}");
            for f in parse_port_spec(proto, spec, &shown)? {
                req.forwards.push(Setting::new(f, &shown));
            }
        }
    }
    Ok(())
}

/// `-4` and `-6`.
fn apply_families(opts: &PasstOptions, req: &mut Request) -> Result<(), ConfigError> {
    match (opts.ipv4_only, opts.ipv6_only) {
        (true, true) => Err(ConfigError::Conflict(format!(
            "{IPV4_ONLY} and {IPV6_ONLY} exclude each other: give one"
        ))),
        (true, false) => keep_one_family(&req.ipv4_off, &mut req.ipv6_off, IPV4_ONLY, "IPv4"),
        (false, true) => keep_one_family(&req.ipv6_off, &mut req.ipv4_off, IPV6_ONLY, "IPv6"),
        (false, false) => Ok(()),
    }
}

/// The `--no-*` switches: only recorded here; the profile checks what they leave possible.
fn apply_services(opts: &PasstOptions, req: &mut Request) {
    let s = &mut req.services;
    for (given, service) in [
        (opts.no_dhcp, &mut s.dhcp),
        (opts.no_dhcpv6, &mut s.dhcpv6),
        (opts.no_ra, &mut s.ra),
        (opts.no_tcp, &mut s.tcp),
        (opts.no_udp, &mut s.udp),
        (opts.no_icmp, &mut s.icmp),
    ] {
        if given {
            *service = false;
        }
    }
    if opts.no_ndp {
        s.ndp = false;
        s.ra = false;
    }
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
