//! Forwarded ports: connections and datagrams arriving on the plan's host ports become guest
//! flows; a port short of descriptors is paused for a while.

use super::*;

impl Engine {
    /// Brings the watched forward sockets in line with runtime control's rules, answers a
    /// waiting question, and tells the waiter (see [`crate::control`]). The lock is held for
    /// a few epoll calls per changed socket.
    pub(super) fn apply_control(&mut self) {
        let control = Arc::clone(&self.options.control);
        let mut state = control.lock();
        let readable = libc::EPOLLIN as u32;
        for (index, slot) in self.forwards.iter_mut().enumerate() {
            let gone = slot
                .as_ref()
                .is_some_and(|(id, _)| !state.rules.iter().any(|r| r.id == *id));
            if gone && let Some((id, fwd)) = slot.take() {
                // Not in the set any more if it became a UDP flow or is paused.
                let _ = epoll::remove(&self.epoll, &*fwd);
                self.paused_forwards.retain(|&p| p != index);
                // A UDP forward's socket may be a flow's by now: that flow is the forward
                // itself, not a connection through it, and goes with it.
                if fwd.proto == netplan::Proto::Udp
                    && let Some(ino) = crate::udp::socket_ino(&*fwd)
                {
                    self.udp.close_forwarded(&self.epoll, ino);
                }
                log::info!("forward {id} removed: {fwd}");
            }
        }
        self.rules_watched
            .retain(|id| state.rules.iter().any(|r| r.id == *id));
        for rule in &state.rules {
            if self.rules_watched.contains(&rule.id) || !self.takes_forward(&rule.spec) {
                continue;
            }
            self.rules_watched.push(rule.id);
            for fwd in &rule.sockets {
                let index = self.forwards.len();
                // Level-triggered: what one event leaves waiting is reported again.
                if let Err(e) = epoll::add(&self.epoll, &**fwd, readable, Token::Forward(index)) {
                    log::warn!("forward {}: {fwd}: not watched: {e}", rule.id);
                }
                self.forwards.push(Some((rule.id, Arc::clone(fwd))));
            }
        }
        if Control::behind(&state, &self.seat) && (state.want_stats || state.want_flows) {
            state.answered += 1;
            if state.want_stats {
                state.stats.push(self.stats());
            }
            if state.want_flows {
                let flows = self.flows();
                state.flows.extend(flows);
            }
        }
        control.applied(&mut state, &self.seat);
    }

    /// Whether this engine watches the forward `spec`: every one with a single queue pair or
    /// on the first; on the others, TCP ports once the guest used the pair (see
    /// [`crate::queue_pairs`]).
    fn takes_forward(&self, spec: &netplan::PortForward) -> bool {
        match &self.options.queue_pair {
            Some(pair) if pair.index() != 0 => {
                self.pair_in_use
                    && spec.proto == netplan::Proto::Tcp
                    && matches!(spec.host, netplan::HostListen::Inet { .. })
            }
            _ => true,
        }
    }

    /// The first guest frame on a queue pair other than the first: its engine starts taking
    /// forwarded connections.
    pub(super) fn pair_used(&mut self) {
        self.pair_in_use = true;
        if self
            .options
            .queue_pair
            .as_ref()
            .is_some_and(|p| p.index() != 0)
        {
            self.apply_control();
        }
    }

    /// The next port of [`UNIX_PEER_PORTS`].
    fn unix_peer_port(&mut self) -> u16 {
        let port = self.next_unix_port;
        self.next_unix_port = if port + 1 == UNIX_PEER_PORTS.end {
            UNIX_PEER_PORTS.start
        } else {
            port + 1
        };
        port
    }

    /// Notes `addr` as the guest's IPv6 address (for forwards) unless it is link-local or
    /// multicast: from the source of what it sends, or from its duplicate address detection,
    /// so that forwards reach a guest that has configured an address but not used it yet.
    pub(super) fn learn_guest_ipv6(&mut self, addr: Ipv6Addr) {
        if !addr.is_multicast()
            && !addr.is_unicast_link_local()
            && !addr.is_unspecified()
            && self.guest_ipv6 != Some(addr)
        {
            self.guest_ipv6 = Some(addr);
            if let Some(pair) = &self.options.queue_pair {
                pair.learn_guest_ipv6(addr);
            }
        }
    }

