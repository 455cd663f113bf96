//! ICMP echo to the emulated hosts. (Stub: filled in with the protocol work.)

use policy::NetPlan;

use crate::engine::Verdict;

/// Answers an echo request to the gateway or DNS address; the answer frame goes into `out`.
pub fn handle(_plan: &NetPlan, _frame: &[u8], _out: &mut Vec<u8>) -> Verdict {
    Verdict::Unhandled
}
