//! `--slirp OPTS`: QEMU's `-netdev user` option string.
//!
//! Reads exactly what QEMU reads (net/net.c and net/slirp.c, QEMU 7.2 to 10.x): the same
//! option names, QemuOpts syntax (`,` separates, `,,` is a literal comma, a bare `restrict`
//! means `restrict=on`, the last of a repeated scalar wins), addresses through `inet_aton`,
//! `net=` with a prefix length, a dotted mask or no mask at all (the classful mask QEMU picks),
//! QEMU's curious `ipv4=`/`ipv6=` defaulting and its `hostfwd=` and `guestfwd=` grammars. The
//! values go into a `Request` unchanged; the slirp profile then derives gateway, DNS
//! and DHCP addresses (and the default guest forward address) and applies QEMU's consistency
//! checks, so the same checks also guard libvirt XML and passt options.
//!
//! `smb=DIR` and `smbserver=ADDR` are read as QEMU reads them (the address through `inet_aton`
//! even without `smb=`, which then ignores it, with a warning here); the directory is made
//! absolute against the current directory, as QEMU's smbd would otherwise resolve a relative one
//! against its own. Whether it exists, and whether smbd is installed, is for the runtime to
//! report: nothing here touches the filesystem.
//!
//! Deliberate differences from QEMU, each refusing rather than guessing: a dotted mask must be
//! contiguous, numbers may not carry trailing garbage, a `guestfwd=…-cmd:` command must split
//! into words now (slirp would only find out at the guest's first connection), `guestfwd=` to
//! a QEMU chardev is refused (only QEMU can reach its chardevs; `cmd:` works from a separate
//! process), and an `smb=` directory whose smb.conf line `path=DIR` would not name it (a line
//! break, a `%` that Samba expands, trailing whitespace or a backslash) is refused, where QEMU
//! would share another directory or none.
//!
//! `command.rs` splits a guest forward's command into words as GLib does; `smb_path.rs` says
//! which directories smb.conf's `path=` line can name.

mod command;
mod smb_path;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::addr::{c_ulong, decimal, inet_aton, mask_to_prefix, valid_domain};
use crate::error::ConfigError;
use crate::request::{AddrKind, RawGuestForward, RawSmbShare, Request, Setting};
use crate::warning::Warning;
use crate::{HostListen, PortForward, PortRange, Proto};
use command::split_command;
use smb_path::{one_line, smb_absolute_checked, smb_conf_trouble};

/// Split a QemuOpts string into `(name, value)` pairs.
fn tokenize(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut name = String::new();
        let mut value = None;
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.peek() == Some(&'=') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                if c == ',' {
                    if chars.peek() == Some(&',') {
                        chars.next();
                        v.push(',');
                        continue;
                    }
                    break;
                }
                v.push(c);
            }
            value = Some(v);
        } else {
            chars.next(); // the ',' (or nothing at the end)
        }
        if name.is_empty() && value.is_none() {
            continue;
        }
        match value {
            Some(v) => out.push((name, v)),
            // A bare word: the netdev type when first, otherwise a boolean switched on.
            None if out.is_empty() && name == "user" => out.push(("type".into(), name)),
            None => out.push((name, "on".into())),
        }
    }
    Ok(out)
}

fn subject(name: &str, value: &str) -> String {
    format!("--slirp {name}={value}")
}

/// QAPI booleans as QemuOpts spells them.
fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(ConfigError::invalid(
            subject(name, value),
            "expects 'on' or 'off'",
        )),
    }
}

fn aton(name: &str, value: &str) -> Result<Ipv4Addr, ConfigError> {
    inet_aton(value)
        .ok_or_else(|| ConfigError::invalid(subject(name, value), "not an IPv4 address"))
}

fn pton6(name: &str, value: &str) -> Result<Ipv6Addr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::invalid(subject(name, value), "not an IPv6 address"))
}

/// The raw options after QemuOpts' "last one wins" for scalars.
#[derive(Default)]
struct Raw {
    net: Option<String>,
    ip: Option<String>,
    host: Option<String>,
    dhcpstart: Option<String>,
    dns: Option<String>,
    restrict: Option<String>,
    hostname: Option<String>,
    domainname: Option<String>,
    dnssearch: Vec<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    ipv6_net: Option<String>,
    ipv6_prefix: Option<String>,
    ipv6_prefixlen: Option<String>,
    ipv6_host: Option<String>,
    ipv6_dns: Option<String>,
    hostfwd: Vec<String>,
    guestfwd: Vec<String>,
    tftp: Option<String>,
    bootfile: Option<String>,
    tftp_server_name: Option<String>,
    smb: Option<String>,
    smbserver: Option<String>,
}

