//! The router-advertisement schedule: one advertisement when the guest first speaks IPv6, then
//! unsolicited ones every 200 to 600 s, as slirp sends them.

use super::*;

impl Engine {
    /// The guest's first IPv6 frame from an address of its own (its link-local address is
    /// up: an MLD report or a solicitation) gets one router advertisement at once, besides
    /// slirp's answers to solicitations and periodic ones: a guest whose own solicitation went
    /// missing still configures its address then, not minutes later. Frames from `::` (before
    /// the guest has an address) do not count: a guest that flushes its addresses while it
    /// starts DHCP would lose what that early advertisement configured.
    pub(super) fn greet_ipv6<L: RxLink>(&mut self, rx: &mut L) {
        if self.ipv6_greeted {
            return;
        }
        self.ipv6_greeted = true;
        let Some(v6) = advertised_ipv6(&self.plan) else {
            return;
        };
        let mut ra = Vec::new();
        ndp::router_advert(v6, self.options.upstream.dns_v6.is_some(), &mut ra);
        self.send(&ra, rx);
    }

    /// Sends the periodic router advertisement when due and schedules the next one, at a
    /// random 200 to 600 s as slirp does.
    pub(super) fn router_advert_tick<L: RxLink>(&mut self, now: Instant, rx: &mut L) {
        let Some(v6) = advertised_ipv6(&self.plan) else {
            return;
        };
        // With several queue pairs, the first one's engine advertises for all.
        if self
            .options
            .queue_pair
            .as_ref()
            .is_some_and(|p| p.index() != 0)
        {
            return;
        }
        if self.next_ra.is_some_and(|t| t <= now) {
            self.reply_buf.clear();
            ndp::router_advert(
                v6,
                self.options.upstream.dns_v6.is_some(),
                &mut self.reply_buf,
            );
            let ra = std::mem::take(&mut self.reply_buf);
            self.send(&ra, rx);
            self.reply_buf = ra;
            self.next_ra = None;
        }
        if self.next_ra.is_none() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            self.next_ra = Some(now + Duration::from_secs(200 + u64::from(nanos % 401)));
        }
    }
}

/// The IPv6 side of `plan` when router advertisements go out (IPv6 on, and neither
/// `--no-ndp` nor `--no-ra`): no greeting and no periodic advertisement otherwise.
fn advertised_ipv6(plan: &NetPlan) -> Option<&netplan::Ipv6Plan> {
    plan.ipv6
        .as_ref()
        .filter(|_| plan.services.router_advertisements())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::MemoryLink;
    use netplan::Services;

    fn engine(services: Services) -> Engine {
        Engine::isolated(NetPlan {
            services,
            ..NetPlan::slirp_default()
        })
    }

    /// The unsolicited advertisements: scheduled from `start`, sent when due, and neither
    /// while `--no-ra` or `--no-ndp` holds.
    #[test]
    fn periodic_router_advertisements_only_while_advertising() {
        let cases = [
            (Services::ALL, true),
            (
                Services {
                    ra: false,
                    ..Services::ALL
                },
                false,
            ),
            (
                Services {
                    ndp: false,
                    ..Services::ALL
                },
                false,
            ),
        ];
        for (services, advertises) in cases {
            let mut e = engine(services);
            let mut link = MemoryLink::new();
            e.start(&mut link);
            assert_eq!(e.next_ra.is_some(), advertises, "{services:?}");
            assert_eq!(e.timer_mode == TimerMode::Once, advertises, "{services:?}");
            // Due now.
            let now = Instant::now();
            e.next_ra = Some(now);
            e.router_advert_tick(now, &mut link);
            let sent = link.take();
            assert_eq!(sent.len(), usize::from(advertises), "{services:?}");
            if advertises {
                assert_eq!(sent[0][54], 134, "a router advertisement");
                assert!(e.next_ra.is_some_and(|t| t > now), "the next one scheduled");
            }
        }
    }
}
