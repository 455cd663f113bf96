//! What the engine counted.

/// What happened to guest frames, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Frames received from the guest.
    pub tx_frames: u64,
    /// Frames sent to the guest.
    pub rx_frames: u64,
    /// Guest frames dropped because they were malformed (bad length, header or checksum).
    pub tx_malformed: u64,
    /// Well-formed guest frames that nothing here serves.
    pub tx_unhandled: u64,
    /// Frames for the guest dropped because too many were waiting for buffers.
    pub rx_dropped: u64,
    pub arp_replies: u64,
    pub dhcp_replies: u64,
    pub icmp_replies: u64,
    /// ICMP destination-unreachable errors we sent for guest packets.
    pub unreachables: u64,
    /// Guest packets to the host's own addresses (loopback, "this host", v4-mapped), dropped
    /// whatever the mapping, as passt drops them: only the gateway may lead to loopback.
    pub tx_host_internal: u64,
    /// Connections to forwarded ports that could not be accepted.
    pub accept_failures: u64,
    /// Times a forwarded port was left unwatched for a while: out of descriptors or memory.
    pub forwards_paused: u64,
}
