//! The virtio-net header that precedes every frame on the rings.
//!
//! Its length depends on what the driver acked: 12 bytes with `VERSION_1` or `MRG_RXBUF`
//! (the `num_buffers` field exists), 10 bytes for a legacy driver without mergeable buffers.

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

/// The header of a frame toward the guest: no checksum or segmentation offload yet, and
/// `num_buffers` (present only in 12-byte headers) giving how many chains the frame spans.
pub fn rx_header(header_len: usize, num_buffers: u16) -> [u8; 12] {
    let mut hdr = [0u8; 12];
    if header_len >= 12 {
        hdr[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    }
    hdr
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
        let hdr = rx_header(12, 0x0203);
        assert_eq!(&hdr[10..12], &[0x03, 0x02]);
        assert_eq!(rx_header(10, 5), [0; 12]);
    }
}
