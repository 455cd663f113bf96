//! DHCPv4 answers, driven through the engine as a guest would send them.

mod common;

use std::net::Ipv4Addr;

use common::*;
use netcore::Engine;
use netplan::{MacAddr, NetPlan};

const NO_ADDR: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

fn engine() -> Engine {
    Engine::isolated(NetPlan::slirp_default())
}

fn ask(e: &mut Engine, frame: &[u8]) -> DhcpAnswer {
    let plan = e.plan().clone();
    let reply = run_one(e, frame);
    parse_dhcp_answer(&reply, plan.gateway_mac, plan.ipv4.unwrap().gateway)
}

fn discover(e: &mut Engine, mac: MacAddr) -> DhcpAnswer {
    ask(e, &dhcp_frame(mac, Some(DISCOVER), None, NO_ADDR))
}

fn request(e: &mut Engine, mac: MacAddr, addr: Ipv4Addr) -> DhcpAnswer {
    ask(e, &dhcp_frame(mac, Some(REQUEST), Some(addr), NO_ADDR))
}

fn pool(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2, 15 + n)
}

/// The options area slirp writes for a default OFFER/ACK, byte for byte.
fn default_options(msg_type: u8) -> Vec<u8> {
    let mut o = vec![99, 130, 83, 99];
    o.extend_from_slice(&[53, 1, msg_type]);
    o.extend_from_slice(&[54, 4, 10, 0, 2, 2]);
    o.extend_from_slice(&[1, 4, 255, 255, 255, 0]);
    o.extend_from_slice(&[3, 4, 10, 0, 2, 2]);
    o.extend_from_slice(&[6, 4, 10, 0, 2, 3]);
    o.extend_from_slice(&[51, 4, 0x00, 0x01, 0x51, 0x80]);
    o.push(255);
    o.resize(312, 0);
    o
}