/// Parse `-netdev user` options into a request (QEMU's defaults are applied by the profile).
pub(crate) fn parse(text: &str) -> Result<Request, ConfigError> {
    let mut raw = Raw::default();
    for (name, value) in tokenize(text)? {
        let slot = match name.as_str() {
            "type" => {
                if value != "user" {
                    return Err(ConfigError::invalid(
                        subject(&name, &value),
                        "only the 'user' netdev type is read here",
                    ));
                }
                continue;
            }
            "id" => continue,
            "net" => &mut raw.net,
            "ip" => &mut raw.ip,
            "host" => &mut raw.host,
            "dhcpstart" => &mut raw.dhcpstart,
            "dns" => &mut raw.dns,
            "restrict" => &mut raw.restrict,
            "hostname" => &mut raw.hostname,
            "domainname" => &mut raw.domainname,
            "ipv4" => &mut raw.ipv4,
            "ipv6" => &mut raw.ipv6,
            "ipv6-net" => &mut raw.ipv6_net,
            "ipv6-prefix" => &mut raw.ipv6_prefix,
            "ipv6-prefixlen" => &mut raw.ipv6_prefixlen,
            "ipv6-host" => &mut raw.ipv6_host,
            "ipv6-dns" => &mut raw.ipv6_dns,
            "tftp" => &mut raw.tftp,
            "bootfile" => &mut raw.bootfile,
            "tftp-server-name" => &mut raw.tftp_server_name,
            "dnssearch" => {
                raw.dnssearch.push(value);
                continue;
            }
            "hostfwd" => {
                raw.hostfwd.push(value);
                continue;
            }
            "guestfwd" => {
                raw.guestfwd.push(value);
                continue;
            }
            "smb" => &mut raw.smb,
            "smbserver" => &mut raw.smbserver,
            _ => {
                return Err(ConfigError::invalid(
                    format!("--slirp {name}"),
                    format!("invalid parameter '{name}' for -netdev user"),
                ));
            }
        };
        *slot = Some(value);
    }
    build(raw)
}

/// The request `-netdev user` describes, one group of options at a time.
fn build(raw: Raw) -> Result<Request, ConfigError> {
    let mut req = Request::default();
    read_families(&raw, &mut req)?;
    read_ipv4(&raw, &mut req)?;
    read_ipv6(&raw, &mut req)?;
    read_dhcp_options(&raw, &mut req)?;
    read_forwards(&raw, &mut req)?;
    read_smb(&raw, &mut req)?;
    Ok(req)
}

/// `net=`, or the legacy `ip=A`, which QEMU reads as `net=A/24`: `(option name, value)`.
fn vnet(raw: &Raw) -> Option<(&'static str, String)> {
    match (&raw.net, &raw.ip) {
        (Some(n), _) => Some(("net", n.clone())),
        (None, Some(ip)) => Some(("ip", format!("{ip}/24"))),
        (None, None) => None,
    }
}

