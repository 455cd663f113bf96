//! What the engine counted, as data.
//!
//! [`Stats`] is the one picture of an engine's counters: its own ([`Counters`]), the flow
//! tables' and the TFTP server's, and how many flows are open. Logs and tests read it through
//! its text form (`key=value`, separated by spaces) or its JSON form (one flat object), never
//! through `Debug` of the structs behind it, so that a field renamed inside the engine cannot
//! quietly change what a reader finds.

use std::fmt::{self, Write as _};

use crate::ping::PingCounters;
use crate::service::tftp::TftpCounters;
use crate::tcp::TcpCounters;
use crate::udp::UdpCounters;

/// What happened to guest frames, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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
    /// ICMP destination-unreachable errors we sent for guest packets.
    pub unreachables: u64,
    /// Guest packets to the host's own addresses (loopback, "this host", v4-mapped), dropped
    /// whatever the mapping, as passt drops them: only the gateway may lead to loopback.
    pub tx_host_internal: u64,
    /// Connections to forwarded ports that could not be accepted.
    pub accept_failures: u64,
    /// Times a forwarded port was left unwatched for a while: out of descriptors or memory.
    pub forwards_paused: u64,
    /// Guest frames of a flow another queue pair holds, handed to that pair.
    pub tx_handed_off: u64,
    /// Such frames dropped because the holder's inbox was full.
    pub tx_handoff_dropped: u64,
}

/// Flows and sessions open at the moment the statistics were taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenFlows {
    pub tcp: usize,
    pub udp: usize,
    pub ping: usize,
    pub tftp_sessions: usize,
}

/// Everything an engine counted, at one moment ([`super::Engine::stats`]).
///
/// # Keys
///
/// The text ([`fmt::Display`]) and JSON ([`Stats::to_json`]) forms name every value by a key,
/// and those keys are stable: logs are read by tools and tests. A key is
/// - the field name of [`Counters`] for the engine's own counters (`tx_frames`, `rx_dropped`);
/// - `tcp.`, `udp.`, `ping.` or `tftp.` and the field name of that table's counters
///   (`tcp.out_of_order`, `udp.to_host`, `ping.requests`, `tftp.transfers`);
/// - `tcp.open`, `udp.open`, `ping.open` and `tftp.sessions` for what is open (last).
///
/// Every value is an unsigned integer. The keys come in a fixed order; a counter added to
/// the engine gets a new key (the lists below name every field, so the compiler asks for
/// it), and a field renamed keeps its old key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub engine: Counters,
    pub tcp: TcpCounters,
    pub udp: UdpCounters,
    pub ping: PingCounters,
    pub tftp: TftpCounters,
    pub open: OpenFlows,
}

/// Hands each named field of `$value` (a `$ty`, every field listed) to `$f` under the key
/// `$prefix` + the field's name.
macro_rules! each_field {
    ($f:ident, $prefix:literal, $value:expr, $ty:ident { $($field:ident),* $(,)? }) => {{
        let $ty { $($field),* } = $value;
        $( $f(concat!($prefix, stringify!($field)), $field); )*
    }};
}

impl Stats {
    /// Calls `f` with every key and its value, in the fixed order of the text form.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        let mut copy = *self;
        copy.visit(|key, value| f(key, *value));
    }

    /// Adds `other`'s counts to these, key by key: the engines of several queue pairs serve
    /// one guest, and their sum is its picture.
    pub fn merge(&mut self, other: &Stats) {
        let mut values = Vec::with_capacity(64);
        other.for_each(|_, value| values.push(value));
        let mut values = values.into_iter();
        self.visit(|_, value| *value = value.saturating_add(values.next().unwrap_or(0)));
    }

    /// Calls `f` with every key and its value to change, in the fixed order of the text form.
    fn visit(&mut self, mut f: impl FnMut(&'static str, &mut u64)) {
        each_field!(
            f,
            "",
            &mut self.engine,
            Counters {
                tx_frames,
                rx_frames,
                tx_malformed,
                tx_unhandled,
                rx_dropped,
                arp_replies,
                dhcp_replies,
                icmp_replies,
                unreachables,
                tx_host_internal,
                accept_failures,
                forwards_paused,
                tx_handed_off,
                tx_handoff_dropped,
            }
        );
        each_field!(
            f,
            "tcp.",
            &mut self.tcp,
            TcpCounters {
                connects,
                idle_closed,
                refused,
                resets_to_guest,
                retransmits,
                flows_closed,
                table_full,
                timeouts,
                short_writes,
                restricted,
                out_of_order,
                accepted,
                guest_refused,
                no_guest_address,
                commands,
                command_failures,
            }
        );
        each_field!(
            f,
            "udp.",
            &mut self.udp,
            UdpCounters {
                to_host,
                to_guest,
                truncated,
                table_full,
                expired,
                no_guest_address,
                restricted,
                bounced,
                fragmented,
                fragments_lost,
                read_errors,
                icmp_relayed,
            }
        );
        each_field!(
            f,
            "ping.",
            &mut self.ping,
            PingCounters {
                requests,
                replies,
                refused
            }
        );
        each_field!(
            f,
            "tftp.",
            &mut self.tftp,
            TftpCounters {
                transfers,
                completed,
                data_blocks,
                resent,
                errors_sent,
                busy,
                ignored,
            }
        );
        let OpenFlows {
            tcp,
            udp,
            ping,
            tftp_sessions,
        } = &mut self.open;
        for (key, open) in [
            ("tcp.open", tcp),
            ("udp.open", udp),
            ("ping.open", ping),
            ("tftp.sessions", tftp_sessions),
        ] {
            let mut value = *open as u64;
            f(key, &mut value);
            *open = usize::try_from(value).unwrap_or(usize::MAX);
        }
    }

    /// The value under `key`, if there is such a key.
    pub fn get(&self, key: &str) -> Option<u64> {
        let mut found = None;
        self.for_each(|k, v| {
            if k == key {
                found = Some(v);
            }
        });
        found
    }

    /// One flat JSON object of every key and its value: `{"tx_frames":1,"tcp.connects":0,...}`.
    /// Written by hand (keys need no escaping, values are integers): the NAT core has no JSON
    /// library and needs none for this.
    pub fn to_json(&self) -> String {
        let mut json = String::from("{");
        self.for_each(|key, value| {
            if json.len() > 1 {
                json.push(',');
            }
            let _ = write!(json, "\"{key}\":{value}");
        });
        json.push('}');
        json
    }
}