#[test]
fn discover_gets_exact_offer() {
    let mut e = engine();
    let a = discover(&mut e, GUEST_MAC);
    assert_eq!(a.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
    assert_eq!(a.siaddr, GATEWAY);
    assert_eq!(a.xid, 0xdead_beef);
    assert_eq!(a.flags, 0, "flags left zero, as slirp does");
    assert_eq!(&a.chaddr[..6], &GUEST_MAC.0);
    assert_eq!(&a.chaddr[6..], &[0; 10]);
    assert!(a.file.is_empty());
    assert_eq!(a.codes(), [53, 54, 1, 3, 6, 51]);
    assert_eq!(a.options_area, default_options(OFFER));
    assert_eq!(a.ip_ident, 0, "first IPv4 packet of the engine");
    assert_eq!(e.counters().dhcp_replies, 1);
}

#[test]
fn request_gets_ack_and_ids_count_up() {
    let mut e = engine();
    let offer = discover(&mut e, GUEST_MAC);
    let ack = request(&mut e, GUEST_MAC, offer.yiaddr);
    assert_eq!(ack.yiaddr, pool(0));
    assert_eq!(ack.options_area, default_options(ACK));
    assert_eq!(ack.ip_ident, offer.ip_ident + 1);
    // Renewing: same answer again.
    let again = request(&mut e, GUEST_MAC, pool(0));
    assert_eq!(again.yiaddr, pool(0));
    assert_eq!(again.option(53), Some(&[ACK][..]));
}

#[test]
fn request_from_ciaddr_without_option_50() {
    let mut e = engine();
    let a = ask(&mut e, &dhcp_frame(GUEST_MAC, Some(REQUEST), None, pool(3)));
    assert_eq!(a.option(53), Some(&[ACK][..]));
    assert_eq!(a.yiaddr, pool(3));
}

#[test]
fn request_without_any_address_finds_or_allocates() {
    let mut e = engine();
    // Never seen: allocated (slirp's "windows fix").
    let a = ask(&mut e, &dhcp_frame(GUEST_MAC, Some(REQUEST), None, NO_ADDR));
    assert_eq!((a.option(53), a.yiaddr), (Some(&[ACK][..]), pool(0)));
    // A second client takes .17 explicitly; asking again without an address finds it.
    request(&mut e, guest_mac(2), pool(2));
    let b = ask(
        &mut e,
        &dhcp_frame(guest_mac(2), Some(REQUEST), None, NO_ADDR),
    );
    assert_eq!(b.yiaddr, pool(2));
}

#[test]
fn second_client_gets_next_address_and_pool_of_16() {
    let mut e = engine();
    assert_eq!(discover(&mut e, guest_mac(0)).yiaddr, pool(0));
    assert_eq!(discover(&mut e, guest_mac(1)).yiaddr, pool(1));
    // The first client asks again: still its own.
    assert_eq!(discover(&mut e, guest_mac(0)).yiaddr, pool(0));
    for n in 2..16 {
        assert_eq!(discover(&mut e, guest_mac(n)).yiaddr, pool(n));
    }
    assert_eq!(pool(15), Ipv4Addr::new(10, 0, 2, 30));
    // The 17th client is ignored: no answer, nothing counted against the guest.
    assert!(
        run(
            &mut e,
            &dhcp_frame(guest_mac(16), Some(DISCOVER), None, NO_ADDR)
        )
        .is_empty()
    );
    assert!(
        run(
            &mut e,
            &dhcp_frame(guest_mac(16), Some(REQUEST), None, NO_ADDR)
        )
        .is_empty()
    );
    let c = e.counters();
    assert_eq!((c.tx_malformed, c.tx_unhandled, c.dhcp_replies), (0, 0, 17));
    // Known clients are still served.
    assert_eq!(
        request(&mut e, guest_mac(7), pool(7)).option(53),
        Some(&[ACK][..])
    );
}

#[test]
fn pool_size_follows_the_plan() {
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.pool_size = 2;
    let mut e = Engine::isolated(plan);
    assert_eq!(discover(&mut e, guest_mac(0)).yiaddr, pool(0));
    assert_eq!(discover(&mut e, guest_mac(1)).yiaddr, pool(1));
    assert!(
        run(
            &mut e,
            &dhcp_frame(guest_mac(2), Some(DISCOVER), None, NO_ADDR)
        )
        .is_empty()
    );
    // .17 is outside this pool.
    assert_eq!(
        request(&mut e, guest_mac(0), pool(2)).option(53),
        Some(&[NAK][..])
    );
}

fn assert_nak(a: &DhcpAnswer) {
    let mut o = vec![99, 130, 83, 99, 53, 1, NAK, 56, 31];
    o.extend_from_slice(b"requested address not available");
    o.push(255);
    o.resize(312, 0);
    assert_eq!(a.options_area, o);
    assert_eq!(a.yiaddr, Ipv4Addr::BROADCAST, "slirp's NAK quirk");
    assert_eq!(a.option(54), None);
    assert_eq!(a.siaddr, GATEWAY);
}

#[test]
fn request_for_another_clients_address_is_naked() {
    let mut e = engine();
    assert_eq!(discover(&mut e, guest_mac(1)).yiaddr, pool(0));
    let a = request(&mut e, guest_mac(2), pool(0));
    assert_nak(&a);
    // The NAK took nothing: the second client is offered the next address.
    assert_eq!(discover(&mut e, guest_mac(2)).yiaddr, pool(1));
}

#[test]
fn request_outside_the_pool_is_naked() {
    let mut e = engine();
    for addr in [
        Ipv4Addr::new(10, 0, 2, 14),
        Ipv4Addr::new(10, 0, 2, 31),
        Ipv4Addr::new(10, 0, 2, 100),
        Ipv4Addr::new(192, 168, 122, 50),
    ] {
        assert_nak(&request(&mut e, GUEST_MAC, addr));
    }
    // ciaddr outside the pool, without option 50: NAK too.
    assert_nak(&ask(
        &mut e,
        &dhcp_frame(
            GUEST_MAC,
            Some(REQUEST),
            None,
            Ipv4Addr::new(192, 168, 1, 9),
        ),
    ));
}

#[test]
fn request_may_take_a_free_address_other_than_offered() {
    let mut e = engine();
    assert_eq!(discover(&mut e, GUEST_MAC).yiaddr, pool(0));
    let a = request(&mut e, GUEST_MAC, pool(5));
    assert_eq!((a.option(53), a.yiaddr), (Some(&[ACK][..]), pool(5)));
}

#[test]
fn discover_honours_a_free_requested_address() {
    let mut e = engine();
    let a = ask(
        &mut e,
        &dhcp_frame(GUEST_MAC, Some(DISCOVER), Some(pool(9)), NO_ADDR),
    );
    assert_eq!(a.yiaddr, pool(9));
    // Taken by someone else, or outside the pool: the lowest free slot instead.
    let b = ask(
        &mut e,
        &dhcp_frame(guest_mac(2), Some(DISCOVER), Some(pool(9)), NO_ADDR),
    );
    assert_eq!(b.yiaddr, pool(0));
    let c = ask(
        &mut e,
        &dhcp_frame(
            guest_mac(3),
            Some(DISCOVER),
            Some(Ipv4Addr::new(10, 0, 2, 99)),
            NO_ADDR,
        ),
    );
    assert_eq!(c.yiaddr, pool(1));
}

#[test]
fn plain_bootp_is_answered_as_ack() {
    let mut e = engine();
    let a = ask(&mut e, &dhcp_frame(GUEST_MAC, None, None, NO_ADDR));
    assert_eq!(a.options_area, default_options(ACK));
    assert_eq!(a.yiaddr, pool(0));
    // ciaddr is only read for a DHCPREQUEST proper, so BOOTP keeps its slot.
    let b = ask(&mut e, &dhcp_frame(GUEST_MAC, None, None, pool(4)));
    assert_eq!(b.yiaddr, pool(0));
    // No magic cookie at all: still BOOTP.
    let mut raw = bootp(guest_mac(9), 1, NO_ADDR, &[]);
    raw[236..240].fill(0);
    let c = ask(
        &mut e,
        &dhcp_frame_raw(guest_mac(9), Ipv4Addr::BROADCAST, &raw),
    );
    assert_eq!((c.option(53), c.yiaddr), (Some(&[ACK][..]), pool(1)));
    // Only the 236 fixed bytes.
    let raw = bootp(guest_mac(10), 1, NO_ADDR, &[]);
    let d = ask(
        &mut e,
        &dhcp_frame_raw(guest_mac(10), Ipv4Addr::BROADCAST, &raw[..236]),
    );
    assert_eq!(d.yiaddr, pool(2));
}

#[test]
fn release_decline_inform_are_consumed_silently() {
    let mut e = engine();
    assert_eq!(discover(&mut e, GUEST_MAC).yiaddr, pool(0));
    for t in [RELEASE, DECLINE, INFORM] {
        assert!(
            run(
                &mut e,
                &dhcp_frame(GUEST_MAC, Some(t), Some(pool(0)), pool(0))
            )
            .is_empty()
        );
    }
    let c = e.counters();
    assert_eq!((c.tx_malformed, c.tx_unhandled), (0, 0));
    // Slots are never freed: another client cannot have .15.
    assert_nak(&request(&mut e, guest_mac(2), pool(0)));
}

#[test]
fn sent_to_the_gateway_address_is_served_too() {
    let mut e = engine();
    let raw = bootp(GUEST_MAC, 7, NO_ADDR, &[(53, &[DISCOVER])]);
    let a = ask(&mut e, &dhcp_frame_raw(GUEST_MAC, GATEWAY, &raw));
    assert_eq!(a.xid, 7);
    // The subnet broadcast and other hosts are not the DHCP server.
    for dst in [Ipv4Addr::new(10, 0, 2, 255), DNS, Ipv4Addr::new(8, 8, 8, 8)] {
        assert!(run(&mut e, &dhcp_frame_raw(GUEST_MAC, dst, &raw)).is_empty());
    }
    assert_eq!(e.counters().dhcp_replies, 1);
}

#[test]
fn restrict_omits_router_and_dns() {
    let mut plan = NetPlan::slirp_default();
    plan.restrict = true;
    let mut e = Engine::isolated(plan);
    let a = discover(&mut e, GUEST_MAC);
    assert_eq!(a.codes(), [53, 54, 1, 51]);
}

#[test]
fn configured_options_in_slirp_order() {
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.hostname = Some("guest".into());
    plan.dhcp.domain_name = Some("example.com".into());
    plan.dhcp.tftp_server_name = Some("tftp.example.com".into());
    plan.dhcp.search = vec!["example.com".into(), "corp.example.com".into()];
    plan.dhcp.bootfile = Some("https://boot.example.com/efi".into());
    plan.dhcp.lease_secs = 3600;
    plan.dhcp.mtu_option = Some(65520);
    let mut e = Engine::isolated(plan);
    let a = discover(&mut e, GUEST_MAC);
    assert_eq!(a.codes(), [53, 54, 1, 3, 6, 51, 26, 12, 15, 66, 119, 60]);
    assert_eq!(a.option(51), Some(&[0, 0, 0x0e, 0x10][..]));
    assert_eq!(a.option(26), Some(&[0xff, 0xf0][..]));
    assert_eq!(a.option(12), Some(&b"guest"[..]));
    assert_eq!(a.option(15), Some(&b"example.com"[..]));
    assert_eq!(a.option(66), Some(&b"tftp.example.com"[..]));
    assert_eq!(a.option(60), Some(&b"HTTPClient"[..]));
    assert_eq!(a.file, b"https://boot.example.com/efi");
    // RFC 3397 with compression: corp.example.com points at example.com (offset 0).
    let mut search = vec![7];
    search.extend_from_slice(b"example");
    search.push(3);
    search.extend_from_slice(b"com");
    search.push(0);
    search.push(4);
    search.extend_from_slice(b"corp");
    search.extend_from_slice(&[0xc0, 0x00]);
    assert_eq!(a.option(119), Some(&search[..]));
    assert_eq!(search.len(), 20);
}

#[test]
fn plain_bootfile_has_no_vendor_class_and_is_cut_at_127_bytes() {
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.bootfile = Some("pxelinux.0".into());
    let mut e = Engine::isolated(plan);
    let a = discover(&mut e, GUEST_MAC);
    assert_eq!(a.file, b"pxelinux.0");
    assert_eq!(a.option(60), None);

    let mut plan = NetPlan::slirp_default();
    plan.dhcp.bootfile = Some("x".repeat(200));
    let mut e = Engine::isolated(plan);
    let a = discover(&mut e, GUEST_MAC);
    assert_eq!(a.file.len(), 127);
}

#[test]
fn oversized_options_are_dropped_not_overrun() {
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.hostname = Some("h".repeat(255));
    plan.dhcp.domain_name = Some("d".repeat(200));
    plan.dhcp.search = (0..30).map(|i| format!("name{i}.zone{i}.test")).collect();
    let mut e = Engine::isolated(plan);
    let a = discover(&mut e, GUEST_MAC);
    assert_eq!(a.codes(), [53, 54, 1, 3, 6, 51, 12]);
}

#[test]
fn long_search_lists_split_into_chunks() {
    let mut plan = NetPlan::slirp_default();
    // 22 bytes for the first name, 15 for each other (pointer to "example"): 262 in all.
    plan.dhcp.search = (0..17)
        .map(|i| format!("host{i:02}.lab{i:02}.example"))
        .collect();
    let mut e = Engine::isolated(plan);
    let a = discover(&mut e, GUEST_MAC);
    let chunks: Vec<usize> = a
        .options
        .iter()
        .filter(|(c, _)| *c == 119)
        .map(|(_, d)| d.len())
        .collect();
    assert_eq!(chunks, [255, 7]);
}

#[test]
fn bad_checksums_and_lengths_are_malformed() {
    let mut e = engine();
    let good = dhcp_frame(GUEST_MAC, Some(DISCOVER), None, NO_ADDR);
    let udp_start = 14 + 20;

    let mut bad_udp = good.clone();
    bad_udp[udp_start + 6] ^= 0x55;
    assert!(run(&mut e, &bad_udp).is_empty());

    let mut bad_ip = good.clone();
    bad_ip[14 + 10] ^= 0x55;
    assert!(run(&mut e, &bad_ip).is_empty());

    // UDP length beyond the IP payload.
    let mut long_udp = good.clone();
    long_udp[udp_start + 4..udp_start + 6].copy_from_slice(&1000u16.to_be_bytes());
    long_udp[udp_start + 6..udp_start + 8].fill(0);
    assert!(run(&mut e, &long_udp).is_empty());

    // Too short to be BOOTP.
    let short = dhcp_frame_raw(GUEST_MAC, Ipv4Addr::BROADCAST, &[1u8; 100]);
    assert!(run(&mut e, &short).is_empty());

    // Frame cut short of the IP total length.
    assert!(run(&mut e, &good[..good.len() - 1]).is_empty());

    assert_eq!(e.counters().tx_malformed, 5);
    assert_eq!(e.counters().dhcp_replies, 0);

    // A zero UDP checksum means "none" and is accepted.
    let mut no_sum = good.clone();
    no_sum[udp_start + 6..udp_start + 8].fill(0);
    assert_eq!(run(&mut e, &no_sum).len(), 1);
}

#[test]
fn bootreply_from_guest_and_no_ipv4_plan_are_unhandled() {
    let mut e = engine();
    let mut raw = bootp(GUEST_MAC, 1, NO_ADDR, &[(53, &[DISCOVER])]);
    raw[0] = 2;
    assert!(
        run(
            &mut e,
            &dhcp_frame_raw(GUEST_MAC, Ipv4Addr::BROADCAST, &raw)
        )
        .is_empty()
    );
    assert_eq!(e.counters().tx_unhandled, 1);

    let mut plan = NetPlan::slirp_default();
    plan.ipv4 = None;
    let mut e = Engine::isolated(plan);
    assert!(
        run(
            &mut e,
            &dhcp_frame(GUEST_MAC, Some(DISCOVER), None, NO_ADDR)
        )
        .is_empty()
    );
    assert_eq!(e.counters().dhcp_replies, 0);
}

#[test]
fn options_parse_like_slirp() {
    let mut e = engine();
    // The last message type wins; a short option 50 is ignored; pads are skipped.
    let raw = bootp(
        GUEST_MAC,
        1,
        NO_ADDR,
        &[
            (53, &[DISCOVER]),
            (50, &[10, 0, 2]),
            (53, &[REQUEST]),
            (0, &[]),
        ],
    );
    let a = ask(
        &mut e,
        &dhcp_frame_raw(GUEST_MAC, Ipv4Addr::BROADCAST, &raw),
    );
    assert_eq!(a.option(53), Some(&[ACK][..]));
    assert_eq!(a.yiaddr, pool(0));
    // An option running past the end of the datagram stops parsing, nothing worse.
    let mut raw = bootp(guest_mac(2), 1, NO_ADDR, &[(53, &[DISCOVER])]);
    raw.truncate(243);
    raw.extend_from_slice(&[50, 200, 1]);
    let b = ask(
        &mut e,
        &dhcp_frame_raw(guest_mac(2), Ipv4Addr::BROADCAST, &raw),
    );
    assert_eq!((b.option(53), b.yiaddr), (Some(&[OFFER][..]), pool(1)));
}