/// `ipv4=` and `ipv6=`, and QEMU's refusal of settings for a family they turn off.
fn read_families(raw: &Raw, req: &mut Request) -> Result<(), ConfigError> {
    // net/slirp.c net_init_slirp: `ipv4=on` alone turns IPv6 off and vice versa.
    let has_v4 = raw
        .ipv4
        .as_deref()
        .map(|v| parse_bool("ipv4", v))
        .transpose()?;
    let has_v6 = raw
        .ipv6
        .as_deref()
        .map(|v| parse_bool("ipv6", v))
        .transpose()?;
    let ipv4 = !((has_v6 == Some(true) && has_v4.is_none()) || has_v4 == Some(false));
    let ipv6 = !((has_v4 == Some(true) && has_v6.is_none()) || has_v6 == Some(false));
    let v4_cause = match (has_v4, has_v6) {
        (Some(false), _) => "--slirp ipv4=off".to_string(),
        _ => "--slirp ipv6=on (without ipv4=on)".to_string(),
    };
    let v6_cause = match (has_v4, has_v6) {
        (_, Some(false)) => "--slirp ipv6=off".to_string(),
        _ => "--slirp ipv4=on (without ipv6=on)".to_string(),
    };

    let ipv6_prefix_given = raw.ipv6_net.is_some() || raw.ipv6_prefix.is_some();
    if !ipv4 && (vnet(raw).is_some() || raw.host.is_some() || raw.dns.is_some()) {
        return Err(ConfigError::Conflict(format!(
            "{v4_cause}: IPv4 disabled but net/host/dns provided"
        )));
    }
    if !ipv6 && (ipv6_prefix_given || raw.ipv6_host.is_some() || raw.ipv6_dns.is_some()) {
        return Err(ConfigError::Conflict(format!(
            "{v6_cause}: IPv6 disabled but prefix/host6/dns6 provided"
        )));
    }
    if !ipv4 && !ipv6 {
        return Err(ConfigError::Conflict(
            "--slirp: IPv4 and IPv6 disabled".to_string(),
        ));
    }
    if !ipv4 {
        req.ipv4_off = Some(v4_cause);
    }
    if !ipv6 {
        req.ipv6_off = Some(v6_cause);
    }
    Ok(())
}

/// `net=` (or `ip=`), `host=`, `dns=`, `dhcpstart=` and `restrict=`.
fn read_ipv4(raw: &Raw, req: &mut Request) -> Result<(), ConfigError> {
    if let Some((name, value)) = vnet(raw) {
        let shown = if name == "ip" {
            subject("ip", raw.ip.as_deref().unwrap_or_default())
        } else {
            subject(name, &value)
        };
        let (addr, prefix) = parse_net(&shown, &value)?;
        req.v4_addr = Some(Setting::new(addr, shown.clone()));
        req.v4_addr_kind = AddrKind::Network;
        req.v4_prefix = prefix.map(|p| Setting::new(p, shown.clone()));
    }
    if let Some(h) = &raw.host {
        req.v4_gateway = Some(Setting::new(aton("host", h)?, subject("host", h)));
    }
    if let Some(d) = &raw.dns {
        req.v4_dns = Some(Setting::new(aton("dns", d)?, subject("dns", d)));
    }
    if let Some(d) = &raw.dhcpstart {
        req.v4_dhcp_start = Some(Setting::new(aton("dhcpstart", d)?, subject("dhcpstart", d)));
    }
    if let Some(r) = &raw.restrict {
        req.restrict = parse_bool("restrict", r)?;
    }
    Ok(())
}

/// `ipv6-net=` (or `ipv6-prefix=` and `ipv6-prefixlen=`), `ipv6-host=` and `ipv6-dns=`.
fn read_ipv6(raw: &Raw, req: &mut Request) -> Result<(), ConfigError> {
    // net/net.c splits ipv6-net into ipv6-prefix and ipv6-prefixlen, after the others, so it
    // wins over both.
    let mut prefix6 = raw
        .ipv6_prefix
        .as_ref()
        .map(|p| (p.clone(), subject("ipv6-prefix", p)));
    let mut prefixlen6 = raw
        .ipv6_prefixlen
        .as_ref()
        .map(|l| (l.clone(), subject("ipv6-prefixlen", l)));
    if let Some(n) = &raw.ipv6_net {
        let shown = subject("ipv6-net", n);
        let (p, l) = match n.split_once('/') {
            Some((p, l)) => {
                // qemu_strtoul(l, NULL, 10): decimal digits only.
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ConfigError::invalid(
                        shown,
                        "parameter 'ipv6-net' expects a number after '/'",
                    ));
                }
                (p.to_string(), l.to_string())
            }
            None => (n.clone(), "64".to_string()),
        };
        prefix6 = Some((p, shown.clone()));
        prefixlen6 = Some((l, shown));
    }
    if let Some((p, shown)) = prefix6 {
        let a: Ipv6Addr = p
            .parse()
            .map_err(|_| ConfigError::invalid(shown.clone(), "not an IPv6 prefix"))?;
        req.v6_addr = Some(Setting::new(a, shown));
        req.v6_addr_kind = AddrKind::Network;
    }
    if let Some((l, shown)) = prefixlen6 {
        let n = ipv6_prefix_len(&l, &shown, &mut req.notes)?;
        req.v6_prefix = Some(Setting::new(n, shown));
    }
    if let Some(h) = &raw.ipv6_host {
        req.v6_gateway = Some(Setting::new(
            pton6("ipv6-host", h)?,
            subject("ipv6-host", h),
        ));
    }
    if let Some(d) = &raw.ipv6_dns {
        req.v6_dns = Some(Setting::new(pton6("ipv6-dns", d)?, subject("ipv6-dns", d)));
    }
    Ok(())
}

