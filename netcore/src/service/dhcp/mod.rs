//! DHCPv4 as slirp serves it (`bootp.c`).
//!
//! # Theory of operation
//!
//! The server answers BOOTREQUESTs sent to UDP port 67 of the gateway address or of
//! 255.255.255.255 (not the subnet broadcast). Only DISCOVER and REQUEST are answered; a
//! message without a type option is plain BOOTP and is treated as a REQUEST, answered with a
//! DHCPACK carrying options. RELEASE, DECLINE and INFORM are consumed silently.
//!
//! Leases: `plan.dhcp.pool_size` slots, slot `i` holding `dhcp_start + i`, each recording the
//! client MAC (`chaddr`) that took it. A client gets the lowest slot that is free or already
//! its own; slots are never freed and never expire, and a client that finds none is ignored.
//! DISCOVER honours a requested address (option 50) that is in the pool and free or own.
//! REQUEST takes option 50, else `ciaddr`: in the pool and free or own → ACK, anything else →
//! NAK; with neither it gets the slot holding its MAC, or a new one. The server identifier a
//! client sends is never checked. These are slirp's rules, quirks included.
//!
//! Every answer goes from gateway:67 to 255.255.255.255:68 as an Ethernet broadcast from
//! `plan.gateway_mac`, IPv4 TOS 0x10 and TTL 64, and is always 548 bytes of BOOTP: the options
//! area is zero-padded to 312 bytes. Options come in slirp's order: 53, 54, 1, 3 and 6 (not
//! when restricted), 51, then 26 when the plan asks for an MTU (slirp never sends one), 12,
//! 15, 66, 119 and 60, each of the last ones only when configured and only if it still fits,
//! and 255. A NAK carries only 53 and 56, and its `yiaddr` is 255.255.255.255 (slirp's quirk).
//!
//! The engine hands [`Server::handle`] the datagram already checked as slirp's `udp_input`
//! checks it (see [`crate::wire::udp`]); the BOOTP fixed part is read through smoltcp's
//! `DhcpPacket`. The answer's options are written by hand (`Options`): smoltcp's `DhcpRepr`
//! emits its own choice and order of options, and a guest must get slirp's bytes.
//!
//! The only state is the slot table; each slot is written only on an OFFER or ACK.
//!
//! The lease table and the choice of answer are here; the BOOTP message, read and written
//! with slirp's bytes, is in `message.rs`.

mod message;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::DhcpPacket;

use super::Verdict;
use crate::wire::dnssearch;
use crate::wire::ipv4::Ident;
use crate::wire::udp;
use message::{
    ACK, BOOTP_FIXED_LEN, BOOTREQUEST, DECLINE, DISCOVER, INFORM, NAK, OFFER, OPT_DNS,
    OPT_DOMAIN_NAME, OPT_HOSTNAME, OPT_LEASE_TIME, OPT_MESSAGE, OPT_MSG_TYPE, OPT_MTU, OPT_NETMASK,
    OPT_ROUTER, OPT_SERVER_ID, OPT_TFTP_SERVER_NAME, OPT_VENDOR_CLASS, Options, RELEASE, REQUEST,
    build_reply, decode,
};

pub use message::{REPLY_BOOTP_LEN, REPLY_FRAME_LEN};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const NAK_MESSAGE: &[u8] = b"requested address not available";
const HTTP_CLIENT: &[u8] = b"HTTPClient";

/// Whether a guest UDP datagram to `dst`:`dst_port` is for the DHCP server: port 67 of the
/// gateway or of the limited broadcast, the messages [`Server::handle`] owns (checksums are
/// checked there). Decided from the headers alone, so that the engine can drop the request
/// unread when DHCP is switched off.
pub fn is_request(plan: &NetPlan, dst: IpAddr, dst_port: u16) -> bool {
    let Some(v4) = &plan.ipv4 else {
        return false;
    };
    dst_port == SERVER_PORT
        && matches!(dst, IpAddr::V4(a) if a == v4.gateway || a == Ipv4Addr::BROADCAST)
}

