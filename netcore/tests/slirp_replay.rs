//! Our answers against real QEMU slirp's, byte for byte.
//!
//! `scripts/capture-slirp-fixtures.sh` boots the test guest behind QEMU's own `-netdev user`
//! and records both directions into `fixtures/slirp.pcap`, and into `slirp-bootfile.pcap` from
//! a second boot with `bootfile=two-blocks.txt`: ARP for the gateway, DHCP, two pings to
//! 10.0.2.2, MLD reports and duplicate address detection, a router solicitation, a neighbour
//! solicitation and a ping for fec0::2, DHCPv6 Information-Requests to ff02::1:2 and to
//! fec0::2, and a TFTP read of `fixtures/slirp-tftp/two-blocks.txt`. These tests feed the
//! guest's frames, in order, to an engine with the `slirp_default` plan (serving the same TFTP
//! root; the guest's MAC is learned from its frames, as slirp learns it), and compare what the
//! engine answers each frame with what slirp sent before the guest's next frame.
//!
//! Frames are compared whole, IPv4 identification and checksums included (both number their
//! packets from 0), except where a difference is legitimate or a known slirp bug we do not
//! copy; each such field is named where it is left out:
//! - Ethernet padding after the ARP message or IP packet (its own length says where it ends):
//!   slirp pads ARP replies to 64 bytes and sends short IP frames unpadded, we pad every frame
//!   to the 60-byte minimum. The padding must be zeros on both sides.
//! - DHCPv6 replies: see [`dhcpv6_replies_match_slirp_but_for_its_bugs`].
//! - Router advertisements: slirp sends unsolicited ones on its own timer, we send the first
//!   when the guest's first IPv6 frame arrives; so we may answer a frame slirp left unanswered,
//!   and then only with slirp's advertisement, byte for byte.

mod common;

use std::net::Ipv6Addr;
use std::path::PathBuf;

