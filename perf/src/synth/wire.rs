//! Frames as the synthetic guest writes and reads them: Ethernet + IPv4 + TCP headers, the
//! virtio-net header, Internet checksums. No DHCP or ARP: the guest uses slirp's addresses
//! (10.0.2.15, gateway 10.0.2.2 at 52:55:0a:00:02:02) directly.

/// The synthetic guest's MAC (the backend learns it from the first frame).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The gateway's MAC in slirp's default network.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
pub const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
/// The gateway: the backend maps it to the host's 127.0.0.1.
pub const GATEWAY_IP: [u8; 4] = [10, 0, 2, 2];

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;
pub const TCP_LEN: usize = 20;
/// Ethernet, IPv4 and TCP headers without options.
pub const HEADERS_LEN: usize = ETH_LEN + IP_LEN + TCP_LEN;
/// The virtio-net header with `num_buffers` (VERSION_1 or MRG_RXBUF).
pub const VNET_LEN: usize = 12;
/// TCP payload of a full-sized segment at MTU 1500.
pub const MSS: u16 = 1460;
/// The largest TCP payload of one IPv4 packet (16-bit total length).
pub const MAX_IP_PAYLOAD: usize = 65535 - IP_LEN - TCP_LEN;

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_F_DATA_VALID: u8 = 2;
pub const VNET_GSO_NONE: u8 = 0;
pub const VNET_GSO_TCPV4: u8 = 1;

/// The one's complement sum of `data` as big-endian 16-bit words, added to `sum` (not folded:
/// sums of pieces that start at even offsets add up).
///
/// Summed as native 32-bit words into 64 bits, which the compiler vectorizes, as a guest
/// kernel's checksum is: the driver's verification should not be what limits a backend
/// (RFC 1071, 2.(B): the byte order only swaps the folded result).
pub fn sum16(data: &[u8], sum: u64) -> u64 {
    let (words, rest) = data.as_chunks::<4>();
    let mut native: u64 = words
        .iter()
        .map(|w| u64::from(u32::from_ne_bytes(*w)))
        .sum();
    let mut last = [0u8; 4];
    last[..rest.len()].copy_from_slice(rest);
    native += u64::from(u32::from_ne_bytes(last));
    sum + u64::from(u16::from_be(fold(native)))
}

/// Folds a sum to 16 bits (without inverting).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 pseudo-header sum for a TCP segment of `tcp_len` bytes.
pub fn pseudo_sum(src: [u8; 4], dst: [u8; 4], tcp_len: usize) -> u64 {
    let sum = sum16(&src, 0);
    let sum = sum16(&dst, sum);
    sum + 6 + tcp_len as u64
}

/// The TCP fields of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// How the TCP checksum of a guest segment is filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCsum {
    /// Complete, given the payload's sum (from [`sum16`] over the payload).
    Full { payload_sum: u64 },
    /// The pseudo-header sum only: the device completes it (virtio `NEEDS_CSUM`).
    Partial,
}