impl fmt::Display for Stats {
    /// `key=value` for every key, separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut result = Ok(());
        let mut first = true;
        self.for_each(|key, value| {
            if result.is_ok() {
                let sep = if first { "" } else { " " };
                result = write!(f, "{sep}{key}={value}");
                first = false;
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys, as documented: readers depend on every one of them.
    const KEYS: &str = "tx_frames rx_frames tx_malformed tx_unhandled rx_dropped arp_replies \
        dhcp_replies icmp_replies unreachables tx_host_internal accept_failures forwards_paused \
        tx_handed_off tx_handoff_dropped \
        tcp.connects tcp.idle_closed tcp.refused tcp.resets_to_guest tcp.retransmits \
        tcp.flows_closed tcp.table_full tcp.timeouts tcp.short_writes tcp.restricted \
        tcp.out_of_order tcp.accepted tcp.guest_refused tcp.no_guest_address tcp.commands \
        tcp.command_failures udp.to_host udp.to_guest udp.truncated udp.table_full udp.expired \
        udp.no_guest_address udp.restricted udp.bounced udp.fragmented udp.fragments_lost \
        udp.read_errors udp.icmp_relayed ping.requests ping.replies ping.refused \
        tftp.transfers tftp.completed tftp.data_blocks tftp.resent tftp.errors_sent tftp.busy \
        tftp.ignored tcp.open udp.open ping.open tftp.sessions";

    fn sample() -> Stats {
        let mut s = Stats::default();
        s.engine.tx_frames = 3;
        s.engine.forwards_paused = 11;
        s.tcp.out_of_order = 7;
        s.udp.to_host = 5;
        s.ping.refused = 13;
        s.tftp.ignored = 17;
        s.open.tcp = 2;
        s.open.tftp_sessions = 1;
        s
    }

    /// The text form as (key, value) pairs; panics on anything but `key=value` tokens.
    fn pairs(text: &str) -> Vec<(String, u64)> {
        text.split(' ')
            .map(|token| {
                let (k, v) = token.split_once('=').expect(token);
                (k.to_owned(), v.parse().expect(token))
            })
            .collect()
    }

    #[test]
    fn the_text_form_names_every_documented_key_once_in_order() {
        let keys: Vec<String> = pairs(&Stats::default().to_string())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let want: Vec<&str> = KEYS.split_whitespace().collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn each_value_is_under_its_own_key() {
        let s = sample();
        let text = s.to_string();
        let nonzero: Vec<(String, u64)> = pairs(&text).into_iter().filter(|p| p.1 != 0).collect();
        let want = [
            ("tx_frames", 3),
            ("forwards_paused", 11),
            ("tcp.out_of_order", 7),
            ("udp.to_host", 5),
            ("ping.refused", 13),
            ("tftp.ignored", 17),
            ("tcp.open", 2),
            ("tftp.sessions", 1),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(nonzero, want, "{text}");
        assert_eq!(s.get("tcp.out_of_order"), Some(7));
        assert_eq!(s.get("tcp.open"), Some(2));
        assert_eq!(s.get("out_of_order"), None, "keys are whole names");
    }

    #[test]
    fn merged_statistics_add_every_key() {
        let mut sum = sample();
        sum.merge(&sample());
        let mut doubled = Vec::new();
        sample().for_each(|key, value| doubled.push((key, 2 * value)));
        let mut got = Vec::new();
        sum.for_each(|key, value| got.push((key, value)));
        assert_eq!(got, doubled);
        assert_eq!(sum.get("tcp.open"), Some(4));
    }

    #[test]
    fn the_json_form_is_one_flat_object_of_the_same_pairs() {
        let s = sample();
        let json = s.to_json();
        let body = json
            .strip_prefix('{')
            .and_then(|b| b.strip_suffix('}'))
            .expect(&json);
        let from_json: Vec<(String, u64)> = body
            .split(',')
            .map(|member| {
                let (k, v) = member.split_once(':').expect(member);
                let k = k.strip_prefix('"').and_then(|k| k.strip_suffix('"'));
                (k.expect(member).to_owned(), v.parse().expect(member))
            })
            .collect();
        assert_eq!(from_json, pairs(&s.to_string()));
    }
}