use common::run;
use netcore::Engine;
use netplan::NetPlan;
use smoltcp::wire::{IpAddress, Ipv6Packet, UdpPacket};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The frames of a classic pcap file (what QEMU's filter-dump writes), in order.
fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(
        u32_at(0),
        0xa1b2_c3d4,
        "a little-endian pcap with microseconds"
    );
    assert_eq!(u32_at(20), 1, "Ethernet frames");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let caplen = u32_at(at + 8) as usize;
        assert_eq!(caplen, u32_at(at + 12) as usize, "frames captured whole");
        frames.push(bytes[at + 16..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    frames
}

/// What a guest frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Arp,
    Dhcp,
    Ping,
    Tftp,
    RouterSolicitation,
    NeighborSolicitation,
    Ping6,
    Dhcpv6,
    /// MLD reports, duplicate address detection: slirp answers none of them.
    Other,
}

fn be16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

fn kind(frame: &[u8]) -> Kind {
    match be16(frame, 12) {
        0x0806 => Kind::Arp,
        0x0800 => {
            let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
            match (frame[23], be16(frame, l4 + 2)) {
                (1, _) => Kind::Ping,
                (17, 67) => Kind::Dhcp,
                (17, 69) => Kind::Tftp,
                _ => Kind::Other,
            }
        }
        0x86dd => match (frame[20], frame[54], be16(frame, 56)) {
            (58, 128, _) => Kind::Ping6,
            (58, 133, _) => Kind::RouterSolicitation,
            // From the unspecified address: duplicate address detection, which nobody answers.
            (58, 135, _) if frame[22..38] != [0; 16] => Kind::NeighborSolicitation,
            (17, _, 547) => Kind::Dhcpv6,
            _ => Kind::Other,
        },
        other => panic!("ethertype {other:#06x} in the capture"),
    }
}

/// One guest frame, what slirp sent after it (before the guest's next), and what we answer.
struct Exchange {
    request: Vec<u8>,
    slirp: Vec<Vec<u8>>,
    ours: Vec<Vec<u8>>,
}

/// Replays the guest's frames of `capture` into an engine with `plan`.
fn replay(capture: &str, mut plan: NetPlan) -> Vec<Exchange> {
    let frames = read_pcap(&std::fs::read(fixtures().join(capture)).expect(capture));
    plan.tftp_root = Some(fixtures().join("slirp-tftp"));
    let mut engine = Engine::isolated(plan);
    // The guest speaks first (DHCP discover).
    let guest_mac = frames[0][6..12].to_vec();
    let mut exchanges: Vec<Exchange> = Vec::new();
    for frame in frames {
        if frame[6..12] == guest_mac[..] {
            let ours = run(&mut engine, &frame);
            exchanges.push(Exchange {
                request: frame,
                slirp: Vec::new(),
                ours,
            });
        } else {
            exchanges
                .last_mut()
                .expect("slirp spoke first")
                .slirp
                .push(frame);
        }
    }
    exchanges
}

fn plain() -> Vec<Exchange> {
    replay("slirp.pcap", NetPlan::slirp_default())
}

fn with_bootfile() -> Vec<Exchange> {
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.bootfile = Some("two-blocks.txt".into());
    replay("slirp-bootfile.pcap", plan)
}

/// Where the ARP message or IP packet in `frame` ends; what follows is Ethernet padding.
fn packet_end(frame: &[u8]) -> usize {
    match be16(frame, 12) {
        0x0806 => 14 + 28,
        0x0800 => 14 + usize::from(be16(frame, 16)),
        0x86dd => 14 + 40 + usize::from(be16(frame, 18)),
        other => panic!("ethertype {other:#06x}"),
    }
}

/// Our frame is slirp's, byte for byte up to the end of the packet; both pad with zeros only.
fn assert_same(ours: &[u8], slirp: &[u8], what: &str) {
    let end = packet_end(slirp);
    assert!(
        ours.len() >= end,
        "{what}: ours is {} bytes, slirp's packet {end}",
        ours.len()
    );
    if let Some(at) = (0..end).find(|&i| ours[i] != slirp[i]) {
        panic!(
            "{what}: first difference at byte {at}\n ours: {:02x?}\nslirp: {:02x?}",
            &ours[..end],
            &slirp[..end]
        );
    }
    assert_eq!(packet_end(ours), end, "{what}: our packet's own length");
    for (side, frame) in [("ours", ours), ("slirp's", slirp)] {
        assert!(
            frame[end..].iter().all(|&b| b == 0),
            "{what}: {side} padding is not zeros"
        );
    }
}

/// Compares every exchange of `kind`: the same number of answers, each the same. Returns how
/// many answers were compared, so that a test cannot pass on a capture without any.
fn compare(exchanges: &[Exchange], kind_wanted: Kind) -> usize {
    let mut compared = 0;
    for (i, x) in exchanges.iter().enumerate() {
        if kind(&x.request) != kind_wanted {
            continue;
        }
        let what = format!("guest frame {i} ({kind_wanted:?})");
        assert_eq!(
            x.ours.len(),
            x.slirp.len(),
            "{what}: answers, ours and slirp's"
        );
        for (ours, slirp) in x.ours.iter().zip(&x.slirp) {
            assert_same(ours, slirp, &what);
            compared += 1;
        }
    }
    compared
}

#[test]
fn arp_replies_match_slirp() {
    assert_eq!(compare(&plain(), Kind::Arp), 1);
}

#[test]
fn dhcp_offer_and_ack_match_slirp() {
    assert_eq!(compare(&plain(), Kind::Dhcp), 2);
    // With a boot file: its name (option 67) and the TFTP server's address.
    assert_eq!(compare(&with_bootfile(), Kind::Dhcp), 2);
}

#[test]
fn echo_replies_from_the_gateway_match_slirp() {
    let exchanges = plain();
    assert_eq!(compare(&exchanges, Kind::Ping), 2);
    assert_eq!(compare(&exchanges, Kind::Ping6), 1);
}

#[test]
fn router_and_neighbour_advertisements_match_slirp() {
    let exchanges = plain();
    // How many the kernel sent depends on timing; each one slirp answered is compared.
    assert!(compare(&exchanges, Kind::RouterSolicitation) >= 1);
    assert!(compare(&exchanges, Kind::NeighborSolicitation) >= 1);
}

#[test]
fn tftp_option_ack_and_data_match_slirp() {
    // The read request asks for tsize: an OACK, then two DATA blocks, then nothing for the
    // last ACK.
    assert_eq!(compare(&plain(), Kind::Tftp), 3);
    assert_eq!(compare(&with_bootfile(), Kind::Tftp), 3);
}

#[test]
fn what_slirp_leaves_unanswered_gets_at_most_slirps_advertisement() {
    let exchanges = plain();
    let advertisement = exchanges
        .iter()
        .find(|x| kind(&x.request) == Kind::RouterSolicitation)
        .map(|x| x.slirp[0].clone())
        .expect("slirp's answer to the router solicitation");
    let mut unanswered = 0;
    for (i, x) in exchanges.iter().enumerate() {
        if kind(&x.request) != Kind::Other {
            continue;
        }
        unanswered += 1;
        assert!(x.slirp.is_empty(), "guest frame {i}: slirp answered");
        for ours in &x.ours {
            assert_same(
                ours,
                &advertisement,
                &format!("our answer to guest frame {i}"),
            );
        }
    }
    assert!(
        unanswered >= 4,
        "MLD and DAD frames in the capture: {unanswered}"
    );
}

/// The DHCPv6 options of a reply frame (UDP at 54, the message at 62), in order.
fn dhcpv6_options(frame: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut opts = &frame[66..packet_end(frame)];
    let mut list = Vec::new();
    while !opts.is_empty() {
        let (code, len) = (be16(opts, 0), usize::from(be16(opts, 2)));
        list.push((code, opts[4..4 + len].to_vec()));
        opts = &opts[4 + len..];
    }
    list
}

/// A boot-file URL `tftp://[ADDRESS]/FILE` as its address and file.
fn boot_url(url: &[u8]) -> (Ipv6Addr, String) {
    let url = std::str::from_utf8(url).expect("a URL");
    let rest = url.strip_prefix("tftp://[").expect(url);
    let (addr, file) = rest.split_once("]/").expect(url);
    (addr.parse().expect(url), file.to_owned())
}

/// DHCPv6 replies are slirp's in every field but three, where slirp (libslirp 4.7, QEMU 7.2)
/// is wrong and we do not copy it:
/// - the UDP source port: slirp byte-swaps 547 and sends from 8962; we send from 547 (RFC
///   8415 section 7.2). The guest's client takes either, as it did in the capture.
/// - the boot-file URL (option 59) when no boot file is set: slirp sends
///   `tftp://[…]/(null)`; we leave the option out.
/// - the address in the boot-file URL: slirp writes all eight groups in full
///   (`fec0:0000:…:0002`), we write the usual form (`fec0::2`); the same address.
///
/// So the IPv6 payload length and UDP length and checksum differ with them; ours are checked
/// to be right instead.
#[test]
fn dhcpv6_replies_match_slirp_but_for_its_bugs() {
    let mut compared = 0;
    for (exchanges, bootfile) in [(plain(), false), (with_bootfile(), true)] {
        for (i, x) in exchanges.iter().enumerate() {
            if kind(&x.request) != Kind::Dhcpv6 {
                continue;
            }
            let what = format!("guest frame {i} (DHCPv6, boot file {bootfile})");
            assert_eq!((x.ours.len(), x.slirp.len()), (1, 1), "{what}: answers");
            let (ours, slirp) = (&x.ours[0], &x.slirp[0]);
            // Ethernet, IPv6 version, class and flow label; then next header, hop limit and
            // addresses; then the destination port and the message up to its options.
            for range in [0..18, 20..54, 56..58, 62..66] {
                assert_eq!(
                    ours[range.clone()],
                    slirp[range.clone()],
                    "{what}: {range:?}"
                );
            }
            assert_eq!(
                be16(slirp, 54),
                547u16.swap_bytes(),
                "{what}: slirp's source port"
            );
            assert_eq!(be16(ours, 54), 547, "{what}: our source port");
            let ip = Ipv6Packet::new_checked(&ours[14..]).expect("our IPv6 header");
            let udp = UdpPacket::new_checked(ip.payload()).expect("our UDP header");
            assert_eq!(
                usize::from(udp.len()),
                ip.payload().len(),
                "{what}: UDP length"
            );
            let (src, dst) = (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            );
            assert!(udp.verify_checksum(&src, &dst), "{what}: our UDP checksum");

            let mut want = dhcpv6_options(slirp);
            let url = want.pop().expect("slirp's last option");
            assert_eq!(url.0, 59, "{what}: slirp's boot-file URL comes last");
            let (addr, file) = boot_url(&url.1);
            assert_eq!(addr, "fec0::2".parse::<Ipv6Addr>().unwrap(), "{what}");
            let mut ours_opts = dhcpv6_options(ours);
            if bootfile {
                assert_eq!(file, "two-blocks.txt", "{what}: slirp's URL");
                let our_url = ours_opts.pop().expect("our boot-file URL");
                assert_eq!(our_url.0, 59, "{what}");
                assert_eq!(boot_url(&our_url.1), (addr, file), "{what}: our URL");
            } else {
                assert_eq!(file, "(null)", "{what}: slirp's URL without a boot file");
            }
            assert_eq!(
                ours_opts, want,
                "{what}: the other options (client ID, DNS)"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 4, "two requests in each capture");
}
