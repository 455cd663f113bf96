//! Host events: readiness of host sockets and forwarded ports, and the flow timer.

use super::*;

impl Engine {
    /// Whether guest segments since the last call made room for host data, so that host socket
    /// events are likely waiting already: a link that then calls [`Engine::poll_host`] before
    /// telling the guest delivers that data with the same notification, and is not woken for
    /// those events afterwards.
    pub fn host_events_likely(&mut self) -> bool {
        self.tcp.take_socket_events_waiting()
    }

    /// Serves host sockets and timers that are ready; call when [`Engine::host_fd`] is readable.
    pub fn poll_host<L: RxLink>(&mut self, rx: &mut L) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("epoll on host sockets: {e}");
                    0
                }
            };
            for ev in &events[..n] {
                self.host_event(ev.data(), ev.events(), rx);
            }
            if n < events.len() {
                break;
            }
        }
        self.end_batch(rx);
        let now = Instant::now();
        self.router_advert_tick(now, rx);
        if self.tcp.is_empty()
            && self.udp.is_empty()
            && self.ping.is_empty()
            && self.paused_forwards.is_empty()
        {
            self.idle_timer(now);
        }
    }

    /// Starts the engine's own timers (the unsolicited router advertisements); the link calls
    /// this once the guest can receive.
    pub fn start<L: RxLink>(&mut self, rx: &mut L) {
        if self.next_ra.is_none() && self.timer_mode == TimerMode::Off {
            let now = Instant::now();
            self.router_advert_tick(now, rx);
            self.idle_timer(now);
        }
    }

    fn host_event<L: RxLink>(&mut self, data: u64, events: u32, rx: &mut L) {
        let Some(token) = Token::decode(data) else {
            log::debug!("unknown host event token {data:#x}");
            return;
        };
        match token {
            Token::Forward(index) => {
                self.on_forward_event(index, rx);
                return;
            }
            Token::Inbox => {
                self.on_inbox(rx);
                return;
            }
            Token::Timer => self.resume_forwards(Instant::now()),
            _ => {}
        }
        let mut ctx = ctx!(self);
        let mut tap = Tap::new(rx, self.capture.as_ref(), &mut self.counters.rx_frames);
        match token {
            Token::Tcp(slot) => self.tcp.on_socket_event(slot, events, &mut ctx, &mut tap),
            Token::Udp(slot) => self.udp.on_socket_event(
                slot,
                events,
                &self.plan,
                &self.options.upstream,
                &mut ctx,
                &mut tap,
            ),
            Token::Ping(slot) => self.ping.on_socket_event(slot, &mut ctx, &mut tap),
            Token::AckTimer => {
                let _ = self.ack_timer.wait();
                self.ack_timer_armed = false;
                self.tcp.send_delayed_acks(&mut ctx, &mut tap);
            }
            Token::Timer => {
                let _ = self.timer.wait();
                self.tcp.on_tick(&mut ctx, &mut tap);
                self.udp.on_tick(ctx.now);
                self.ping.on_tick(ctx.now);
            }
            Token::Forward(_) | Token::Inbox => {}
        }
    }

    /// Flows exist: tick regularly for their timers.
    pub(super) fn arm_timer(&mut self) {
        if self.timer_mode != TimerMode::Ticking && self.timer.reset(TICK, Some(TICK)).is_ok() {
            self.timer_mode = TimerMode::Ticking;
        }
    }

    /// No flows: wake only for the next router advertisement, if IPv6 is on.
    fn idle_timer(&mut self, now: Instant) {
        let Some(next_ra) = self.next_ra else {
            if self.timer_mode != TimerMode::Off && self.timer.clear().is_ok() {
                self.timer_mode = TimerMode::Off;
            }
            return;
        };
        let wait = next_ra
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if self.timer.reset(wait, None).is_ok() {
            self.timer_mode = TimerMode::Once;
        }
    }
}
