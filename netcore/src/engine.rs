//! The engine: takes each guest frame, dispatches it by protocol, sends answers to the guest.
//!
//! # Theory of operation
//!
//! The engine owns all per-guest state (the learned guest MAC, DHCP leases, counters) and is
//! driven from one thread. A guest frame is copied out only as far as its protocol needs:
//! control-plane protocols (ARP, DHCP, ICMP echo to the emulated hosts) are small and copied
//! whole into a reused buffer; nothing else is copied here.
//!
//! Answers go straight to the [`RxLink`]. When the guest has posted no room, they wait in a
//! bounded queue, in order, and [`Engine::flush`] sends them once buffers arrive; past the bound
//! they are dropped and counted, because a guest that never reads must not grow our memory.
//!
//! Anything malformed or not (yet) served is dropped and counted; nothing a guest sends can
//! stop the engine.

use std::collections::VecDeque;

use policy::{MacAddr, NetPlan};

use crate::capture::SharedCapture;
use crate::ipv4::Ident;
use crate::link::{RxLink, TxFrame};
use crate::{arp, dhcp, icmp};
use crate::{capture, ethernet};

/// The largest frame a guest may hand us: a 64 KiB IP packet behind an Ethernet header.
pub const MAX_FRAME_LEN: usize = 65535 + ethernet::HEADER_LEN;
/// Answers waiting for guest buffers, at most.
const MAX_PENDING: usize = 1024;

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
}

/// What a protocol handler did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer frame is in the output buffer.
    Reply,
    /// Handled; nothing to send.
    Consumed,
    /// Not for this handler, or not served.
    Unhandled,
    /// Broken beyond use.
    Malformed,
}

/// The NAT core for one guest.
#[derive(Debug)]
pub struct Engine {
    plan: NetPlan,
    guest_mac: Option<MacAddr>,
    dhcp: dhcp::Server,
    /// Identification of the IPv4 packets we send, one sequence for all of them (as slirp).
    ip_ident: Ident,
    counters: Counters,
    pending: VecDeque<Vec<u8>>,
    capture: Option<SharedCapture>,
    /// Reused copy of the frame being handled.
    frame_buf: Vec<u8>,
    /// Reused buffer the handlers build answers in.
    reply_buf: Vec<u8>,
}

impl Engine {
    pub fn new(plan: NetPlan) -> Self {
        Engine {
            dhcp: dhcp::Server::new(&plan),
            plan,
            guest_mac: None,
            ip_ident: Ident::new(),
            counters: Counters::default(),
            pending: VecDeque::new(),
            capture: None,
            frame_buf: Vec::with_capacity(2048),
            reply_buf: Vec::with_capacity(2048),
        }
    }

    /// Records every frame, both ways, into `capture`.
    pub fn set_capture(&mut self, capture: SharedCapture) {
        self.capture = Some(capture);
    }

    pub fn plan(&self) -> &NetPlan {
        &self.plan
    }

    /// The guest's MAC, once a frame has shown it.
    pub fn guest_mac(&self) -> Option<MacAddr> {
        self.guest_mac
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether answers are waiting for guest buffers.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Handles one frame the guest sent.
    pub fn handle_frame<F, L>(&mut self, frame: &F, rx: &mut L)
    where
        F: TxFrame + ?Sized,
        L: RxLink,
    {
        self.counters.tx_frames += 1;
        let len = frame.len();
        if !(ethernet::HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            self.counters.tx_malformed += 1;
            log::debug!("dropping guest frame of {len} bytes");
            return;
        }
        self.frame_buf.resize(len, 0);
        let copied = frame.read_at(0, &mut self.frame_buf);
        self.frame_buf.truncate(copied);
        if let Some(capture) = &self.capture {
            capture::record(capture, &self.frame_buf);
        }
        let Some((_dst, src, ethertype)) = ethernet::parse_header(&self.frame_buf) else {
            self.counters.tx_malformed += 1;
            return;
        };
        if !src.is_multicast() && src != MacAddr::default() {
            self.guest_mac = Some(src);
        }

        self.reply_buf.clear();
        let verdict = match ethertype {
            ethernet::ETHERTYPE_ARP => {
                let v = arp::handle(&self.plan, &self.frame_buf, &mut self.reply_buf);
                if v == Verdict::Reply {
                    self.counters.arp_replies += 1;
                }
                v
            }
            ethernet::ETHERTYPE_IPV4 => self.handle_ipv4(),
            _ => Verdict::Unhandled,
        };
        match verdict {
            Verdict::Reply => {
                let reply = std::mem::take(&mut self.reply_buf);
                self.send(&reply, rx);
                self.reply_buf = reply;
            }
            Verdict::Consumed => {}
            Verdict::Unhandled => self.counters.tx_unhandled += 1,
            Verdict::Malformed => self.counters.tx_malformed += 1,
        }
    }

    fn handle_ipv4(&mut self) -> Verdict {
        let frame = &self.frame_buf;
        if dhcp::is_dhcp_request(&self.plan, frame) {
            let v = self
                .dhcp
                .handle(&self.plan, &mut self.ip_ident, frame, &mut self.reply_buf);
            if v == Verdict::Reply {
                self.counters.dhcp_replies += 1;
            }
            return v;
        }
        let v = icmp::handle(&self.plan, &mut self.ip_ident, frame, &mut self.reply_buf);
        if v == Verdict::Reply {
            self.counters.icmp_replies += 1;
        }
        v
    }

    /// Sends a frame to the guest now, or queues it behind those already waiting.
    fn send<L: RxLink>(&mut self, frame: &[u8], rx: &mut L) {
        if self.pending.is_empty() && rx.send(&[frame]).is_ok() {
            self.delivered(frame);
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.counters.rx_dropped += 1;
            return;
        }
        self.pending.push_back(frame.to_vec());
    }

    fn delivered(&mut self, frame: &[u8]) {
        self.counters.rx_frames += 1;
        if let Some(capture) = &self.capture {
            capture::record(capture, frame);
        }
    }

    /// Sends waiting answers while the guest has room. Returns true when none are left.
    pub fn flush<L: RxLink>(&mut self, rx: &mut L) -> bool {
        while let Some(frame) = self.pending.front() {
            if rx.send(&[frame]).is_err() {
                return false;
            }
            let frame = self.pending.pop_front().unwrap_or_default();
            self.delivered(&frame);
        }
        true
    }
}
