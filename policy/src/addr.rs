//! Address, mask and number parsing shared by the front ends.
//!
//! QEMU reads `-netdev user` addresses with glibc's `inet_aton`, which takes more than dotted
//! quads (`10.2` is 10.0.0.2, `0x0a.0.2.0` is 10.0.2.0, a leading 0 means octal); passt and
//! libvirt use `inet_pton`, which takes only dotted quads. Each front end picks the reader its
//! original uses, so the same text means the same address here as there.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::prefix_to_mask;

/// The largest MTU passt advertises (65535 minus the Ethernet header, rounded to 32 bits);
/// libvirt's `<mtu>` and `--mtu` share the bounds.
pub(crate) const MAX_MTU: u16 = 65520;
/// The smallest MTU an IPv4 link may have.
pub(crate) const MIN_MTU: u16 = 68;

/// An IPv4 address from the number QEMU's derivations compute (`net | (0x0202 & !mask)`).
pub(crate) fn v4_or(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr)
}

/// glibc `inet_aton`: one to four parts, each decimal, `0x` hex or `0` octal; the last part
/// fills the remaining bytes. Trailing garbage is refused (glibc tolerates text after a blank).
pub(crate) fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut vals = Vec::with_capacity(parts.len());
    for p in &parts {
        vals.push(c_ulong(p)?);
    }
    let (last, head) = vals.split_last()?;
    if head.iter().any(|&v| v > 0xff) {
        return None;
    }
    let tail_bits = 8 * (4 - head.len() as u32);
    if tail_bits < 32 && *last >> tail_bits != 0 {
        return None;
    }
    if *last > u64::from(u32::MAX) {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, v) in head.iter().enumerate() {
        addr |= (*v as u32) << (24 - 8 * i as u32);
    }
    addr |= *last as u32;
    Some(Ipv4Addr::from(addr))
}

/// A C `strtoul(s, &end, 0)` that must consume the whole string: `0x` hex, `0` octal, decimal.
pub(crate) fn c_ulong(s: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// A strict decimal number (libvirt attributes, passt port numbers).
pub(crate) fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The prefix length of a contiguous netmask; `None` for masks like 255.0.255.0.
pub(crate) fn mask_to_prefix(mask: u32) -> Option<u8> {
    let ones = mask.leading_ones();
    (mask.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// A netmask written as a bit count or a dotted mask (passt's `--netmask`).
pub(crate) fn parse_netmask(s: &str) -> Result<u8, String> {
    if let Some(n) = decimal(s) {
        return if n <= 32 {
            Ok(n as u8)
        } else {
            Err(format!("{n} is not a prefix length (0-32)"))
        };
    }
    let mask: Ipv4Addr = s
        .parse()
        .map_err(|_| "neither a prefix length nor a dotted netmask".to_string())?;
    mask_to_prefix(u32::from(mask)).ok_or_else(|| format!("{mask} is not a contiguous netmask"))
}

/// QEMU's mask for `net=A` without `/N` (net/slirp.c). Its comments name the classes the wrong
/// way round: 192.0.2.0 really gets a /28 and 224.0.0.0 a /24.
pub(crate) fn classful_qemu(addr: Ipv4Addr) -> u8 {
    let a = u32::from(addr);
    if a & 0x8000_0000 == 0 {
        8
    } else if a & 0xfff0_0000 == 0xac10_0000 {
        12
    } else if a & 0xc000_0000 == 0x8000_0000 || a & 0xffff_0000 == 0xc0a8_0000 {
        // Class B, and 192.168.0.0/16.
        16
    } else if a & 0xffff_0000 == 0xc612_0000 {
        15
    } else if a & 0xe000_0000 == 0xe000_0000 {
        24
    } else {
        28
    }
}

/// passt's mask for an address given without one and not found on the host: the RFC 4632
/// class (A /8, B /16, C /24); classes D and E have none.
pub(crate) fn classful_passt(addr: Ipv4Addr) -> Option<u8> {
    match addr.octets()[0] {
        0..=127 => Some(8),
        128..=191 => Some(16),
        192..=223 => Some(24),
        _ => None,
    }
}

/// `addr & mask`.
pub(crate) fn v4_net(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & prefix_to_mask(prefix))
}

/// `addr | !mask`.
pub(crate) fn v4_broadcast(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) | !prefix_to_mask(prefix))
}

