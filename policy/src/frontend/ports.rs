//! passt's port-spec grammar and the splitting of port ranges around exclusions, shared by
//! `-t`/`-u` (passt's syntax) and libvirt's `<portForward>` (the same spec in XML form).
//!
//! Kept apart from both front ends so that neither has to import the other.

use std::net::IpAddr;

use crate::addr::decimal;
use crate::error::ConfigError;
use crate::{HostListen, PortForward, PortRange, Proto};

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
pub(crate) fn parse_port_spec(
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
