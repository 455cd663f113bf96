//! ICMP echo to real hosts through unprivileged ping sockets (`SOCK_DGRAM` with
//! `IPPROTO_ICMP`, or `IPPROTO_ICMPV6` for IPv6).
//!
//! # Theory of operation
//!
//! Echo requests to the emulated hosts are answered locally (see `icmp`); any other
//! destination gets a real echo from the host. The kernel's ping socket picks the echo ID (its
//! "port") and checks replies, so each guest (source, destination, ID) gets one socket and the
//! guest's own ID is restored on the way back. Replies reach the guest with TTL 255, as slirp
//! (hop limit 255 for IPv6) sends them. A flow ends 10 s after its last request.
//!
//! Ping sockets need the process's group in `net.ipv4.ping_group_range`; when they are
//! refused, one log line says so and echo requests are dropped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use smoltcp::wire::IpProtocol;

use super::epoll::{self, Token};
use super::table::{FlowTable, Keyed};
use crate::link::RxLink;
use crate::nat::Ctx;
use crate::sys;
use crate::wire::ip;

const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// The echo request and reply types of the family of `addr`.
fn echo_types(addr: &IpAddr) -> (u8, u8) {
    match addr {
        IpAddr::V4(_) => (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
        IpAddr::V6(_) => (
            crate::service::ndp::ECHO_REQUEST,
            crate::service::ndp::ECHO_REPLY,
        ),
    }
}
/// Largest echo we relay (ICMP header and payload), the IPv4 maximum.
const MAX_ECHO: usize = 65535 - 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    guest: IpAddr,
    remote: IpAddr,
    id: u16,
}

#[derive(Debug)]
struct Flow {
    key: Key,
    sock: OwnedFd,
    last_request: Instant,
    /// When the flow was made, and the ICMP bytes (header and payload) each way.
    created: Instant,
    to_host: u64,
    to_guest: u64,
}

