//! Guest forwards and the smb share, resolved from `--slirp` under both profiles.

use super::*;
use crate::frontend::slirp;
use crate::request::{RawGuestForward, Setting};
use crate::{GuestForward, SmbShare};

/// Resolve `--slirp OPTS` under the slirp profile.
/// Warnings come back as the text the daemon prints.
fn slirp(opts: &str) -> Result<(NetPlan, Vec<String>), ConfigError> {
    let (plan, w) = resolve(Profile::Slirp, slirp::parse(opts)?)?;
    Ok((plan, w.iter().map(ToString::to_string).collect()))
}

fn slirp_ok(opts: &str) -> (NetPlan, Vec<String>) {
    slirp(opts).unwrap_or_else(|e| panic!("{opts}: {e}"))
}

fn slirp_err(opts: &str) -> String {
    match slirp(opts) {
        Ok((plan, _)) => panic!("{opts}: expected an error, got {plan:?}"),
        Err(e) => e.to_string(),
    }
}

const QEMU: &str = "(QEMU: Conflicting/invalid host:port in guest forwarding rule)";

#[test]
fn guest_forward_plan() {
    let (plan, w) =
        slirp_ok("guestfwd=tcp:10.0.2.100:1234-cmd:netcat 127.0.0.1 4321,guestfwd=::1234-cmd:cat");
    assert_eq!(
        plan.guest_forwards,
        vec![
            GuestForward {
                addr: Ipv4Addr::new(10, 0, 2, 100),
                port: 1234,
                command: "netcat 127.0.0.1 4321".into(),
                argv: vec!["netcat".into(), "127.0.0.1".into(), "4321".into()],
            },
            GuestForward {
                addr: Ipv4Addr::new(10, 0, 2, 4),
                port: 1234,
                command: "cat".into(),
                argv: vec!["cat".into()],
            },
        ]
    );
    assert!(w.is_empty(), "{w:?}");
    assert!(slirp_ok("").0.guest_forwards.is_empty());
}

/// Checked against QEMU 7.2 with libslirp 4.7.0: `net=192.168.76.0/24,host=192.168.76.4`
/// refuses an empty SERVER as "Conflicting/invalid", and so does `net=192.168.76.0/23`.
#[test]
fn guest_forward_default_address_is_0_0_2_4_in_the_network() {
    let default_addr = |opts: &str| slirp_ok(opts).0.guest_forwards[0].addr.to_string();
    for (net, want) in [
        ("", "10.0.2.4"),
        ("net=10.0.2.0/24,", "10.0.2.4"),
        ("net=10.0.0.0/8,", "10.0.2.4"),
        ("net=192.168.76.0/24,", "192.168.76.4"),
        ("net=192.168.76.0/23,", "192.168.76.4"),
        ("net=192.168.0.0/16,", "192.168.2.4"),
        (
            "net=10.0.2.0/30,dhcpstart=10.0.2.1,host=10.0.2.2,dns=10.0.2.3,",
            "10.0.2.0",
        ),
    ] {
        assert_eq!(
            default_addr(&format!("{net}guestfwd=::80-cmd:cat")),
            want,
            "{net}"
        );
    }
    // 0.0.0.0 is "not given" to libslirp too.
    assert_eq!(
        default_addr("net=192.168.76.0/24,guestfwd=tcp:0.0.0.0:80-cmd:cat"),
        "192.168.76.4"
    );
    assert_eq!(
        slirp_err("net=192.168.76.0/24,host=192.168.76.4,guestfwd=::80-cmd:cat"),
        format!(
            "--slirp guestfwd=::80-cmd:cat: the default address 192.168.76.4 is the gateway; \
             a guest forward needs another address of 192.168.76.0/24 {QEMU}"
        )
    );
}

