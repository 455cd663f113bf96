//! The virtio-net header that precedes every frame on the rings.
//!
//! Its length depends on what the driver acked: 12 bytes with `VERSION_1` or `MRG_RXBUF`
//! (the `num_buffers` field exists), 10 bytes for a legacy driver without mergeable buffers.

use netcore::link::{RxCsum, RxMeta};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;

/// Header length for the acked feature bits.
pub fn header_len(acked_features: u64) -> usize {
    if acked_features & (1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF) != 0 {
        12
    } else {
        10
    }
}

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;

/// The header of a frame toward the guest: its checksum state and segmentation from `meta`,
/// and `num_buffers` (present only in 12-byte headers) giving how many chains it spans.
pub fn rx_header(header_len: usize, num_buffers: u16, meta: &RxMeta) -> [u8; 12] {
    let mut hdr = [0u8; 12];
    match meta.csum {
        RxCsum::Complete => {}
        RxCsum::Valid => hdr[0] = F_DATA_VALID,
        RxCsum::Partial { start, offset } => {
            hdr[0] = F_NEEDS_CSUM;
            hdr[6..8].copy_from_slice(&start.to_le_bytes());
            hdr[8..10].copy_from_slice(&offset.to_le_bytes());
        }
    }
    if let Some(gso) = meta.gso {
        hdr[1] = if gso.ipv6 { GSO_TCPV6 } else { GSO_TCPV4 };
        hdr[2..4].copy_from_slice(&gso.header_len.to_le_bytes());
        hdr[4..6].copy_from_slice(&gso.segment_size.to_le_bytes());
    }
    if header_len >= 12 {
        hdr[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    }
    hdr
}

/// The transport checksum a guest frame asks us to complete, from its header: `(start,
/// offset)` from the Ethernet header, if `NEEDS_CSUM` is set.
pub fn tx_partial_csum(header: &[u8]) -> Option<(usize, usize)> {
    let flags = *header.first()?;
    if flags & F_NEEDS_CSUM == 0 || header.len() < 10 {
        return None;
    }
    let start = u16::from_le_bytes([header[6], header[7]]);
    let offset = u16::from_le_bytes([header[8], header[9]]);
    Some((usize::from(start), usize::from(offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_follows_features() {
        assert_eq!(header_len(0), 10);
        assert_eq!(header_len(1 << VIRTIO_F_VERSION_1), 12);
        assert_eq!(header_len(1 << VIRTIO_NET_F_MRG_RXBUF), 12);
    }

    #[test]
    fn num_buffers_is_little_endian_at_offset_10() {
        let hdr = rx_header(12, 0x0203, &RxMeta::default());
        assert_eq!(&hdr[10..12], &[0x03, 0x02]);
        assert_eq!(rx_header(10, 5, &RxMeta::default()), [0; 12]);
    }

    #[test]
    fn offload_fields_follow_the_virtio_layout() {
        let meta = RxMeta {
            csum: RxCsum::Partial {
                start: 34,
                offset: 16,
            },
            gso: Some(netcore::link::Gso {
                ipv6: false,
                segment_size: 1460,
                header_len: 54,
            }),
        };
        let hdr = rx_header(12, 1, &meta);
        assert_eq!(hdr, [1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0, 1, 0]);
        let valid = RxMeta {
            csum: RxCsum::Valid,
            gso: None,
        };
        assert_eq!(rx_header(12, 1, &valid)[0], 2);
        assert_eq!(tx_partial_csum(&hdr), Some((34, 16)));
        assert_eq!(tx_partial_csum(&[0; 12]), None);
    }
}