/// `ipv6-prefixlen=` (or the length of `ipv6-net=`) as net/slirp.c reads it: a number too
/// large for QEMU's integer is out of range rather than malformed, and 0 means the default.
fn ipv6_prefix_len(l: &str, shown: &str, notes: &mut Vec<Warning>) -> Result<u8, ConfigError> {
    let n: i64 = match l.parse() {
        Ok(n) => n,
        Err(_)
            if !l.is_empty()
                && l.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            i64::MAX
        }
        Err(_) => {
            return Err(ConfigError::invalid(
                shown,
                "the IPv6 prefix length is not a number",
            ));
        }
    };
    // net/slirp.c: 0 means "not given", i.e. 64.
    let n = if n == 0 {
        notes.push(Warning::Ipv6PrefixLenZero {
            at: shown.to_string(),
        });
        64
    } else {
        n
    };
    if !(0..=126).contains(&n) {
        return Err(ConfigError::invalid(
            shown,
            "invalid IPv6 prefix length (QEMU accepts 0-126)",
        ));
    }
    Ok(n as u8)
}

/// What DHCP and TFTP tell the guest: names, search list, boot file and TFTP root, with
/// the lengths libslirp allows.
fn read_dhcp_options(raw: &Raw, req: &mut Request) -> Result<(), ConfigError> {
    if let Some(d) = &raw.domainname {
        if d.is_empty() {
            return Err(ConfigError::invalid(
                subject("domainname", d),
                "'domainname' parameter cannot be empty",
            ));
        }
        if d.len() > 255 {
            return Err(ConfigError::invalid(
                "--slirp domainname=…",
                "'domainname' parameter cannot exceed 255 bytes",
            ));
        }
        req.domain_name = Some(d.clone());
    }
    if let Some(h) = &raw.hostname {
        if h.len() > 255 {
            return Err(ConfigError::invalid(
                "--slirp hostname=…",
                "'hostname' parameter cannot exceed 255 bytes",
            ));
        }
        req.hostname = Some(h.clone());
    }
    if let Some(t) = &raw.tftp_server_name {
        if t.len() > 255 {
            return Err(ConfigError::invalid(
                "--slirp tftp-server-name=…",
                "'tftp-server-name' parameter cannot exceed 255 bytes",
            ));
        }
        req.tftp_server_name = Some(t.clone());
    }
    if let Some(b) = &raw.bootfile {
        // libslirp slirp_new: the BOOTP `file` field holds 128 bytes with its terminator.
        if b.len() >= 128 {
            return Err(ConfigError::invalid(
                "--slirp bootfile=…",
                "the boot file name must be shorter than 128 bytes",
            ));
        }
        req.bootfile = Some(b.clone());
    }
    if let Some(t) = &raw.tftp {
        req.tftp_root = Some(PathBuf::from(t));
    }
    if !raw.dnssearch.is_empty() {
        for d in &raw.dnssearch {
            if !valid_domain(d) {
                return Err(ConfigError::invalid(
                    subject("dnssearch", d),
                    "not a valid domain name",
                ));
            }
        }
        req.search = Some(raw.dnssearch.clone());
    }
    Ok(())
}

/// `hostfwd=` and `guestfwd=`, in the order given.
fn read_forwards(raw: &Raw, req: &mut Request) -> Result<(), ConfigError> {
    for f in &raw.hostfwd {
        let fwd = parse_hostfwd(f)?;
        req.forwards.push(Setting::new(fwd, subject("hostfwd", f)));
    }
    for g in &raw.guestfwd {
        let fwd = parse_guestfwd(g)?;
        req.guest_forwards
            .push(Setting::new(fwd, subject("guestfwd", g)));
    }
    Ok(())
}