impl Keyed for Flow {
    type Key = Key;
    fn key(&self) -> Key {
        self.key
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PingCounters {
    pub requests: u64,
    pub replies: u64,
    pub refused: u64,
}

/// Echo flows toward real hosts.
#[derive(Debug)]
pub struct PingTable {
    flows: FlowTable<Flow>,
    warned: bool,
    buf: Vec<u8>,
    pub counters: PingCounters,
}

impl PingTable {
    pub fn new(limit: usize) -> Self {
        PingTable {
            flows: FlowTable::new(limit),
            warned: false,
            buf: Vec::new(),
            counters: PingCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Records this table's flows for the other queue pairs' engines.
    pub(crate) fn join(&mut self, pair: &crate::queue_pairs::QueuePair) {
        self.flows.set_listing(pair.listing(&pair.shared().ping));
    }

    /// The open flows, as runtime control lists them.
    pub fn flow_infos(&self, now: Instant, out: &mut Vec<crate::flow::FlowInfo>) {
        for f in self.flows.iter() {
            out.push(crate::flow::FlowInfo {
                proto: "icmp",
                guest: SocketAddr::new(f.key.guest, f.key.id),
                remote: Some(SocketAddr::new(f.key.remote, 0)),
                state: "OPEN",
                to_host: f.to_host,
                to_guest: f.to_guest,
                age: now.saturating_duration_since(f.created),
                idle: now.saturating_duration_since(f.last_request),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Sends the guest's echo request (`icmp` = ICMP header and payload) from `guest` to
    /// `remote` (as the guest addressed it) out to `dest` on the host. Returns the other queue
    /// pair that holds the request's flow, if one does: the request goes there instead.
    pub fn on_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        guest: IpAddr,
        remote: IpAddr,
        dest: IpAddr,
        icmp: &[u8],
    ) -> Option<u16> {
        if icmp.len() < 8 || icmp[0] != echo_types(&dest).0 || dest.is_ipv4() != guest.is_ipv4() {
            return None;
        }
        let key = Key {
            guest,
            remote,
            id: u16::from_be_bytes([icmp[4], icmp[5]]),
        };
        let slot = match self.flows.find(&key) {
            Some(slot) => slot,
            None => {
                if ctx.hand_off
                    && let Some(owner) = self.flows.held_elsewhere(&key)
                {
                    return Some(owner);
                }
                self.open(ctx, key)?
            }
        };
        let flow = self.flows.get_mut(slot)?;
        flow.last_request = ctx.now;
        let dest = SocketAddr::new(dest, 0);
        match sys::send_buf(&flow.sock, icmp, Some(&dest), libc::MSG_DONTWAIT) {
            Ok(_) => {
                flow.to_host += icmp.len() as u64;
                self.counters.requests += 1;
            }
            Err(e) => log::debug!("echo request to {dest}: {e}"),
        }
        None
    }

    fn open(&mut self, ctx: &mut Ctx<'_>, key: Key) -> Option<usize> {
        if self.flows.is_full() {
            return None;
        }
        let protocol = match key.remote {
            IpAddr::V4(_) => libc::IPPROTO_ICMP,
            IpAddr::V6(_) => libc::IPPROTO_ICMPV6,
        };
        let sock = match sys::socket(sys::family(&key.remote), libc::SOCK_DGRAM, protocol) {
            Ok(sock) => sock,
            Err(e) => {
                self.counters.refused += 1;
                if !self.warned {
                    self.warned = true;
                    let refused = matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES | libc::EPERM | libc::EPROTONOSUPPORT)
                    );
                    if refused {
                        log::warn!(
                            "ICMP echo to remote hosts is off: ping sockets are refused ({e}); \
                             allow this group in net.ipv4.ping_group_range"
                        );
                    } else {
                        log::warn!("ICMP echo socket: {e}");
                    }
                }
                return None;
            }
        };
        let flow = Flow {
            key,
            sock,
            last_request: ctx.now,
            created: ctx.now,
            to_host: 0,
            to_guest: 0,
        };
        let interest = (libc::EPOLLIN | libc::EPOLLET) as u32;
        self.flows
            .add_watched(flow, |flow, slot| {
                epoll::add(ctx.epoll, &flow.sock, interest, Token::Ping(slot))
            })
            .ok()
    }

    /// Relays the replies waiting on flow `slot`'s socket to the guest.
    pub fn on_socket_event<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        self.buf.resize(MAX_ECHO, 0);
        loop {
            let n = match sys::recv_buf(&flow.sock, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(r) if !r.truncated => r.len,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("echo reply from {}: {e}", flow.key.remote);
                    return;
                }
            };
            let (_, reply_type) = echo_types(&flow.key.remote);
            if n < 8 || self.buf[0] != reply_type {
                continue;
            }
            let protocol = match flow.key.remote {
                IpAddr::V4(_) => IpProtocol::Icmp,
                IpAddr::V6(_) => IpProtocol::Icmpv6,
            };
            let icmp = &mut self.buf[..n];
            icmp[4..6].copy_from_slice(&flow.key.id.to_be_bytes());
            icmp[2..4].copy_from_slice(&[0, 0]);
            // ICMPv6 checksums cover a pseudo-header; ICMPv4 ones do not.
            let pseudo = match protocol {
                IpProtocol::Icmpv6 => {
                    ip::pseudo_header_sum(&flow.key.remote, &flow.key.guest, protocol, n)
                }
                _ => 0,
            };
            let sum =
                !smoltcp::wire::checksum::combine(&[pseudo, smoltcp::wire::checksum::data(icmp)]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut meta = ctx.meta(flow.key.remote, flow.key.guest, protocol);
            meta.ttl = 255;
            let mut hdr = [0u8; 14 + 40];
            let off = ip::write_headers(&mut hdr, &meta, n);
            if rx.send(&[&hdr[..off], &self.buf[..n]]).is_err() {
                return; // no guest buffers: the reply is lost, as on a congested link
            }
            flow.to_guest += n as u64;
            self.counters.replies += 1;
        }
    }

    /// Ends flows without requests for a while.
    pub fn on_tick(&mut self, now: Instant) {
        for slot in self.flows.slots() {
            let idle = self
                .flows
                .get(slot)
                .is_some_and(|f| now.duration_since(f.last_request) >= IDLE_TIMEOUT);
            if idle {
                self.flows.remove(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::MemoryLink;
    use std::net::Ipv4Addr;
    use vmm_sys_util::epoll::{Epoll, EpollEvent};

    #[test]
    fn echo_to_loopback_comes_back_with_the_guest_id_and_ttl_255() {
        let epoll = Epoll::new().unwrap();
        let mut ident = crate::wire::ipv4::Ident::new();
        let mut table = PingTable::new(8);
        let mut link = MemoryLink::new();
        let now = Instant::now();
        let mut ctx = Ctx {
            guest_mac: netplan::MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            gateway_mac: netplan::MacAddr([0x52, 0x55, 10, 0, 2, 2]),
            mtu: 1500,
            epoll: &epoll,
            ident: &mut ident,
            now,
            hand_off: false,
        };
        let guest = IpAddr::from(Ipv4Addr::new(10, 0, 2, 15));
        let remote = IpAddr::from(Ipv4Addr::new(127, 0, 0, 1));
        let mut request = vec![ICMP_ECHO_REQUEST, 0, 0, 0, 0xbe, 0xef, 0, 7];
        request.extend_from_slice(b"payload!");
        table.on_request(&mut ctx, guest, remote, remote, &request);
        if table.is_empty() {
            // This machine's ping_group_range excludes us: the refusal is counted.
            assert_eq!(table.counters.refused, 1);
            return;
        }
        let mut events = [EpollEvent::default(); 4];
        let n = crate::wait_for_events(&epoll, 2000, &mut events);
        assert_eq!(n, 1);
        let Some(Token::Ping(slot)) = Token::decode(events[0].data()) else {
            panic!("not a ping flow's token: {:#x}", events[0].data());
        };
        table.on_socket_event(slot, &mut ctx, &mut link);
        let frames = link.take();
        assert_eq!(frames.len(), 1);
        let f = &frames[0];
        assert_eq!(f[22], 255, "TTL");
        assert_eq!(&f[26..30], &[127, 0, 0, 1]);
        assert_eq!(&f[30..34], &[10, 0, 2, 15]);
        let icmp = &f[34..];
        assert_eq!(icmp[0], ICMP_ECHO_REPLY);
        assert_eq!(&icmp[4..8], &[0xbe, 0xef, 0, 7]);
        assert_eq!(&icmp[8..], b"payload!");
        assert_eq!(!smoltcp::wire::checksum::data(icmp), 0);
        table.on_tick(now + IDLE_TIMEOUT);
        assert!(table.is_empty());
    }
}