    /// A forwarded port is readable: its waiting connections become guest connections.
    pub(super) fn on_forward_event<L: RxLink>(&mut self, index: usize, rx: &mut L) {
        let Some(Some((_, fwd))) = self.forwards.get(index) else {
            return;
        };
        let fwd = Arc::clone(fwd);
        let fwd = &*fwd;
        if fwd.proto == netplan::Proto::Udp {
            self.adopt_udp_forward(fwd, rx);
            return;
        }
        // A bounded number per event, so that a flood on one port cannot starve the rest;
        // the level-triggered event comes back for what is left.
        for _ in 0..ACCEPTS_PER_EVENT {
            let (sock, peer) = match crate::sys::accept(fwd) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => break,
                Err(e) => {
                    self.counters.accept_failures += 1;
                    let shortage = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    if shortage {
                        crate::ratelimit::guest_log!(
                            log::Level::Warn,
                            "{fwd}: {e}; not accepting for {ACCEPT_BACKOFF:?}"
                        );
                        self.pause_forward(index, fwd);
                    } else {
                        log::debug!("accept on {fwd}: {e}");
                    }
                    break;
                }
            };
            let peer = match peer {
                Some(addr) => Peer::Inet(addr),
                None => Peer::Unix {
                    port: self.unix_peer_port(),
                },
            };
            let Some((guest, remote)) = self.forward_guest_side(fwd, peer) else {
                log::debug!("{fwd}: no guest address to take {peer:?}");
                self.tcp.counters.no_guest_address += 1;
                continue;
            };
            log::debug!("{fwd}: {peer:?} comes to {guest} from {remote}");
            let unix = matches!(fwd.local, Local::Unix(_));
            let mut ctx = ctx!(self);
            let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
            let key = tcp::FlowKey { guest, remote };
            self.tcp.on_accepted(sock, key, unix, &mut ctx, &mut tap);
        }
        self.arm_timer();
    }

    /// Stops watching forward `index` for [`ACCEPT_BACKOFF`]: the connection that could not be
    /// accepted stays in the listener's queue, and its level-triggered event would come back
    /// at once.
    fn pause_forward(&mut self, index: usize, fwd: &ForwardSocket) {
        if self.paused_forwards.contains(&index) {
            return;
        }
        let _ = epoll::remove(&self.epoll, fwd);
        self.paused_forwards.push(index);
        self.counters.forwards_paused += 1;
        self.resume_forwards_at = Some(Instant::now() + ACCEPT_BACKOFF);
        self.arm_timer();
    }

    /// Watches paused forwards again once their backoff is over: they take their waiting
    /// connections if descriptors freed up, or pause again.
    pub(super) fn resume_forwards(&mut self, now: Instant) {
        if self.resume_forwards_at.is_none_or(|at| now < at) {
            return;
        }
        self.resume_forwards_at = None;
        for index in std::mem::take(&mut self.paused_forwards) {
            if let Some(Some((_, fwd))) = self.forwards.get(index) {
                let readable = libc::EPOLLIN as u32;
                let _ = epoll::add(&self.epoll, &**fwd, readable, Token::Forward(index));
            }
        }
    }

    /// Where a connection or datagram from `peer` to forward `fwd` goes in the guest, and
    /// whom it comes from there (see [`forward::guest_side`]).
    fn forward_guest_side(
        &self,
        fwd: &ForwardSocket,
        peer: Peer,
    ) -> Option<(SocketAddr, SocketAddr)> {
        forward::guest_side(
            fwd,
            &self.plan,
            &self.options.upstream,
            // The pairs share what any of them learned last.
            self.options
                .queue_pair
                .as_ref()
                .and_then(|pair| pair.guest_ipv6())
                .or(self.guest_ipv6),
            peer,
        )
    }

    /// The first datagram on a forwarded UDP port: the port's socket becomes the UDP flow of
    /// the guest socket it forwards to, and this epoll entry gives way to the flow's. While the
    /// guest has no address of the port's family, datagrams are dropped and counted.
    fn adopt_udp_forward<L: RxLink>(&mut self, fwd: &ForwardSocket, rx: &mut L) {
        let Some(peer) = crate::sys::peek_source(fwd) else {
            // Nothing to take, or an error the level-triggered event would report forever.
            let _ = crate::sys::discard_datagram(fwd);
            return;
        };
        let Some((guest, _)) = self
            .forward_guest_side(fwd, Peer::Inet(peer))
            .filter(|(guest, _)| guest.is_ipv6() == fwd.local.is_ipv6())
        else {
            // Dropped, or the level-triggered event would spin until the guest has an address
            // (of the port's family: UDP is not translated between families).
            let _ = crate::sys::discard_datagram(fwd);
            self.udp.counters.no_guest_address += 1;
            return;
        };
        let copy = match fwd.try_clone_fd() {
            Ok(copy) => copy,
            Err(e) => {
                crate::ratelimit::guest_log!(log::Level::Warn, "{fwd}: {e}");
                let _ = crate::sys::discard_datagram(fwd);
                return;
            }
        };
        let mut ctx = ctx!(self);
        let Some(slot) = self.udp.adopt_forward(&mut ctx, guest, copy) else {
            log::debug!("{fwd}: no UDP flow for {guest}");
            let _ = crate::sys::discard_datagram(fwd);
            return;
        };
        let _ = epoll::remove(&self.epoll, fwd);
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        self.udp.on_socket_event(
            slot,
            0,
            &self.plan,
            &self.options.upstream,
            &mut ctx,
            &mut tap,
        );
        self.arm_timer();
    }
}