/// `smb=` and `smbserver=`.
fn read_smb(raw: &Raw, req: &mut Request) -> Result<(), ConfigError> {
    // net/slirp.c parses smbserver= whether or not smb= is given.
    let server = match &raw.smbserver {
        Some(a) => Some(Setting::new(
            inet_aton(a).ok_or_else(|| {
                ConfigError::invalid(
                    subject("smbserver", a),
                    "not an IPv4 address (QEMU: Failed to parse SMB address)",
                )
            })?,
            subject("smbserver", a),
        )),
        None => None,
    };
    match (&raw.smb, server) {
        (Some(dir), server) => {
            req.smb = Some(RawSmbShare {
                export: Setting::new(smb_export(dir)?, subject("smb", dir)),
                server,
            });
        }
        (None, Some(server)) => req
            .notes
            .push(Warning::SmbServerAlone { at: server.origin }),
        (None, None) => {}
    }
    Ok(())
}

/// `smb=DIR`: the directory to share, made absolute (QEMU hands smbd the path as written, and
/// smbd resolves a relative one against its own working directory, not the user's). The
/// filesystem is not consulted: whether the directory exists is the runtime's to report.
fn smb_export(value: &str) -> Result<PathBuf, ConfigError> {
    let shown = subject("smb", &one_line(value));
    if value.is_empty() {
        return Err(ConfigError::invalid(
            shown,
            "expects the directory to share",
        ));
    }
    if let Some(why) = smb_conf_trouble(value.as_bytes()) {
        return Err(ConfigError::invalid(shown, format!("the path {why}")));
    }
    let abs = std::path::absolute(value)
        .map_err(|e| ConfigError::invalid(&shown, format!("cannot make the path absolute: {e}")))?;
    smb_absolute_checked(shown, abs)
}

/// `net=A[/N|/MASK]` as net/slirp.c reads it: `(address, prefix)`, with `None` when no mask
/// was written (the profile then applies QEMU's classful mask).
fn parse_net(shown: &str, value: &str) -> Result<(Ipv4Addr, Option<u8>), ConfigError> {
    let Some((a, m)) = value.split_once('/') else {
        let addr = inet_aton(value)
            .ok_or_else(|| ConfigError::invalid(shown, "not an IPv4 network address"))?;
        return Ok((addr, None));
    };
    let addr =
        inet_aton(a).ok_or_else(|| ConfigError::invalid(shown, "not an IPv4 network address"))?;
    // QEMU: strtol(m); if it stops early, the mask is dotted.
    if m.bytes().all(|b| b.is_ascii_digit()) {
        let shift: u64 = if m.is_empty() {
            0
        } else {
            m.parse().unwrap_or(u64::MAX)
        };
        if !(4..=32).contains(&shift) {
            return Err(ConfigError::invalid(
                shown,
                "invalid netmask provided (must be in range 4-32)",
            ));
        }
        return Ok((addr, Some(shift as u8)));
    }
    let mask = inet_aton(m)
        .ok_or_else(|| ConfigError::invalid(shown, "failed to parse netmask (trailing chars)"))?;
    let prefix = mask_to_prefix(u32::from(mask)).ok_or_else(|| {
        ConfigError::invalid(shown, format!("{mask} is not a contiguous netmask"))
    })?;
    Ok((addr, Some(prefix)))
}

/// QEMU's `qemu_strtoi(s, &end, 0, ..)` for a port, refusing trailing text.
fn port_number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    c_ulong(s.strip_prefix('+').unwrap_or(s))
}

