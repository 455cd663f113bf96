//! Reading a fuzz input as a stream of small decisions, and building the frames they describe.
//!
//! Past the end of the input every read gives zeros (or nothing), so any byte string is a
//! complete scenario and libFuzzer's mutations of one field do not shift the ones before it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A fuzz input, consumed from the front.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length-prefixed (one byte, or two if the first is 255) run of bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = match self.u8() {
            255 => usize::from(self.u16()),
            n => usize::from(n),
        };
        self.bytes(n)
    }

    /// One of `items`, chosen by the next byte.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }
}

/// The Internet checksum's running sum over `data`, added to `sum` (kept below 2^17, so that
/// sums can be added up; frames here are at most 64 KiB).
pub fn sum_bytes(data: &[u8], sum: u32) -> u32 {
    // 32 bytes a round: the fuzzers build frames of up to 64 KiB and sum them often, with
    // every loop test instrumented.
    let mut acc = u64::from(sum);
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        let mut words = [0u64; 4];
        for (w, q) in words.iter_mut().zip(b.chunks_exact(8)) {
            let x = u64::from_be_bytes([q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]]);
            *w = (x >> 48) + (x >> 32 & 0xffff) + (x >> 16 & 0xffff) + (x & 0xffff);
        }
        acc += words[0] + words[1] + words[2] + words[3];
    }
    let mut pairs = blocks.remainder().chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// Folds a running sum into the 16-bit one's complement checksum.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum of a transport packet of `len` bytes between `src` and `dst`.
pub fn pseudo_sum(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u32 {
    let mut sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum_bytes(&d.octets(), sum_bytes(&s.octets(), 0)),
        (s, d) => {
            let s6 = match s {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let d6 = match d {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            sum_bytes(&d6.octets(), sum_bytes(&s6.octets(), 0))
        }
    };
    sum += u32::from(protocol);
    sum += (len as u32) & 0xffff;
    sum += (len as u32) >> 16;
    sum
}

pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
pub const GUEST_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
pub const GUEST_IP6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2);
pub const DNS6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3);

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Where the transport checksum lies in a transport header of `protocol`.
pub fn checksum_offset(protocol: u8) -> Option<usize> {
    match protocol {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        PROTO_ICMP | PROTO_ICMPV6 => Some(2),
        _ => None,
    }
}

/// A frame from the guest carrying `l4` from `src` to `dst` (one family for both: IPv4, the
/// transport header at 34, or IPv6, at 54), with TTL or hop limit `ttl` and, when `fix` is
/// set, the transport checksum computed (ICMPv4's over its own bytes).
pub fn ip_frame(src: IpAddr, dst: IpAddr, protocol: u8, ttl: u8, l4: &[u8], fix: bool) -> Vec<u8> {
    let mut frame = Vec::with_capacity(54 + l4.len());
    frame.extend_from_slice(&[0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
    frame.extend_from_slice(&GUEST_MAC);
    let l4_at = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + l4.len()).min(0xffff) as u16;
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[6] = 0x40; // don't fragment
            h[8] = ttl;
            h[9] = protocol;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let sum = fold(sum_bytes(&h, 0));
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&h);
            34
        }
        _ => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&(l4.len().min(0xffff) as u16).to_be_bytes());
            frame.extend_from_slice(&[protocol, ttl]);
            frame.extend_from_slice(&v6(src).octets());
            frame.extend_from_slice(&v6(dst).octets());
            54
        }
    };
    frame.extend_from_slice(l4);
    if fix {
        fix_transport_checksum(&mut frame, l4_at, src, dst, protocol);
    }
    frame
}

/// Recomputes the transport checksum of the packet at `l4_at` in `frame`.
pub fn fix_transport_checksum(
    frame: &mut [u8],
    l4_at: usize,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
) {
    let Some(at) = checksum_offset(protocol) else {
        return;
    };
    let len = frame.len().saturating_sub(l4_at);
    if len < at + 2 {
        return;
    }
    frame[l4_at + at..l4_at + at + 2].fill(0);
    let start = if protocol == PROTO_ICMP {
        0
    } else {
        pseudo_sum(src, dst, protocol, len)
    };
    let mut sum = fold(sum_bytes(&frame[l4_at..], start));
    if protocol == PROTO_UDP && sum == 0 {
        sum = 0xffff;
    }
    frame[l4_at + at..l4_at + at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// A UDP datagram (checksum zero, for [`ip_frame`] to fill in).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()).min(0xffff) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_is_the_internet_checksum() {
        // RFC 1071's example, and lengths around the 32-byte rounds.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(&data, 0)), !0xddf2);
        for len in [0, 1, 31, 32, 33, 65, 1000, 65535] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut plain = 0u64;
            for (i, b) in data.iter().enumerate() {
                plain += u64::from(*b) << if i % 2 == 0 { 8 } else { 0 };
            }
            while plain > 0xffff {
                plain = (plain & 0xffff) + (plain >> 16);
            }
            assert_eq!(fold(sum_bytes(&data, 0)), !(plain as u16), "{len} bytes");
        }
    }
}
