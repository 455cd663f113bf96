//! DHCPv4 as slirp serves it. (Stub: filled in with the protocol work.)

use policy::NetPlan;

use crate::engine::Verdict;

/// Whether `frame` (Ethernet onwards) is a UDP datagram to the DHCP server port.
pub fn is_dhcp_request(_frame: &[u8]) -> bool {
    false
}

/// The DHCP server: leases keyed by client MAC.
#[derive(Debug)]
pub struct Server {}

impl Server {
    pub fn new(_plan: &NetPlan) -> Self {
        Server {}
    }

    /// Answers a DHCP message; the answer frame goes into `out`.
    pub fn handle(&mut self, _plan: &NetPlan, _frame: &[u8], _out: &mut Vec<u8>) -> Verdict {
        Verdict::Unhandled
    }
}
