//! The lease table's allocation rules and the options writer's bounds.

use super::message::{OPT_END, OPTIONS_LEN};
use super::*;

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0x12, 0x34, last])
}

fn server(pool: u8) -> Server {
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.pool_size = pool;
    Server::new(&plan)
}

#[test]
fn slots_follow_slirp_allocation() {
    let start = Ipv4Addr::new(10, 0, 2, 15);
    let mut s = server(4);
    assert_eq!(s.new_slot(mac(1)), Some(0));
    s.slots[0] = Some(mac(1));
    assert_eq!(s.new_slot(mac(1)), Some(0));
    assert_eq!(s.new_slot(mac(2)), Some(1));
    assert_eq!(s.find_slot(mac(2)), None);
    // A requested address: in the pool and free or own.
    assert_eq!(
        s.request_slot(start, Ipv4Addr::new(10, 0, 2, 17), mac(2)),
        Some(2)
    );
    assert_eq!(s.request_slot(start, start, mac(2)), None);
    assert_eq!(s.request_slot(start, start, mac(1)), Some(0));
    assert_eq!(
        s.request_slot(start, Ipv4Addr::new(10, 0, 2, 19), mac(2)),
        None
    );
    assert_eq!(
        s.request_slot(start, Ipv4Addr::new(10, 0, 2, 14), mac(2)),
        None
    );
    // A client holding a higher slot still gets the lowest free one from get_new_addr.
    s.slots[3] = Some(mac(3));
    assert_eq!(s.new_slot(mac(3)), Some(1));
    assert_eq!(s.find_slot(mac(3)), Some(3));
}

#[test]
fn options_never_overrun_and_keep_room_for_end() {
    let mut o = Options::new();
    let long = [b'x'; 255];
    assert!(o.put(OPT_HOSTNAME, &long));
    assert!(!o.put(OPT_DOMAIN_NAME, &long));
    assert!(!o.put(OPT_DOMAIN_NAME, &[b'y'; 300]));
    // 4 + 257 = 261 used; 312 - 261 - 2 = 49 bytes of value would touch the end.
    assert!(!o.put(OPT_DOMAIN_NAME, &[b'y'; 49]));
    assert!(o.put(OPT_DOMAIN_NAME, &[b'y'; 48]));
    assert_eq!(o.pos, OPTIONS_LEN - 1);
    o.end();
    assert_eq!(o.buf[OPTIONS_LEN - 1], OPT_END);
    assert!(!o.put_raw(&[1]));
}