/// Writes the Ethernet, IPv4 and TCP headers of a guest segment (with `options`, a multiple
/// of 4 bytes) carrying `payload_len` bytes into `out`; returns the headers' length.
pub fn write_guest_headers(
    out: &mut [u8],
    ip_id: u16,
    tcp: &Tcp,
    options: &[u8],
    payload_len: usize,
    csum: TxCsum,
) -> usize {
    let tcp_len = TCP_LEN + options.len();
    let len = ETH_LEN + IP_LEN + tcp_len;
    let out = &mut out[..len];
    out[0..6].copy_from_slice(&GATEWAY_MAC);
    out[6..12].copy_from_slice(&GUEST_MAC);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut out[ETH_LEN..ETH_LEN + IP_LEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&((IP_LEN + tcp_len + payload_len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&[0x40, 0]); // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&GUEST_IP);
    ip[16..20].copy_from_slice(&GATEWAY_IP);
    let ip_sum = !fold(sum16(ip, 0));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = &mut out[ETH_LEN + IP_LEN..];
    t[0..2].copy_from_slice(&tcp.src_port.to_be_bytes());
    t[2..4].copy_from_slice(&tcp.dst_port.to_be_bytes());
    t[4..8].copy_from_slice(&tcp.seq.to_be_bytes());
    t[8..12].copy_from_slice(&tcp.ack.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = tcp.flags;
    t[14..16].copy_from_slice(&tcp.window.to_be_bytes());
    t[16..20].copy_from_slice(&[0, 0, 0, 0]);
    t[20..].copy_from_slice(options);
    let pseudo = pseudo_sum(GUEST_IP, GATEWAY_IP, tcp_len + payload_len);
    let sum = match csum {
        TxCsum::Partial => fold(pseudo),
        TxCsum::Full { payload_sum } => !fold(sum16(t, pseudo) + payload_sum),
    };
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    len
}

/// SYN options: MSS, NOP, window scale (8 bytes).
pub fn syn_options(mss: u16, wscale: u8) -> [u8; 8] {
    let m = mss.to_be_bytes();
    [2, 4, m[0], m[1], 1, 3, 3, wscale]
}

/// A virtio-net header for a frame from the guest.
pub fn tx_vnet_header(csum: TxCsum, gso_size: Option<u16>, headers_len: usize) -> [u8; VNET_LEN] {
    let mut h = [0u8; VNET_LEN];
    if csum == TxCsum::Partial {
        h[0] = VNET_F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&((ETH_LEN + IP_LEN) as u16).to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
    }
    if let Some(size) = gso_size {
        h[1] = VNET_GSO_TCPV4;
        h[2..4].copy_from_slice(&(headers_len as u16).to_le_bytes());
        h[4..6].copy_from_slice(&size.to_le_bytes());
    }
    h
}

/// The virtio-net header of a frame toward the guest, as far as the driver cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxVnet {
    pub needs_csum: bool,
    pub data_valid: bool,
    pub gso_type: u8,
    pub gso_size: u16,
    pub num_buffers: u16,
}

pub fn parse_rx_vnet(h: &[u8; VNET_LEN]) -> RxVnet {
    RxVnet {
        needs_csum: h[0] & VNET_F_NEEDS_CSUM != 0,
        data_valid: h[0] & VNET_F_DATA_VALID != 0,
        gso_type: h[1],
        gso_size: u16::from_le_bytes([h[4], h[5]]),
        num_buffers: u16::from_le_bytes([h[10], h[11]]),
    }
}

/// A TCP segment toward the guest, parsed from the start of its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxSegment {
    pub tcp: Tcp,
    /// Where the payload starts in the frame (from the Ethernet header), and its length.
    pub payload_offset: usize,
    pub payload_len: usize,
    /// From a SYN's options.
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    /// Where the TCP header starts and how long the segment (header + payload) is, for
    /// checksums.
    pub tcp_offset: usize,
    pub tcp_len: usize,
}

/// Parses an IPv4 TCP frame from the gateway to the guest; `None` for anything else (router
/// advertisements, ARP, ...). `prefix` must hold all headers; `frame_len` is the whole frame.
pub fn parse_rx_segment(prefix: &[u8], frame_len: usize) -> Option<RxSegment> {
    if prefix.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = prefix.get(ETH_LEN..)?;
    if ip.len() < IP_LEN || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    if ip[12..16] != GATEWAY_IP || ip[16..20] != GUEST_IP {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < IP_LEN || total < ihl || ETH_LEN + total > frame_len {
        return None;
    }
    let t = ip.get(ihl..)?;
    if t.len() < TCP_LEN {
        return None;
    }
    let doff = usize::from(t[12] >> 4) * 4;
    if doff < TCP_LEN || ihl + doff > total || t.len() < doff {
        return None;
    }
    let tcp = Tcp {
        src_port: u16::from_be_bytes([t[0], t[1]]),
        dst_port: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13] & 0x3f,
        window: u16::from_be_bytes([t[14], t[15]]),
    };
    let (mut mss, mut wscale) = (None, None);
    if tcp.flags & tcp_flags::SYN != 0 {
        let mut opts = &t[TCP_LEN..doff];
        while let Some(&kind) = opts.first() {
            match kind {
                0 => break,
                1 => opts = &opts[1..],
                _ => {
                    let len = usize::from(*opts.get(1)?);
                    if len < 2 || len > opts.len() {
                        break;
                    }
                    match (kind, len) {
                        (2, 4) => mss = Some(u16::from_be_bytes([opts[2], opts[3]])),
                        (3, 3) => wscale = Some(opts[2]),
                        _ => {}
                    }
                    opts = &opts[len..];
                }
            }
        }
    }
    Some(RxSegment {
        tcp,
        payload_offset: ETH_LEN + ihl + doff,
        payload_len: total - ihl - doff,
        mss,
        wscale,
        tcp_offset: ETH_LEN + ihl,
        tcp_len: total - ihl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorized sum equals the sum of big-endian 16-bit words, the last odd byte padded.
    #[test]
    fn sum16_adds_big_endian_words() {
        let data: Vec<u8> = (0..3001u32).map(|i| (i * 251 + i / 3) as u8).collect();
        for len in [0, 1, 2, 3, 5, 8, 1499, 3000, 3001] {
            let reference: u64 = data[..len]
                .chunks(2)
                .map(|pair| u64::from(pair[0]) << 8 | pair.get(1).map_or(0, |&b| u64::from(b)))
                .sum();
            assert_eq!(
                fold(sum16(&data[..len], 7)),
                fold(reference + 7),
                "length {len}"
            );
        }
    }

    #[test]
    fn checksums_of_a_full_segment_verify() {
        let payload: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
        let tcp = Tcp {
            src_port: 40000,
            dst_port: 5201,
            seq: 1,
            ack: 2,
            flags: tcp_flags::ACK | tcp_flags::PSH,
            window: 512,
        };
        let mut frame = vec![0u8; 128];
        let n = write_guest_headers(
            &mut frame,
            7,
            &tcp,
            &[],
            payload.len(),
            TxCsum::Full {
                payload_sum: sum16(&payload, 0),
            },
        );
        frame.truncate(n);
        frame.extend_from_slice(&payload);
        assert_eq!(n, HEADERS_LEN);
        assert_eq!(!fold(sum16(&frame[ETH_LEN..ETH_LEN + IP_LEN], 0)), 0);
        let tcp_part = &frame[ETH_LEN + IP_LEN..];
        let pseudo = pseudo_sum(GUEST_IP, GATEWAY_IP, tcp_part.len());
        assert_eq!(!fold(sum16(tcp_part, pseudo)), 0, "TCP checksum verifies");
    }

    #[test]
    fn partial_checksum_is_the_pseudo_header_sum() {
        let tcp = Tcp::default();
        let mut frame = [0u8; 64];
        write_guest_headers(&mut frame, 0, &tcp, &[], 60000, TxCsum::Partial);
        let field = u16::from_be_bytes([frame[50], frame[51]]);
        assert_eq!(
            field,
            fold(pseudo_sum(GUEST_IP, GATEWAY_IP, TCP_LEN + 60000))
        );
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 40 + 60000);
        let h = tx_vnet_header(TxCsum::Partial, Some(MSS), HEADERS_LEN);
        assert_eq!(h, [1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0, 0, 0]);
        assert_eq!(
            tx_vnet_header(TxCsum::Full { payload_sum: 0 }, None, 54),
            [0; 12]
        );
    }

    #[test]
    fn parses_what_the_gateway_sends() {
        // A SYN-ACK from the gateway, built by swapping a guest SYN's addresses.
        let tcp = Tcp {
            src_port: 5201,
            dst_port: 40000,
            seq: 99,
            ack: 1,
            flags: tcp_flags::SYN | tcp_flags::ACK,
            window: 65535,
        };
        let mut frame = [0u8; 64];
        let n = write_guest_headers(
            &mut frame,
            0,
            &tcp,
            &syn_options(1460, 7),
            0,
            TxCsum::Partial,
        );
        let (src, dst) = (frame[26..30].to_vec(), frame[30..34].to_vec());
        frame[26..30].copy_from_slice(&dst);
        frame[30..34].copy_from_slice(&src);
        let seg = parse_rx_segment(&frame[..n], n).unwrap();
        assert_eq!(seg.tcp, tcp);
        assert_eq!(seg.mss, Some(1460));
        assert_eq!(seg.wscale, Some(7));
        assert_eq!(seg.payload_offset, n);
        assert_eq!(seg.payload_len, 0);
        // The guest's own frame is not one the gateway sends.
        frame[26..30].copy_from_slice(&src);
        frame[30..34].copy_from_slice(&dst);
        assert_eq!(parse_rx_segment(&frame[..n], n), None);
    }

    #[test]
    fn odd_sums_pad_with_zero() {
        assert_eq!(sum16(&[1, 2, 3], 0), 0x0102 + 0x0300);
        assert_eq!(fold(0x1_ffff), 1);
    }
}
