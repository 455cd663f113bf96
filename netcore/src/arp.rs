//! ARP, as slirp answers it. (Stub: filled in with the protocol work.)

use policy::NetPlan;

use crate::engine::Verdict;

/// Answers an ARP request for an emulated host; the answer frame goes into `out`.
pub fn handle(_plan: &NetPlan, _frame: &[u8], _out: &mut Vec<u8>) -> Verdict {
    Verdict::Unhandled
}
