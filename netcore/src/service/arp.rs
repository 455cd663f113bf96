//! ARP, as slirp answers it.
//!
//! # Theory of operation
//!
//! The emulated hosts that answer ARP are the gateway, the DNS address and the address of
//! every guest forward (`guestfwd=`), as slirp's `arp_input` answers for its `exec_list`.
//! A request is answered only when its target is one of them *and* lies inside the subnet, so
//! a DNS address placed outside the subnet is reached through the gateway, as in slirp. DHCP
//! pool addresses, other subnet addresses and off-subnet targets get no answer: the guest must
//! never believe another host shares its link.
//!
//! The answer comes from 52:55 followed by the target's IPv4 bytes, except that the gateway
//! answers with `plan.gateway_mac` (the derivation by default; a policy may choose another, and
//! the gateway's ARP answer must match the source MAC of every IPv4 frame we send). It goes to
//! the Ethernet source of the request and is zero-padded to the 60-byte Ethernet minimum.
//!
//! Gratuitous requests (target = sender) and replies only teach slirp the guest's MAC; the
//! engine already learns that from every frame, so here they are consumed without an answer.
//! The engine parses the ARP packet (malformed when smoltcp's checked view refuses it, not
//! served when it is not Ethernet/IPv4) and hands [`handle`] its representation. Nothing in
//! this module keeps state.

use std::net::Ipv4Addr;

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};

use super::Verdict;
use crate::wire::ethernet;

/// Length of our ARP reply frames: the Ethernet minimum, zero-padded.
///
/// slirp's `arp_input` sends 64 bytes (a 64-byte stack buffer); 60 is what every Ethernet
/// receiver accepts, and the 4 extra bytes carry nothing.
pub const REPLY_FRAME_LEN: usize = ethernet::MIN_FRAME_LEN;

/// Answers an ARP request for an emulated host, sent in a frame from `eth_src`; the answer
/// frame goes into `out`.
pub fn handle(plan: &NetPlan, eth_src: MacAddr, arp: ArpRepr, out: &mut Vec<u8>) -> Verdict {
    let Some(v4) = &plan.ipv4 else {
        return Verdict::Unhandled;
    };
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = arp
    else {
        return Verdict::Unhandled;
    };

    match operation {
        ArpOperation::Request => {}
        // slirp learns the sender from replies; the engine learned it from the frame already.
        ArpOperation::Reply => return Verdict::Consumed,
        _ => return Verdict::Unhandled,
    }
    if target_protocol_addr == source_protocol_addr {
        // Gratuitous: an announcement, never answered.
        return Verdict::Consumed;
    }
    let Some(mac) = answering_mac(plan, v4, target_protocol_addr) else {
        return Verdict::Unhandled;
    };

    out.clear();
    out.resize(REPLY_FRAME_LEN, 0);
    ethernet::write_header(out, eth_src, mac, ethernet::ETHERTYPE_ARP);
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(mac.0),
        source_protocol_addr: target_protocol_addr,
        target_hardware_addr: source_hardware_addr,
        target_protocol_addr: source_protocol_addr,
    };
    let end = ethernet::HEADER_LEN + reply.buffer_len();
    reply.emit(&mut ArpPacket::new_unchecked(
        &mut out[ethernet::HEADER_LEN..end],
    ));
    Verdict::Reply
}

/// The MAC that answers for `target`, if an emulated host lives there.
fn answering_mac(plan: &NetPlan, v4: &netplan::Ipv4Plan, target: Ipv4Addr) -> Option<MacAddr> {
    if !v4.contains(target) {
        return None;
    }
    if target == v4.gateway {
        Some(plan.gateway_mac)
    } else if target == v4.dns || plan.guest_forwards.iter().any(|f| f.addr == target) {
        Some(MacAddr::slirp_for_ipv4(target))
    } else {
        None
    }
}