/// The DHCP server: leases keyed by client MAC.
#[derive(Debug)]
pub struct Server {
    /// Slot `i` is `dhcp_start + i`; `Some(mac)` once handed to that client.
    slots: Vec<Option<MacAddr>>,
    /// Option 119 chunks, encoded once.
    search: Option<Vec<u8>>,
}

impl Server {
    pub fn new(plan: &NetPlan) -> Self {
        Server {
            slots: vec![None; usize::from(plan.dhcp.pool_size)],
            search: dnssearch::encode_option(&plan.dhcp.search),
        }
    }

    /// The client holding each pool slot, lowest address first (for logs and tests).
    pub fn leases(&self) -> &[Option<MacAddr>] {
        &self.slots
    }

    /// Answers a DHCP message, the checked datagram `request` the guest sent to `dst`; the
    /// answer frame goes into `out`. `ident` numbers the IPv4 packet of the answer.
    pub fn handle(
        &mut self,
        plan: &NetPlan,
        ident: &mut Ident,
        dst: Ipv4Addr,
        request: &udp::Datagram<'_>,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let Some(v4) = &plan.ipv4 else {
            return Verdict::Unhandled;
        };
        if request.dst_port != SERVER_PORT || (dst != v4.gateway && dst != Ipv4Addr::BROADCAST) {
            return Verdict::Unhandled;
        }
        let bootp = request.payload;
        if bootp.len() < BOOTP_FIXED_LEN {
            return Verdict::Malformed;
        }
        if bootp.first() != Some(&BOOTREQUEST) {
            return Verdict::Unhandled;
        }
        // smoltcp's view wants the cookie too; a message without one has no options.
        let mut short = [0u8; BOOTP_FIXED_LEN + 4];
        let view = if bootp.len() < short.len() {
            short[..bootp.len()].copy_from_slice(bootp);
            &short[..]
        } else {
            bootp
        };
        let Ok(msg) = DhcpPacket::new_checked(view) else {
            return Verdict::Malformed;
        };
        let decoded = decode(&msg);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&msg.client_hardware_address().0);
        let client = MacAddr(chaddr);

        let msg_type = match decoded.msg_type {
            // Plain BOOTP: answered as a REQUEST (slirp: "Force reply for old BOOTP clients").
            0 => REQUEST,
            DISCOVER => DISCOVER,
            REQUEST => REQUEST,
            DECLINE | RELEASE | INFORM => return Verdict::Consumed,
            _ => return Verdict::Unhandled,
        };
        let requested = (!decoded.requested.is_unspecified()).then_some(decoded.requested);
        let answer = match (msg_type, requested) {
            (DISCOVER, req) => {
                let slot = req
                    .and_then(|a| self.request_slot(v4.dhcp_start, a, client))
                    .or_else(|| self.new_slot(client));
                match slot {
                    Some(i) => Answer::Lease(OFFER, i),
                    None => return self.pool_full(client),
                }
            }
            (_, Some(addr)) => match self.request_slot(v4.dhcp_start, addr, client) {
                Some(i) => Answer::Lease(ACK, i),
                None => Answer::Nak,
            },
            (_, None) => match self.find_slot(client).or_else(|| self.new_slot(client)) {
                Some(i) => Answer::Lease(ACK, i),
                None => return self.pool_full(client),
            },
        };
        let yiaddr = match answer {
            Answer::Lease(_, i) => {
                if let Some(slot) = self.slots.get_mut(i) {
                    *slot = Some(client);
                }
                slot_addr(v4.dhcp_start, i)
            }
            Answer::Nak => Ipv4Addr::BROADCAST,
        };

        let mut options = Options::new();
        match answer {
            Answer::Lease(kind, _) => self.lease_options(plan, v4, kind, &mut options),
            Answer::Nak => {
                options.put(OPT_MSG_TYPE, &[NAK]);
                options.put(OPT_MESSAGE, NAK_MESSAGE);
            }
        }
        options.end();
        let bootfile = match answer {
            Answer::Lease(..) => plan.dhcp.bootfile.as_deref(),
            Answer::Nak => None,
        };
        build_reply(
            plan,
            v4.gateway,
            ident,
            &msg,
            yiaddr,
            bootfile,
            &options.buf,
            out,
        );
        Verdict::Reply
    }

    /// slirp's `request_addr`: the slot of `addr` if it is in the pool and free or `client`'s.
    fn request_slot(&self, start: Ipv4Addr, addr: Ipv4Addr, client: MacAddr) -> Option<usize> {
        let i = usize::try_from(u32::from(addr).checked_sub(u32::from(start))?).ok()?;
        match self.slots.get(i)? {
            None => Some(i),
            Some(mac) if *mac == client => Some(i),
            Some(_) => None,
        }
    }

    /// slirp's `get_new_addr`: the lowest slot that is free or already `client`'s.
    fn new_slot(&self, client: MacAddr) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_none() || *s == Some(client))
    }

    /// slirp's `find_addr`: the lowest slot `client` holds.
    fn find_slot(&self, client: MacAddr) -> Option<usize> {
        self.slots.iter().position(|s| *s == Some(client))
    }

    fn pool_full(&self, client: MacAddr) -> Verdict {
        log::debug!("dhcp: no address left for {client}");
        Verdict::Consumed
    }

    /// The options of an OFFER or ACK, in slirp's order.
    fn lease_options(&self, plan: &NetPlan, v4: &netplan::Ipv4Plan, kind: u8, o: &mut Options) {
        o.put(OPT_MSG_TYPE, &[kind]);
        o.put(OPT_SERVER_ID, &v4.gateway.octets());
        o.put(OPT_NETMASK, &v4.netmask().octets());
        if !plan.restrict {
            o.put(OPT_ROUTER, &v4.gateway.octets());
            o.put(OPT_DNS, &v4.dns.octets());
        }
        o.put(OPT_LEASE_TIME, &plan.dhcp.lease_secs.to_be_bytes());
        if let Some(mtu) = plan.dhcp.mtu_option {
            o.put(OPT_MTU, &mtu.to_be_bytes());
        }
        // slirp omits each of these, with a warning, when it would not fit.
        for (code, value) in [
            (OPT_HOSTNAME, &plan.dhcp.hostname),
            (OPT_DOMAIN_NAME, &plan.dhcp.domain_name),
            (OPT_TFTP_SERVER_NAME, &plan.dhcp.tftp_server_name),
        ] {
            if let Some(v) = value
                && !o.put(code, v.as_bytes())
            {
                crate::ratelimit::guest_log!(
                    log::Level::Warn,
                    "dhcp: option {code} does not fit, omitted"
                );
            }
        }
        if let Some(search) = &self.search
            && !o.put_raw(search)
        {
            crate::ratelimit::guest_log!(
                log::Level::Warn,
                "dhcp: domain search list does not fit, omitted"
            );
        }
        // UEFI HTTP boot wants the vendor class "HTTPClient" when the boot file is a URL.
        if let Some(file) = &plan.dhcp.bootfile
            && (file.starts_with("http://") || file.starts_with("https://"))
            && !o.put(OPT_VENDOR_CLASS, HTTP_CLIENT)
        {
            crate::ratelimit::guest_log!(
                log::Level::Warn,
                "dhcp: vendor class option does not fit, omitted"
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    /// OFFER or ACK of the address of a slot.
    Lease(u8, usize),
    Nak,
}

fn slot_addr(start: Ipv4Addr, slot: usize) -> Ipv4Addr {
    let slot = u32::try_from(slot).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(start).wrapping_add(slot))
}
