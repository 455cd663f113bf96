//! The virtio-net header that precedes every frame on the rings.
//!
//! Its length depends on what the driver acked: 12 bytes with `VERSION_1` or `MRG_RXBUF`
//! (the `num_buffers` field exists), 10 bytes for a legacy driver without mergeable buffers.

use netcore::link::{RxCsum, RxMeta};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, virtio_net_hdr_v1,
    virtio_net_hdr_v1__bindgen_ty_1, virtio_net_hdr_v1__bindgen_ty_1__bindgen_ty_2,
};

use crate::sys;

/// The full header (`VERSION_1` or `MRG_RXBUF`), `num_buffers` included.
pub const MAX_HEADER_LEN: usize = std::mem::size_of::<virtio_net_hdr_v1>();
/// The legacy header without mergeable buffers: all but `num_buffers`.
const LEGACY_HEADER_LEN: usize = std::mem::offset_of!(virtio_net_hdr_v1, num_buffers);

/// Header length for the acked feature bits.
pub fn header_len(acked_features: u64) -> usize {
    if acked_features & (1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF) != 0 {
        MAX_HEADER_LEN
    } else {
        LEGACY_HEADER_LEN
    }
}

/// The header of a frame toward the guest: its checksum state and segmentation from `meta`,
/// and `num_buffers` (present only in full-length headers) giving how many chains it spans.
/// The first `header_len` bytes of the result go on the ring.
pub fn rx_header(header_len: usize, num_buffers: u16, meta: &RxMeta) -> [u8; MAX_HEADER_LEN] {
    let (flags, start, offset) = match meta.csum {
        RxCsum::Complete => (0, 0, 0),
        RxCsum::Valid => (VIRTIO_NET_HDR_F_DATA_VALID, 0, 0),
        RxCsum::Partial { start, offset } => (VIRTIO_NET_HDR_F_NEEDS_CSUM, start, offset),
    };
    let (gso_type, hdr_len, gso_size) = match meta.gso {
        Some(gso) if gso.ipv6 => (VIRTIO_NET_HDR_GSO_TCPV6, gso.header_len, gso.segment_size),
        Some(gso) => (VIRTIO_NET_HDR_GSO_TCPV4, gso.header_len, gso.segment_size),
        None => (VIRTIO_NET_HDR_GSO_NONE, 0, 0),
    };
    let hdr = virtio_net_hdr_v1 {
        flags: flags as u8,
        gso_type: gso_type as u8,
        hdr_len: hdr_len.to_le(),
        gso_size: gso_size.to_le(),
        __bindgen_anon_1: virtio_net_hdr_v1__bindgen_ty_1 {
            csum: virtio_net_hdr_v1__bindgen_ty_1__bindgen_ty_2 {
                start: start.to_le(),
                offset: offset.to_le(),
            },
        },
        // A legacy header ends before this field.
        num_buffers: if header_len >= MAX_HEADER_LEN {
            num_buffers.to_le()
        } else {
            0
        },
    };
    sys::vnet_header_bytes(&hdr)
}

/// The transport checksum a guest frame asks us to complete, from its header: `(start,
/// offset)` from the Ethernet header, if `NEEDS_CSUM` is set.
pub fn tx_partial_csum(header: &[u8]) -> Option<(usize, usize)> {
    if header.len() < LEGACY_HEADER_LEN {
        return None;
    }
    let mut bytes = [0u8; MAX_HEADER_LEN];
    bytes[..header.len().min(MAX_HEADER_LEN)]
        .copy_from_slice(&header[..header.len().min(MAX_HEADER_LEN)]);
    let hdr = sys::vnet_header_from_bytes(bytes);
    if u32::from(hdr.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
        return None;
    }
    let (start, offset) = sys::vnet_header_csum(&hdr);
    Some((
        usize::from(u16::from_le(start)),
        usize::from(u16::from_le(offset)),
    ))
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