/// `hostfwd=[tcp|udp|unix]:[haddr]:hport-[gaddr]:gport` (net/slirp.c `slirp_hostfwd`).
pub(crate) fn parse_hostfwd(rule: &str) -> Result<PortForward, ConfigError> {
    let fail = |why: &str| {
        ConfigError::invalid(
            subject("hostfwd", rule),
            format!("invalid host forwarding rule ({why})"),
        )
    };
    let (proto, rest) = rule
        .split_once(':')
        .ok_or_else(|| fail("No : separators"))?;
    let (proto, unix) = match proto {
        "" | "tcp" => (Proto::Tcp, false),
        "udp" => (Proto::Udp, false),
        "unix" => (Proto::Tcp, true),
        _ => return Err(fail("Bad protocol name")),
    };
    let (host, rest) = if unix {
        let (path, rest) = rest
            .split_once('-')
            .ok_or_else(|| fail("Missing - separator"))?;
        if path.is_empty() {
            return Err(fail("Missing unix socket path"));
        }
        if !path.starts_with('/') {
            return Err(fail("unix socket path must be absolute"));
        }
        if path.len() > 107 {
            return Err(fail("Unix socket path is too long"));
        }
        (
            HostListen::Unix {
                path: PathBuf::from(path),
            },
            rest,
        )
    } else {
        let (haddr, rest) = rest
            .split_once(':')
            .ok_or_else(|| fail("Missing : separator"))?;
        let addr = if haddr.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            inet_aton(haddr).ok_or_else(|| fail("Bad host address"))?
        };
        let (hport, rest) = rest
            .split_once('-')
            .ok_or_else(|| fail("Bad host port separator"))?;
        let hport = port_number(hport)
            .filter(|p| *p <= 65535)
            .ok_or_else(|| fail("Bad host port"))?;
        (
            HostListen::Inet {
                addr: Some(IpAddr::V4(addr)),
                iface: None,
                ports: PortRange::single(hport as u16),
            },
            rest,
        )
    };
    let (gaddr, gport) = rest
        .split_once(':')
        .ok_or_else(|| fail("Missing guest address"))?;
    let guest_addr = if gaddr.is_empty() {
        None
    } else {
        Some(IpAddr::V4(
            inet_aton(gaddr).ok_or_else(|| fail("Bad guest address"))?,
        ))
    };
    let gport = port_number(gport)
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| fail("Bad guest port"))?;
    Ok(PortForward {
        proto,
        host,
        guest_addr,
        guest_port: gport as u16,
        skip_ephemeral: false,
    })
}

/// The port of a guest forward as net/slirp.c reads it, `strtol(s, &end, 10)` with nothing
/// left over: optional leading white space and `+`, then decimal digits.
fn guestfwd_port(s: &str) -> Option<u16> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    decimal(s.strip_prefix('+').unwrap_or(s))
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as u16)
}

/// `guestfwd=[tcp]:[SERVER]:PORT-cmd:COMMAND` (net/slirp.c `slirp_guestfwd`). An empty SERVER
/// stays `None`: its default depends on the network, which is the profile's to derive.
pub(crate) fn parse_guestfwd(rule: &str) -> Result<RawGuestForward, ConfigError> {
    let fail = |why: &str| {
        ConfigError::invalid(
            subject("guestfwd", rule),
            format!("invalid guest forwarding rule ({why})"),
        )
    };
    let (proto, rest) = rule
        .split_once(':')
        .ok_or_else(|| fail("expected [tcp]:[SERVER]:PORT-cmd:COMMAND"))?;
    if !proto.is_empty() && proto != "tcp" {
        return Err(fail(
            "the protocol must be tcp or empty; QEMU forwards no UDP",
        ));
    }
    let (server, rest) = rest
        .split_once(':')
        .ok_or_else(|| fail("missing : after the server address"))?;
    let addr = if server.is_empty() {
        None
    } else {
        let a = inet_aton(server).ok_or_else(|| fail("bad server address"))?;
        // libslirp takes 0.0.0.0 for "not given" as well.
        (!a.is_unspecified()).then_some(a)
    };
    let (port, target) = rest
        .split_once('-')
        .ok_or_else(|| fail("missing - after the port"))?;
    let port =
        guestfwd_port(port).ok_or_else(|| fail("the port must be a number from 1 to 65535"))?;
    if target.is_empty() {
        return Err(fail("nothing after the port; expected cmd:COMMAND"));
    }
    // Anything but `cmd:` names a chardev of the QEMU process, out of a backend's reach.
    let Some(command) = target.strip_prefix("cmd:") else {
        return Err(ConfigError::invalid(
            subject("guestfwd", rule),
            "forwards to a QEMU chardev, which only QEMU can reach; use cmd:COMMAND",
        ));
    };
    let argv = split_command(command)
        .map_err(|e| ConfigError::invalid(subject("guestfwd", rule), e.to_string()))?;
    Ok(RawGuestForward {
        addr,
        port,
        command: command.to_string(),
        argv,
    })
}

#[cfg(test)]
mod tests;