/// Whether `a` lies in `net/prefix`.
pub(crate) fn v4_in(net: Ipv4Addr, prefix: u8, a: Ipv4Addr) -> bool {
    v4_net(a, prefix) == v4_net(net, prefix)
}

/// The IPv6 netmask of a prefix length.
pub(crate) fn v6_mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        n if n >= 128 => u128::MAX,
        n => u128::MAX << (128 - u32::from(n)),
    }
}

/// `addr & mask` for IPv6.
pub(crate) fn v6_net(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(addr) & v6_mask(prefix))
}

/// libslirp's `in6_equal_net`: the first `prefix` bits agree.
pub(crate) fn v6_in(net: Ipv6Addr, prefix: u8, a: Ipv6Addr) -> bool {
    v6_net(a, prefix) == v6_net(net, prefix)
}

/// Whether `s` is a usable DNS name for DHCP option 119 / 15 (labels 1-63 bytes, 253 total).
pub(crate) fn valid_domain(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_aton_forms() {
        let cases: &[(&str, Option<[u8; 4]>)] = &[
            ("10.0.2.15", Some([10, 0, 2, 15])),
            ("10.2", Some([10, 0, 0, 2])),
            ("10.0.515", Some([10, 0, 2, 3])),
            ("167772687", Some([10, 0, 2, 15])),
            ("0x0a.0.2.0", Some([10, 0, 2, 0])),
            ("012.0.2.0", Some([10, 0, 2, 0])),
            ("255.255.255.255", Some([255; 4])),
            ("256.0.0.0", None),
            ("10.0.2.256", None),
            ("1.2.3.4.5", None),
            ("", None),
            ("10..2.0", None),
            ("10.0.2.0 ", None),
            ("08.0.0.0", None),
            ("a.b.c.d", None),
        ];
        for (s, want) in cases {
            assert_eq!(inet_aton(s), want.map(Ipv4Addr::from), "inet_aton({s:?})");
        }
    }

    #[test]
    fn netmasks() {
        assert_eq!(parse_netmask("16"), Ok(16));
        assert_eq!(parse_netmask("255.255.0.0"), Ok(16));
        assert_eq!(parse_netmask("0"), Ok(0));
        assert_eq!(parse_netmask("255.255.255.255"), Ok(32));
        assert!(parse_netmask("33").is_err());
        assert!(parse_netmask("255.0.255.0").is_err());
        assert!(parse_netmask("x").is_err());
        assert_eq!(mask_to_prefix(0), Some(0));
        assert_eq!(mask_to_prefix(0xffff_fff0), Some(28));
        assert_eq!(mask_to_prefix(0xff00_ff00), None);
    }

    #[test]
    fn classful_masks_as_qemu_computes_them() {
        let cases = [
            ("10.0.2.0", 8),
            ("127.0.0.1", 8),
            ("172.16.5.0", 12),
            ("172.32.0.0", 16),
            ("169.254.0.0", 16),
            ("191.1.0.0", 16),
            ("192.168.7.0", 16),
            ("198.18.0.0", 15),
            ("192.0.2.0", 28),
            ("223.1.1.0", 28),
            ("224.0.0.0", 24),
            ("240.0.0.0", 24),
        ];
        for (a, want) in cases {
            assert_eq!(classful_qemu(a.parse().unwrap()), want, "{a}");
        }
        assert_eq!(classful_passt("192.0.2.1".parse().unwrap()), Some(24));
        assert_eq!(classful_passt("224.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn domains() {
        assert!(valid_domain("example.com"));
        assert!(valid_domain("example.com."));
        assert!(!valid_domain(""));
        assert!(!valid_domain("a..b"));
        assert!(!valid_domain(&"x".repeat(64)));
        assert!(!valid_domain("bad name"));
    }
}
