//! Opening flows: a guest SYN connects a host socket; a forwarded port's accepted connection
//! opens the guest side with our SYN.

use super::*;

impl TcpTable {
    pub(super) fn on_new<L: RxLink>(
        &mut self,
        ctx: &mut Ctx<'_>,
        seg: &Segment,
        key: FlowKey,
        target: impl FnOnce() -> Target,
        rx: &mut L,
    ) -> SegmentOutcome {
        if seg.has(flags::RST) {
            return SegmentOutcome::Handled;
        }
        if !seg.has(flags::SYN) || seg.has(flags::ACK) {
            // No such connection: reset, as a TCP would.
            send_reset_for(ctx, seg, rx);
            return SegmentOutcome::Handled;
        }
        if self.flows.is_full() {
            self.counters.table_full += 1;
            send_reset_for(ctx, seg, rx);
            return SegmentOutcome::Handled;
        }
        let (sock, connected, command) = match target() {
            Target::Connect(dest) => match connect(dest) {
                Ok((sock, connected)) => (sock, connected, false),
                Err(ConnectFailure::Unreachable { host }) => {
                    return SegmentOutcome::Unreachable { host };
                }
                Err(failure) => {
                    if failure == ConnectFailure::Refused {
                        self.counters.refused += 1;
                    }
                    send_reset_for(ctx, seg, rx);
                    return SegmentOutcome::Handled;
                }
            },
            Target::Command(index) => match self.commands.start(index) {
                Ok(sock) => (sock, true, true),
                Err(e) => {
                    crate::ratelimit::guest_log!(
                        log::Level::Warn,
                        "guest forward to {}: the command did not start: {e}",
                        key.remote
                    );
                    self.counters.command_failures += 1;
                    send_reset_for(ctx, seg, rx);
                    return SegmentOutcome::Handled;
                }
            },
            Target::Unreachable => return SegmentOutcome::Unreachable { host: false },
            Target::Restricted => {
                self.counters.restricted += 1;
                send_reset_for(ctx, seg, rx);
                return SegmentOutcome::Handled;
            }
        };
        if command {
            self.counters.commands += 1;
        } else {
            self.counters.connects += 1;
        }
        let iss = self.next_isn();
        let mut flow = Flow::new(key, sock, State::Connecting, iss, ctx.now);
        flow.rcv_nxt = seg.seq.wrapping_add(1);
        flow.snd_wnd = u32::from(seg.window);
        flow.set_guest_options(seg);
        let interest = libc::EPOLLOUT | libc::EPOLLET;
        let slot = match self
            .flows
            .add_watched(flow, |flow, slot| flow.watch(ctx.epoll, interest, slot))
        {
            Ok(slot) => slot,
            Err(e) => {
                crate::ratelimit::guest_log!(log::Level::Warn, "epoll add for {}: {e}", key.remote);
                send_reset_for(ctx, seg, rx);
                return SegmentOutcome::Handled;
            }
        };
        if connected {
            self.on_connected(slot, ctx, rx);
        }
        SegmentOutcome::Handled
    }

    /// Opens the guest side of a host connection accepted on a forwarded port: a SYN from
    /// `key.remote` to `key.guest`. `unix`: the socket is a unix stream socket, whose data
    /// the guest acknowledged is discarded by reading it. The socket is closed at once (an
    /// RST for a TCP peer) when the table is full or the pair is already in use; false then.
    pub fn on_accepted<L: RxLink>(
        &mut self,
        sock: OwnedFd,
        key: FlowKey,
        unix: bool,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) -> bool {
        if self.flows.is_full() || self.flows.find(&key).is_some() {
            self.counters.table_full += 1;
            let _ = sys::set_linger_zero(&sock);
            return false;
        }
        let _ = sys::set_nodelay(&sock);
        use_peek_offset(&mut self.bufs.peek_offset_supported, sock.as_fd());
        let iss = self.next_isn();
        let mut flow = Flow::new(key, sock, State::SynSent, iss, ctx.now);
        if unix {
            flow.discard = Discard::Read;
        }
        // Data or a FIN may come before the guest answers; the handshake's end pushes it.
        let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        let watched = self.flows.add_watched(flow, |flow, slot| {
            let watched = flow.watch(ctx.epoll, interest, slot);
            if watched.is_err() {
                let _ = sys::set_linger_zero(&flow.sock);
            }
            watched
        });
        let Some(flow) = watched
            .inspect_err(|e| {
                crate::ratelimit::guest_log!(
                    log::Level::Warn,
                    "epoll add for the forward to {}: {e}",
                    key.guest
                )
            })
            .ok()
            .and_then(|slot| self.flows.get_mut(slot))
        else {
            return false;
        };
        self.counters.accepted += 1;
        send_syn(flow, ctx, rx);
        flow.timer = Some(ctx.now + flow.rto);
        true
    }

    pub(super) fn on_connected<L: RxLink>(&mut self, slot: usize, ctx: &mut Ctx<'_>, rx: &mut L) {
        let Some(flow) = self.flows.get(slot) else {
            return;
        };
        use_peek_offset(&mut self.bufs.peek_offset_supported, flow.sock.as_fd());
        let Some(flow) = self.flows.get_mut(slot) else {
            return;
        };
        flow.state = State::SynAckSent;
        let interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        let _ = epoll::modify(ctx.epoll, &flow.sock, interest as u32, Token::Tcp(slot));
        send_syn_ack(flow, ctx, rx);
        flow.timer = Some(ctx.now + flow.rto);
    }
}

/// Why a connection to a host did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectFailure {
    /// The host said no at once: the guest gets an RST.
    Refused,
    /// No route: the guest gets ICMP unreachable, "host" when the kernel said so.
    Unreachable { host: bool },
    /// No socket: the guest gets an RST.
    NoSocket,
}

/// Starts a non-blocking connection to `dest`: the socket, and whether it is connected
/// already.
fn connect(dest: SocketAddr) -> Result<(OwnedFd, bool), ConnectFailure> {
    let sock = sys::socket(sys::family(&dest.ip()), libc::SOCK_STREAM, 0).map_err(|e| {
        crate::ratelimit::guest_log!(log::Level::Warn, "TCP socket for {dest}: {e}");
        ConnectFailure::NoSocket
    })?;
    let _ = sys::set_nodelay(&sock);
    match sys::connect(&sock, &dest) {
        Ok(connected) => Ok((sock, connected)),
        Err(e) => Err(match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectFailure::Refused,
            Some(libc::EHOSTUNREACH) => ConnectFailure::Unreachable { host: true },
            _ => ConnectFailure::Unreachable { host: false },
        }),
    }
}

/// Starts peeking at the front of `fd`'s queue, learning on the first socket whether the
/// kernel supports peek offsets (`supported`).
fn use_peek_offset(supported: &mut Option<bool>, fd: BorrowedFd<'_>) {
    if supported.is_none() {
        let ok = sys::set_peek_offset(fd, 0).is_ok();
        if !ok {
            log::info!("SO_PEEK_OFF unsupported: peeking past sent data instead");
        }
        *supported = Some(ok);
    } else if *supported == Some(true) {
        let _ = sys::set_peek_offset(fd, 0);
    }
}