#[test]
fn guest_forward_refuses_what_slirp_answers_itself() {
    let cases = [
        ("tcp:10.0.2.2:1234-cmd:cat", "10.0.2.2 is the gateway"),
        ("tcp:10.0.2.3:1234-cmd:cat", "10.0.2.3 is the DNS address"),
        ("tcp:10.0.2.3:53-cmd:cat", "10.0.2.3 is the DNS address"),
    ];
    for (rule, what) in cases {
        assert_eq!(
            slirp_err(&format!("guestfwd={rule}")),
            format!(
                "--slirp guestfwd={rule}: {what}; a guest forward needs another address \
                 of 10.0.2.0/24 {QEMU}"
            )
        );
    }
    assert_eq!(
        slirp_err("guestfwd=tcp:192.168.9.1:1234-cmd:cat"),
        format!(
            "--slirp guestfwd=tcp:192.168.9.1:1234-cmd:cat: 192.168.9.1 is outside \
             10.0.2.0/24; a guest forward needs an address of 10.0.2.0/24 {QEMU}"
        )
    );
    // A moved gateway or DNS address takes the default address with it.
    assert_eq!(
        slirp_err("host=10.0.2.4,guestfwd=::80-cmd:cat"),
        format!(
            "--slirp guestfwd=::80-cmd:cat: the default address 10.0.2.4 is the gateway; \
             a guest forward needs another address of 10.0.2.0/24 {QEMU}"
        )
    );
    assert!(
        slirp_err("dns=10.0.2.4,guestfwd=::80-cmd:cat")
            .contains("the default address 10.0.2.4 is the DNS address"),
    );
    // Network, broadcast and any other address of the network: accepted, as by QEMU.
    for a in ["10.0.2.0", "10.0.2.255", "10.0.2.100", "10.0.2.15"] {
        let (plan, _) = slirp_ok(&format!("guestfwd=tcp:{a}:1234-cmd:cat"));
        assert_eq!(plan.guest_forwards[0].addr.to_string(), a);
    }
}

#[test]
fn guest_forward_needs_ipv4() {
    assert_eq!(
        slirp_err("ipv4=off,guestfwd=tcp:10.0.2.100:1234-cmd:cat"),
        "--slirp guestfwd=tcp:10.0.2.100:1234-cmd:cat: a guest forward needs IPv4, which \
         is disabled by --slirp ipv4=off"
    );
    assert!(
        slirp_err("ipv6=on,guestfwd=::1234-cmd:cat")
            .ends_with("disabled by --slirp ipv6=on (without ipv4=on)")
    );
}

#[test]
fn guest_forwards_on_one_address_and_port_conflict() {
    assert_eq!(
        slirp_err(
            "guestfwd=::80-cmd:a,guestfwd=tcp:10.0.2.9:80-cmd:b,guestfwd=tcp:10.0.2.4:80-cmd:c"
        ),
        "--slirp guestfwd=::80-cmd:a and --slirp guestfwd=tcp:10.0.2.4:80-cmd:c both forward \
         guest connections to 10.0.2.4:80"
    );
    let (plan, _) = slirp_ok("guestfwd=::80-cmd:a,guestfwd=::81-cmd:a,guestfwd=:10.0.2.5:80-cmd:a");
    assert_eq!(plan.guest_forwards.len(), 3);
}

#[test]
fn guest_forward_in_the_dhcp_pool_warns() {
    for (a, warns) in [
        ("10.0.2.14", false),
        ("10.0.2.15", true),
        ("10.0.2.30", true),
        ("10.0.2.31", false),
    ] {
        let rule = format!("guestfwd=tcp:{a}:22-cmd:cat");
        let (_, w) = slirp_ok(&rule);
        let want = format!(
            "--slirp {rule}: {a} is an address the DHCP server hands out \
             (10.0.2.15-10.0.2.30): the guest that gets it cannot reach this guest forward"
        );
        assert_eq!(w.contains(&want), warns, "{a}: {w:?}");
        assert_eq!(w.len(), usize::from(warns), "{a}: {w:?}");
    }
}

/// The passt profile has no front end with guest forwards, but applies the same rules to
/// its own network when handed one.
#[test]
fn guest_forwards_under_the_passt_profile() {
    let with = |addr: Option<Ipv4Addr>| {
        let mut req = Request {
            v4_addr: Some(Setting::new(
                Ipv4Addr::new(192, 168, 1, 10),
                "--address 192.168.1.10/24",
            )),
            v4_prefix: Some(Setting::new(24, "--address 192.168.1.10/24")),
            ..Request::default()
        };
        req.guest_forwards.push(Setting::new(
            RawGuestForward {
                addr,
                port: 7,
                command: "cat".into(),
                argv: vec!["cat".into()],
            },
            "a guest forward",
        ));
        resolve(Profile::Passt, req)
            .map(|(plan, w)| (plan, w.iter().map(ToString::to_string).collect::<Vec<_>>()))
    };
    // Gateway 192.168.1.1, DNS 192.168.1.3, guest 192.168.1.10.
    let (plan, w) = with(None).unwrap();
    assert_eq!(plan.guest_forwards[0].addr, Ipv4Addr::new(192, 168, 1, 4));
    assert!(w.is_empty(), "{w:?}");
    let e = with(Some(Ipv4Addr::new(192, 168, 2, 4)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("192.168.2.4 is outside 192.168.1.0/24"), "{e}");
    let e = with(Some(Ipv4Addr::new(192, 168, 1, 1)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("192.168.1.1 is the gateway"), "{e}");
    let (plan, w) = with(Some(Ipv4Addr::new(192, 168, 1, 10))).unwrap();
    assert_eq!(plan.guest_forwards[0].addr, Ipv4Addr::new(192, 168, 1, 10));
    assert!(
        w.contains(
            &"a guest forward: 192.168.1.10 is an address the DHCP server hands out \
              (192.168.1.10-192.168.1.10): the guest that gets it cannot reach this guest \
              forward"
                .to_string()
        ),
        "{w:?}"
    );
}

const QEMU_SMB: &str = "(QEMU: Conflicting/invalid smbserver address)";

/// The smb share of `--slirp OPTS` as `(address, export)`.
fn smb_of(opts: &str) -> (String, String) {
    let (plan, _) = slirp_ok(opts);
    let smb = plan.smb.unwrap_or_else(|| panic!("{opts}: no smb share"));
    (smb.addr.to_string(), smb.export.display().to_string())
}

#[test]
fn smb_share_plan() {
    let (plan, w) = slirp_ok("smb=/srv/share");
    assert_eq!(
        plan.smb,
        Some(SmbShare {
            addr: Ipv4Addr::new(10, 0, 2, 4),
            export: "/srv/share".into(),
        })
    );
    assert!(w.is_empty(), "{w:?}");
    // The share is no guest forward of the plan: the runtime adds those.
    assert!(plan.guest_forwards.is_empty());
    assert_eq!(slirp_ok("").0.smb, None);
    assert_eq!(slirp_ok("smbserver=10.0.2.9").0.smb, None);
    assert_eq!(
        smb_of("smb=/srv/share,smbserver=10.0.2.9"),
        ("10.0.2.9".into(), "/srv/share".into())
    );
    // restrict=on leaves it be, as libslirp's exec forwards work under restrict.
    let (plan, w) = slirp_ok("restrict=on,smb=/srv/share");
    assert!(plan.restrict);
    assert_eq!(plan.smb.unwrap().addr, Ipv4Addr::new(10, 0, 2, 4));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn smb_default_address_is_0_0_2_4_in_the_network() {
    for (opts, want) in [
        ("smb=/s", "10.0.2.4"),
        ("net=192.168.76.0/24,smb=/s", "192.168.76.4"),
        ("net=192.168.0.0/16,smb=/s", "192.168.2.4"),
        ("net=10.0.0.0/8,smb=/s", "10.0.2.4"),
        // 0.0.0.0 is "not given" to libslirp, as for a guest forward.
        (
            "net=192.168.76.0/24,smb=/s,smbserver=0.0.0.0",
            "192.168.76.4",
        ),
    ] {
        assert_eq!(smb_of(opts).0, want, "{opts}");
    }
    // The same address as an empty guestfwd SERVER.
    let (plan, _) = slirp_ok("net=192.168.76.0/24,guestfwd=::80-cmd:cat,smb=/s");
    assert_eq!(plan.smb.unwrap().addr, plan.guest_forwards[0].addr);
}

#[test]
fn smb_refuses_what_slirp_answers_itself() {
    let cases = [
        (
            "smb=/s,smbserver=10.0.3.4",
            "--slirp smbserver=10.0.3.4: 10.0.3.4 is outside 10.0.2.0/24; the smb share \
             needs an address of 10.0.2.0/24",
        ),
        (
            "smb=/s,smbserver=10.0.2.2",
            "--slirp smbserver=10.0.2.2: 10.0.2.2 is the gateway; the smb share needs \
             another address of 10.0.2.0/24",
        ),
        (
            "smb=/s,smbserver=10.0.2.3",
            "--slirp smbserver=10.0.2.3: 10.0.2.3 is the DNS address; the smb share needs \
             another address of 10.0.2.0/24",
        ),
        (
            "host=10.0.2.4,smb=/s",
            "--slirp smb=/s: the default address 10.0.2.4 is the gateway; the smb share \
             needs another address of 10.0.2.0/24",
        ),
        (
            "net=192.168.76.0/24,dns=192.168.76.4,smb=/s",
            "--slirp smb=/s: the default address 192.168.76.4 is the DNS address; the smb \
             share needs another address of 192.168.76.0/24",
        ),
        (
            "dns=10.0.2.4,smb=/s,smbserver=0.0.0.0",
            "--slirp smbserver=0.0.0.0: the default address 10.0.2.4 is the DNS address; \
             the smb share needs another address of 10.0.2.0/24",
        ),
    ];
    for (opts, want) in cases {
        assert_eq!(slirp_err(opts), format!("{want} {QEMU_SMB}"), "{opts}");
    }
}

#[test]
fn smb_needs_ipv4() {
    assert_eq!(
        slirp_err("ipv4=off,smb=/srv/share"),
        "--slirp smb=/srv/share: the smb share needs IPv4, which is disabled by --slirp \
         ipv4=off"
    );
    assert!(
        slirp_err("ipv6=on,smb=/s,smbserver=10.0.2.9")
            .starts_with("--slirp smb=/s: the smb share needs IPv4, which is disabled by")
    );
    // Without smb=, smbserver= is ignored, IPv4 or not.
    let (plan, w) = slirp_ok("ipv4=off,smbserver=10.0.2.9");
    assert!(plan.ipv4.is_none() && plan.smb.is_none());
    assert_eq!(
        w,
        ["--slirp smbserver=10.0.2.9: does nothing without smb= (QEMU ignores it too)"]
    );
}

#[test]
fn smb_conflicts_with_a_guest_forward_on_its_ports() {
    for port in [139, 445] {
        assert_eq!(
            slirp_err(&format!(
                "guestfwd=tcp:10.0.2.4:{port}-cmd:cat,smb=/srv/share"
            )),
            format!(
                "--slirp guestfwd=tcp:10.0.2.4:{port}-cmd:cat and --slirp smb=/srv/share \
                 both forward guest connections to 10.0.2.4:{port} (smbd listens on ports \
                 139 and 445)"
            )
        );
        // The smb share's address as given, and a default guestfwd SERVER.
        assert_eq!(
            slirp_err(&format!(
                "guestfwd=::22-cmd:cat,guestfwd=::{port}-cmd:cat,smb=/s,smbserver=10.0.2.4"
            )),
            format!(
                "--slirp guestfwd=::{port}-cmd:cat and --slirp smb=/s both forward guest \
                 connections to 10.0.2.4:{port} (smbd listens on ports 139 and 445)"
            )
        );
    }
    // Another port of the same address, or the same port of another address: no conflict.
    let (plan, w) =
        slirp_ok("guestfwd=tcp:10.0.2.4:1234-cmd:cat,guestfwd=tcp:10.0.2.5:445-cmd:cat,smb=/s");
    assert_eq!(plan.guest_forwards.len(), 2);
    assert_eq!(plan.smb.unwrap().addr, Ipv4Addr::new(10, 0, 2, 4));
    assert!(w.is_empty(), "{w:?}");
    let (plan, _) = slirp_ok("guestfwd=::445-cmd:cat,smb=/s,smbserver=10.0.2.9");
    assert_eq!(plan.smb.unwrap().addr, Ipv4Addr::new(10, 0, 2, 9));
}

#[test]
fn smb_in_the_dhcp_pool_warns() {
    for (a, warns) in [
        ("10.0.2.14", false),
        ("10.0.2.15", true),
        ("10.0.2.30", true),
        ("10.0.2.31", false),
    ] {
        let (plan, w) = slirp_ok(&format!("smb=/s,smbserver={a}"));
        assert_eq!(plan.smb.unwrap().addr.to_string(), a);
        let want = format!(
            "--slirp smbserver={a}: {a} is an address the DHCP server hands out \
             (10.0.2.15-10.0.2.30): the guest that gets it cannot reach the smb share"
        );
        assert_eq!(w.contains(&want), warns, "{a}: {w:?}");
        assert_eq!(w.len(), usize::from(warns), "{a}: {w:?}");
    }
}

#[test]
fn smb_needs_tcp() {
    let mut req = slirp::parse("smb=/srv/share").unwrap();
    req.services.tcp = false;
    assert_eq!(
        resolve(Profile::Slirp, req).unwrap_err().to_string(),
        "--slirp smb=/srv/share and --no-tcp: the smb share needs TCP"
    );
}
