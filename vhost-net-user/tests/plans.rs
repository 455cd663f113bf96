//! Table-driven tests of the daemon's command line as the policy crate reads it: command lines
//! (and libvirt XML) in, the guest's view out, for every front end under both profiles. The seed's four
//! symptoms each have a named test that fails on the wrong behaviour.

use clap::Parser;
use policy::{ConfigError, Inputs, NetPlan, Resolved, explain};
// The binary's own option parser: the command lines below are the daemon's.
use vhost_net_user::args::PolicyArgs;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    policy: PolicyArgs,
}

fn args(argv: &[&str]) -> PolicyArgs {
    Cli::try_parse_from(std::iter::once("vhost-net-user").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .policy
}

/// Build from a command line; `xml` is the text of the `--libvirt-xml` file named in `argv`.
fn build(argv: &[&str], xml: Option<&str>) -> Result<Resolved, ConfigError> {
    args(argv).build_with_xml(xml)
}

/// The warnings as the daemon prints them.
fn warnings(r: &Resolved) -> Vec<String> {
    r.warnings.iter().map(ToString::to_string).collect()
}

fn ok(argv: &[&str], xml: Option<&str>) -> Resolved {
    build(argv, xml).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn err(argv: &[&str], xml: Option<&str>) -> String {
    match build(argv, xml) {
        Ok(r) => panic!("{argv:?}: expected an error, got {:?}", r.plan),
        Err(e) => e.to_string(),
    }
}

const SEED_XML: &str = "<interface type='user'><mac address='52:54:00:41:2c:49'/>\
    <ip family='ipv4' address='169.254.0.0' prefix='16'/><model type='virtio'/></interface>";

fn xml_with(body: &str) -> String {
    format!(
        "<domain type='qemu'><name>g</name><devices>\
         <interface type='user'><mac address='52:54:00:41:2c:49'/>{body}<model type='virtio'/></interface>\
         </devices></domain>"
    )
}

/// The guest-visible IPv4 essentials: guest address, prefix, gateway, DNS, gateway MAC, pool.
#[derive(Debug, PartialEq)]
struct V4 {
    guest: String,
    prefix: u8,
    gateway: String,
    dns: String,
    mac: String,
    pool: u8,
}

fn v4(plan: &NetPlan) -> V4 {
    let v = plan.ipv4.as_ref().expect("IPv4 on");
    V4 {
        guest: v.dhcp_start.to_string(),
        prefix: v.prefix_len,
        gateway: v.gateway.to_string(),
        dns: v.dns.to_string(),
        mac: plan.gateway_mac.to_string(),
        pool: plan.dhcp.pool_size,
    }
}

fn want(guest: &str, prefix: u8, gateway: &str, dns: &str, mac: &str, pool: u8) -> V4 {
    V4 {
        guest: guest.into(),
        prefix,
        gateway: gateway.into(),
        dns: dns.into(),
        mac: mac.into(),
        pool,
    }
}

// ---------------------------------------------------------------- the seed's symptoms

/// Symptom 1: 169.254.0.0 handed to the guest as its address.
#[test]
fn symptom1_network_address_is_never_the_guests() {
    let r = ok(&["--libvirt-xml", "seed.xml"], Some(SEED_XML));
    let got = v4(&r.plan);
    assert_ne!(got.guest, "169.254.0.0");
    assert_eq!(
        got,
        want(
            "169.254.2.15",
            16,
            "169.254.2.2",
            "169.254.2.3",
            "52:55:a9:fe:02:02",
            16
        )
    );
    assert!(
        warnings(&r).contains(
            &"169.254.0.0 is a network address: slirp semantics give the guest 169.254.2.15"
                .to_string()
        ),
        "{:?}",
        warnings(&r)
    );

    let e = err(
        &["--libvirt-xml", "seed.xml", "--profile", "passt"],
        Some(SEED_XML),
    );
    assert!(
        e.contains("169.254.0.0 is the network address of 169.254.0.0/16"),
        "{e}"
    );
    assert!(
        e.contains("<ip family='ipv4' address='169.254.0.0' prefix='16'/>"),
        "{e}"
    );
    assert!(e.starts_with("--profile passt refuses"), "{e}");

    let e = err(
        &[
            "--profile",
            "passt",
            "--address",
            "169.254.0.0",
            "--netmask",
            "16",
        ],
        None,
    );
    assert!(e.contains("--address 169.254.0.0"), "{e}");
    assert!(e.contains("network address"), "{e}");
}

/// Symptom 2: a gateway that does not come from the domain XML (passt took the host's router).
#[test]
fn symptom2_gateway_comes_from_the_domain_xml() {
    let no_route = xml_with("<ip family='ipv4' address='169.254.2.15' prefix='16'/>");
    let r = ok(
        &["--libvirt-xml", "d.xml", "--profile", "passt"],
        Some(&no_route),
    );
    assert_eq!(
        v4(&r.plan),
        want(
            "169.254.2.15",
            16,
            "169.254.0.1",
            "169.254.2.3",
            "52:55:a9:fe:00:01",
            1
        )
    );

    let route = xml_with(
        "<ip family='ipv4' address='169.254.2.15' prefix='16'/>\
         <route family='ipv4' address='0.0.0.0' prefix='0' gateway='169.254.2.2'/>",
    );
    for profile in ["slirp", "passt"] {
        let r = ok(
            &["--libvirt-xml", "d.xml", "--profile", profile],
            Some(&route),
        );
        let got = v4(&r.plan);
        assert_eq!(got.gateway, "169.254.2.2", "--profile {profile}");
        assert_eq!(got.mac, "52:55:a9:fe:02:02", "--profile {profile}");
    }

    // A router outside the guest's subnet (the host's own, 192.0.2.1, in the seed) is refused.
    let outside = xml_with(
        "<ip family='ipv4' address='169.254.2.15' prefix='16'/>\
         <route family='ipv4' address='0.0.0.0' prefix='0' gateway='192.0.2.1'/>",
    );
    let e = err(
        &["--libvirt-xml", "d.xml", "--profile", "passt"],
        Some(&outside),
    );
    assert!(
        e.contains("192.0.2.1 is outside the guest's subnet 169.254.0.0/16"),
        "{e}"
    );
    assert!(e.contains("gateway='192.0.2.1'"), "{e}");
    let e = err(&["--libvirt-xml", "d.xml"], Some(&outside));
    assert!(
        e.contains("192.0.2.1 is outside the guest's network 169.254.0.0/16"),
        "{e}"
    );
}

/// Symptom 3: a gateway MAC equal to the guest's MAC (libvirt 9.0 passed `--mac-addr <guest MAC>`).
#[test]
fn symptom3_gateway_mac_is_never_the_guests() {
    let xml = xml_with("<ip family='ipv4' address='169.254.2.15' prefix='16'/>");
    for profile in ["slirp", "passt"] {
        let r = ok(
            &["--libvirt-xml", "d.xml", "--profile", profile],
            Some(&xml),
        );
        assert_eq!(r.guest_mac.unwrap().to_string(), "52:54:00:41:2c:49");
        assert_ne!(
            r.plan.gateway_mac,
            r.guest_mac.unwrap(),
            "--profile {profile}"
        );

        let e = err(
            &[
                "--libvirt-xml",
                "d.xml",
                "--profile",
                profile,
                "--mac-addr",
                "52:54:00:41:2c:49",
            ],
            Some(&xml),
        );
        assert!(
            e.starts_with(&format!(
                "--profile {profile} refuses --mac-addr 52:54:00:41:2c:49"
            )),
            "{e}"
        );
        assert!(
            e.contains("guest's own MAC (<mac address='52:54:00:41:2c:49'/>)"),
            "{e}"
        );
    }
    // A guest whose MAC happens to be slirp's gateway MAC is refused too.
    let clash = "<interface type='user'><mac address='52:55:0a:00:02:02'/></interface>";
    let e = err(&["--libvirt-xml", "c.xml"], Some(clash));
    assert!(e.contains("the gateway MAC 52:55:0a:00:02:02"), "{e}");
}

/// Symptom 4: a netmask other than the configured prefix (the guest got /1 for /16).
#[test]
fn symptom4_netmask_is_the_configured_prefix() {
    let cases: &[&[&str]] = &[
        &[
            "--profile",
            "passt",
            "--address",
            "169.254.2.15",
            "--netmask",
            "16",
        ],
        &[
            "--profile",
            "passt",
            "--address",
            "169.254.2.15",
            "--netmask",
            "255.255.0.0",
        ],
        &["--profile", "passt", "--address", "169.254.2.15/16"],
        &["--address", "169.254.2.15", "--netmask", "16"],
        &["--slirp", "net=169.254.0.0/16"],
        &["--slirp", "net=169.254.0.0/255.255.0.0"],
    ];
    for argv in cases {
        let r = ok(argv, None);
        let v = r.plan.ipv4.as_ref().unwrap();
        assert_eq!(v.prefix_len, 16, "{argv:?}");
        assert_eq!(v.netmask().to_string(), "255.255.0.0", "{argv:?}");
        assert_eq!(v.dhcp_start.to_string(), "169.254.2.15", "{argv:?}");
    }
    let xml = xml_with("<ip family='ipv4' address='169.254.2.15' prefix='16'/>");
    for profile in ["slirp", "passt"] {
        let r = ok(
            &["--libvirt-xml", "d.xml", "--profile", profile],
            Some(&xml),
        );
        assert_eq!(r.plan.ipv4.unwrap().netmask().to_string(), "255.255.0.0");
    }
}

// ---------------------------------------------------------------- slirp profile

#[test]
fn slirp_profile_matches_qemu() {
    let m = |ip: &str| {
        let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        format!("52:55:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    };
    // (argv, guest, prefix, gateway, dns)
    let cases: &[(&[&str], &str, u8, &str, &str)] = &[
        (&[], "10.0.2.15", 24, "10.0.2.2", "10.0.2.3"),
        (
            &["--slirp", "net=10.1.16.0/20"],
            "10.1.18.15",
            20,
            "10.1.18.2",
            "10.1.18.3",
        ),
        (
            &["--slirp", "net=100.64.7.0/25"],
            "100.64.7.15",
            25,
            "100.64.7.2",
            "100.64.7.3",
        ),
        (
            &["--slirp", "net=172.17.2.0/24,host=172.17.2.1"],
            "172.17.2.15",
            24,
            "172.17.2.1",
            "172.17.2.3",
        ),
        (
            &["--slirp", "net=172.16.0.0/16"],
            "172.16.2.15",
            16,
            "172.16.2.2",
            "172.16.2.3",
        ),
        (
            &["--slirp", "net=10.0.0.0/8"],
            "10.0.2.15",
            8,
            "10.0.2.2",
            "10.0.2.3",
        ),
        (
            &["--slirp", "net=10.9.0.0/27"],
            "10.9.0.15",
            27,
            "10.9.0.2",
            "10.9.0.3",
        ),
        (
            &["--slirp", "net=10.0.2.0/255.255.255.0"],
            "10.0.2.15",
            24,
            "10.0.2.2",
            "10.0.2.3",
        ),
        (
            &["--slirp", "net=10.0.2.77/24"],
            "10.0.2.15",
            24,
            "10.0.2.2",
            "10.0.2.3",
        ),
        // classful masks when net= has none, with QEMU's swapped classes
        (
            &["--slirp", "net=10.5.0.0"],
            "10.0.2.15",
            8,
            "10.0.2.2",
            "10.0.2.3",
        ),
        (
            &["--slirp", "net=172.20.0.0"],
            "172.16.2.15",
            12,
            "172.16.2.2",
            "172.16.2.3",
        ),
        (
            &["--slirp", "net=150.1.0.0"],
            "150.1.2.15",
            16,
            "150.1.2.2",
            "150.1.2.3",
        ),
        (
            &["--slirp", "net=192.168.50.0"],
            "192.168.2.15",
            16,
            "192.168.2.2",
            "192.168.2.3",
        ),
        (
            &["--slirp", "net=198.18.0.0"],
            "198.18.2.15",
            15,
            "198.18.2.2",
            "198.18.2.3",
        ),
        (
            &["--slirp", "net=192.0.2.0"],
            "192.0.2.15",
            28,
            "192.0.2.2",
            "192.0.2.3",
        ),
        (
            &["--slirp", "ip=10.7.0.0"],
            "10.7.0.15",
            24,
            "10.7.0.2",
            "10.7.0.3",
        ),
        (
            &["--slirp", "host=10.0.2.1"],
            "10.0.2.15",
            24,
            "10.0.2.1",
            "10.0.2.3",
        ),
        (
            &["--slirp", "dns=10.0.2.53"],
            "10.0.2.15",
            24,
            "10.0.2.2",
            "10.0.2.53",
        ),
        (
            &["--slirp", "dns=8.8.8.8"],
            "10.0.2.15",
            24,
            "10.0.2.2",
            "8.8.8.8",
        ),
        (
            &["--slirp", "dhcpstart=10.0.2.100"],
            "10.0.2.100",
            24,
            "10.0.2.2",
            "10.0.2.3",
        ),
        (
            &["--slirp", "net=0x0a.1.0.0/16"],
            "10.1.2.15",
            16,
            "10.1.2.2",
            "10.1.2.3",
        ),
        // passt-style options read with slirp semantics
        (
            &["--address", "169.254.0.0", "--netmask", "16"],
            "169.254.2.15",
            16,
            "169.254.2.2",
            "169.254.2.3",
        ),
        (
            &["--address", "10.0.2.100/24"],
            "10.0.2.15",
            24,
            "10.0.2.2",
            "10.0.2.3",
        ),
        (
            &[
                "--address",
                "10.8.0.0/16",
                "--gateway",
                "10.8.0.1",
                "--dns",
                "10.8.0.53",
            ],
            "10.8.2.15",
            16,
            "10.8.0.1",
            "10.8.0.53",
        ),
        (
            &["--slirp", "net=10.8.0.0/16", "--gateway", "10.8.0.1"],
            "10.8.2.15",
            16,
            "10.8.0.1",
            "10.8.2.3",
        ),
    ];
    for (argv, guest, prefix, gw, dns) in cases {
        let r = ok(argv, None);
        assert_eq!(
            v4(&r.plan),
            want(guest, *prefix, gw, dns, &m(gw), 16),
            "{argv:?}"
        );
    }
}

#[test]
fn slirp_profile_reads_libvirt_as_qemu_does() {
    // (interface body, guest, prefix, gateway, dns)
    let cases: &[(&str, &str, u8, &str, &str)] = &[
        ("", "10.0.2.15", 24, "10.0.2.2", "10.0.2.3"),
        (
            "<ip family='ipv4' address='169.254.0.0' prefix='16'/>",
            "169.254.2.15",
            16,
            "169.254.2.2",
            "169.254.2.3",
        ),
        (
            "<ip family='ipv4' address='172.17.2.0' prefix='24'/>",
            "172.17.2.15",
            24,
            "172.17.2.2",
            "172.17.2.3",
        ),
        // formatdomain's example table: 172.17.1.1/16 -> 172.17.2.15
        (
            "<ip address='172.17.1.1' prefix='16'/>",
            "172.17.2.15",
            16,
            "172.17.2.2",
            "172.17.2.3",
        ),
        (
            "<ip address='10.1.16.0' prefix='20'/>",
            "10.1.18.15",
            20,
            "10.1.18.2",
            "10.1.18.3",
        ),
        (
            "<ip address='100.64.7.0' prefix='25'/>",
            "100.64.7.15",
            25,
            "100.64.7.2",
            "100.64.7.3",
        ),
        // no prefix: libvirt passes net=ADDR, QEMU picks the classful mask
        (
            "<ip address='172.17.2.0'/>",
            "172.16.2.15",
            12,
            "172.16.2.2",
            "172.16.2.3",
        ),
        (
            "<ip address='192.168.100.0' prefix='0'/>",
            "192.168.2.15",
            16,
            "192.168.2.2",
            "192.168.2.3",
        ),
        // a default route is slirp's host=
        (
            "<ip address='172.17.2.0' prefix='24'/><route address='0.0.0.0' prefix='0' gateway='172.17.2.1'/>",
            "172.17.2.15",
            24,
            "172.17.2.1",
            "172.17.2.3",
        ),
        (
            "<route gateway='10.0.2.1'/>",
            "10.0.2.15",
            24,
            "10.0.2.1",
            "10.0.2.3",
        ),
    ];
    for (body, guest, prefix, gw, dns) in cases {
        let r = ok(&["--libvirt-xml", "d.xml"], Some(&xml_with(body)));
        let got = v4(&r.plan);
        assert_eq!(
            (
                got.guest.as_str(),
                got.prefix,
                got.gateway.as_str(),
                got.dns.as_str(),
                got.pool
            ),
            (*guest, *prefix, *gw, *dns, 16),
            "{body}"
        );
        assert_eq!(
            got.mac,
            policy::MacAddr::slirp_for_ipv4(gw.parse().unwrap()).to_string()
        );
    }
    // The guest-view.md case: net=172.17.2.0/24,host=172.17.2.1 shows 52:55:ac:11:02:01.
    let r = ok(&["--slirp", "net=172.17.2.0/24,host=172.17.2.1"], None);
    assert_eq!(r.plan.gateway_mac.to_string(), "52:55:ac:11:02:01");
}

#[test]
fn slirp_profile_refuses_what_qemu_refuses() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--slirp", "net=10.0.0.0/30"],
            "--slirp net=10.0.0.0/30: the first DHCP address 10.0.0.3 must differ from the gateway 10.0.0.2 and the DNS address 10.0.0.3",
        ),
        (
            &["--slirp", "net=10.0.0.0/31"],
            "the first DHCP address 10.0.0.1 must differ",
        ),
        (
            &["--slirp", "net=10.0.0.0/32"],
            "--slirp net=10.0.0.0/32: the DNS address 10.0.0.0 must differ from the gateway 10.0.0.0",
        ),
        (
            &["--slirp", "host=10.0.3.2"],
            "--slirp host=10.0.3.2: the gateway 10.0.3.2 is outside the guest's network 10.0.2.0/24",
        ),
        (
            &["--slirp", "dns=10.0.2.2"],
            "--slirp dns=10.0.2.2: the DNS address 10.0.2.2 must differ from the gateway 10.0.2.2",
        ),
        (
            &["--slirp", "restrict=on,dns=10.0.3.3"],
            "--slirp dns=10.0.3.3: with restrict=on the DNS address must be inside 10.0.2.0/24",
        ),
        (
            &["--slirp", "dhcpstart=10.0.3.15"],
            "--slirp dhcpstart=10.0.3.15: the first DHCP address 10.0.3.15 is outside 10.0.2.0/24",
        ),
        (
            &["--slirp", "dhcpstart=10.0.2.3"],
            "--slirp dhcpstart=10.0.2.3: the first DHCP address 10.0.2.3 must differ",
        ),
        (&["--slirp", "net=10.0.0.0/3"], "must be in range 4-32"),
        (
            &["--slirp", "ipv6-host=fec1::2"],
            "--slirp ipv6-host=fec1::2: the IPv6 gateway fec1::2 is outside the prefix fec0::/64",
        ),
        (
            &["--slirp", "restrict=on,ipv6-dns=fec1::3"],
            "--slirp ipv6-dns=fec1::3: with restrict=on",
        ),
        (
            &["--address", "10.0.0.0/2"],
            "--address 10.0.0.0/2: /2 is outside the 4-32 slirp accepts",
        ),
        (
            &["--netmask", "16"],
            "--netmask 16: a netmask needs an IPv4 address",
        ),
        (
            &["--gateway", "192.168.1.1"],
            "--gateway 192.168.1.1: the gateway 192.168.1.1 is outside the guest's network 10.0.2.0/24",
        ),
        (
            &["--slirp", "ipv4=off", "--address", "10.0.0.5/24"],
            "--address 10.0.0.5/24: IPv4 is disabled by --slirp ipv4=off",
        ),
        (
            &["--slirp", "ipv6=off", "--gateway", "fd00::1"],
            "--gateway fd00::1: IPv6 is disabled by --slirp ipv6=off",
        ),
    ];
    for (argv, want) in cases {
        let e = err(argv, None);
        assert!(e.contains(want), "{argv:?}:\n  got  {e}\n  want {want}");
    }
}

#[test]
fn slirp_profile_warns_about_surprises() {
    let r = ok(&["--address", "10.0.2.100/24"], None);
    assert!(
        warnings(&r)[0].contains("10.0.2.100 is read as the network 10.0.2.0/24"),
        "{:?}",
        warnings(&r)
    );
    assert!(warnings(&r)[0].contains("the guest gets 10.0.2.15"));

    let r = ok(&["--slirp", "net=10.0.2.77/24"], None);
    assert!(
        warnings(&r)[0].contains("has host bits set"),
        "{:?}",
        warnings(&r)
    );

    let r = ok(&["--slirp", "net=10.0.0.0/28"], None);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.contains("broadcast address 10.0.0.15")),
        "{:?}",
        warnings(&r)
    );

    let r = ok(&["--slirp", "host=10.0.2.20"], None);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.contains("includes the gateway 10.0.2.20")),
        "{:?}",
        warnings(&r)
    );

    let r = ok(
        &["--libvirt-xml", "d.xml"],
        Some(&xml_with("<ip address='172.17.2.0'/>")),
    );
    assert!(
        warnings(&r).iter().any(|w| w.contains("classful mask /12")),
        "{:?}",
        warnings(&r)
    );

    let r = ok(&[], None);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    let r = ok(&["--slirp", "net=10.1.16.0/20"], None);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
}

// ---------------------------------------------------------------- passt profile

#[test]
fn passt_profile_uses_the_address_as_given() {
    // (argv, guest, prefix, gateway, dns)
    let cases: &[(&[&str], &str, u8, &str, &str)] = &[
        (
            &["--address", "169.254.2.15", "--netmask", "16"],
            "169.254.2.15",
            16,
            "169.254.0.1",
            "169.254.2.3",
        ),
        (
            &["--address", "169.254.2.15/16", "--gateway", "169.254.2.2"],
            "169.254.2.15",
            16,
            "169.254.2.2",
            "169.254.2.3",
        ),
        (
            &[
                "--address",
                "10.0.2.15",
                "--netmask",
                "24",
                "--gateway",
                "10.0.2.2",
            ],
            "10.0.2.15",
            24,
            "10.0.2.2",
            "10.0.2.3",
        ),
        (
            &["--address", "10.0.0.1/24"],
            "10.0.0.1",
            24,
            "10.0.0.2",
            "10.0.0.3",
        ),
        (
            &["--address", "10.0.0.3/24"],
            "10.0.0.3",
            24,
            "10.0.0.1",
            "10.0.0.2",
        ),
        (
            &["--address", "192.0.2.7"],
            "192.0.2.7",
            24,
            "192.0.2.1",
            "192.0.2.3",
        ),
        (
            &["--address", "10.20.30.40"],
            "10.20.30.40",
            8,
            "10.0.0.1",
            "10.0.2.3",
        ),
        (
            &["--address", "10.0.0.1/30", "--dns", "1.1.1.1"],
            "10.0.0.1",
            30,
            "10.0.0.2",
            "1.1.1.1",
        ),
        (
            &["--address", "10.0.0.2/29"],
            "10.0.0.2",
            29,
            "10.0.0.1",
            "10.0.0.3",
        ),
        (
            &["--address", "10.0.0.5/24", "--dns", "10.0.0.53"],
            "10.0.0.5",
            24,
            "10.0.0.1",
            "10.0.0.53",
        ),
        (&[], "10.0.2.15", 24, "10.0.2.2", "10.0.2.3"),
    ];
    for (argv, guest, prefix, gw, dns) in cases {
        let mut a = vec!["--profile", "passt"];
        a.extend_from_slice(argv);
        let r = ok(&a, None);
        let mac = policy::MacAddr::slirp_for_ipv4(gw.parse().unwrap()).to_string();
        assert_eq!(
            v4(&r.plan),
            want(guest, *prefix, gw, dns, &mac, 1),
            "{argv:?}"
        );
    }

    // libvirt XML under the passt profile.
    let xml = xml_with("<ip family='ipv4' address='169.254.2.15' prefix='16'/>");
    let r = ok(
        &["--libvirt-xml", "d.xml", "--profile", "passt"],
        Some(&xml),
    );
    assert_eq!(
        v4(&r.plan),
        want(
            "169.254.2.15",
            16,
            "169.254.0.1",
            "169.254.2.3",
            "52:55:a9:fe:00:01",
            1
        )
    );
    let r = ok(
        &[
            "--libvirt-xml",
            "d.xml",
            "--profile",
            "passt",
            "--mac-addr",
            "9a:55:9a:55:9a:55",
        ],
        Some(&xml),
    );
    assert_eq!(r.plan.gateway_mac.to_string(), "9a:55:9a:55:9a:55");
}

#[test]
fn passt_profile_refuses_broken_guests() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--address", "169.254.0.0/16"],
            "169.254.0.0 is the network address of 169.254.0.0/16, not a host address (slirp semantics would give the guest 169.254.2.15)",
        ),
        (
            &["--address", "169.254.255.255/16"],
            "169.254.255.255 is the broadcast address of 169.254.0.0/16",
        ),
        (
            &["--address", "10.0.0.5/24", "--gateway", "192.0.2.1"],
            "--gateway 192.0.2.1: the gateway 192.0.2.1 is outside the guest's subnet 10.0.0.0/24",
        ),
        (
            &["--address", "10.0.0.5/24", "--gateway", "10.0.0.5"],
            "the gateway 10.0.0.5 is the guest's own address",
        ),
        (
            &["--address", "10.0.0.5/24", "--gateway", "10.0.0.255"],
            "network or broadcast address",
        ),
        (&["--address", "10.0.0.5/31"], "a /31 subnet has no room"),
        (&["--address", "10.0.0.5/32"], "a /32 subnet has no room"),
        (&["--address", "10.0.0.5/0"], "a /0 subnet"),
        (&["--address", "127.0.0.5/8"], "loopback"),
        (&["--address", "0.1.2.3/8"], "0.0.0.0/8"),
        (&["--address", "224.0.0.5/24"], "multicast or reserved"),
        (
            &["--address", "10.0.0.1/30"],
            "--address 10.0.0.1/30: 10.0.0.0/30 has no address left for the DNS relay",
        ),
        (
            &["--address", "10.0.0.5/24", "--dns", "10.0.0.5"],
            "the DNS address 10.0.0.5 is the guest's own",
        ),
        (
            &["--address", "10.0.0.5/24", "--dns", "10.0.0.1"],
            "must differ from the gateway",
        ),
        (
            &["--address", "fd00::/64"],
            "--address fd00::/64: fd00:: is the subnet-router anycast address",
        ),
        (
            &["--address", "fd00::10/64", "--gateway", "fd01::1"],
            "the IPv6 gateway fd01::1 is outside the guest's prefix fd00::/64",
        ),
        (
            &["--slirp", "net=10.0.0.0/8"],
            "--slirp keeps QEMU's meaning",
        ),
    ];
    for (argv, want) in cases {
        let mut a = vec!["--profile", "passt"];
        a.extend_from_slice(argv);
        let e = err(&a, None);
        assert!(e.contains(want), "{argv:?}:\n  got  {e}\n  want {want}");
    }
}

// ---------------------------------------------------------------- IPv6

#[test]
fn ipv6_plans() {
    // (argv, xml body, prefix, len, gateway, dns, guest address)
    type Case<'a> = (
        &'a [&'a str],
        Option<&'a str>,
        &'a str,
        u8,
        &'a str,
        &'a str,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (&[], None, "fec0::", 64, "fec0::2", "fec0::3", None),
        (
            &["--slirp", "ipv6-net=2001:db8:1::/48"],
            None,
            "2001:db8:1::",
            48,
            "2001:db8:1::2",
            "2001:db8:1::3",
            None,
        ),
        (
            &[
                "--slirp",
                "ipv6-prefix=fd00::,ipv6-prefixlen=56,ipv6-host=fd00::1,ipv6-dns=fd00::53",
            ],
            None,
            "fd00::",
            56,
            "fd00::1",
            "fd00::53",
            None,
        ),
        (
            &["--libvirt-xml", "d.xml"],
            Some("<ip family='ipv6' address='2001:db8:ac10:fd01::' prefix='64'/>"),
            "2001:db8:ac10:fd01::",
            64,
            "2001:db8:ac10:fd01::2",
            "2001:db8:ac10:fd01::3",
            None,
        ),
        (
            &["--libvirt-xml", "d.xml"],
            Some("<route family='ipv6' address='::' prefix='0' gateway='fec0::1'/>"),
            "fec0::",
            64,
            "fec0::1",
            "fec0::3",
            None,
        ),
        (
            &["--profile", "passt", "--address", "fd00::10/64"],
            None,
            "fd00::",
            64,
            "fd00::1",
            "fd00::3",
            Some("fd00::10"),
        ),
        (
            &["--profile", "passt", "--address", "fd00::1"],
            None,
            "fd00::",
            64,
            "fd00::2",
            "fd00::3",
            Some("fd00::1"),
        ),
        (
            &[
                "--profile",
                "passt",
                "--address",
                "fd00::10",
                "--gateway",
                "fd00::fe",
                "--dns",
                "fd00::53",
            ],
            None,
            "fd00::",
            64,
            "fd00::fe",
            "fd00::53",
            Some("fd00::10"),
        ),
    ];
    for (argv, body, prefix, len, gw, dns, guest) in cases {
        let xml = body.map(xml_with);
        let r = ok(argv, xml.as_deref());
        let v6 = r.plan.ipv6.as_ref().expect("IPv6 on");
        assert_eq!(
            (
                v6.prefix.to_string(),
                v6.prefix_len,
                v6.gateway.to_string(),
                v6.dns.to_string(),
                v6.guest_addr.map(|a| a.to_string())
            ),
            (
                prefix.to_string(),
                *len,
                gw.to_string(),
                dns.to_string(),
                guest.map(str::to_string)
            ),
            "{argv:?} {body:?}"
        );
    }
    assert!(ok(&["--slirp", "ipv6=off"], None).plan.ipv6.is_none());
    assert!(ok(&["--slirp", "ipv4=on"], None).plan.ipv6.is_none());
    let r = ok(&["--slirp", "ipv4=off"], None);
    assert!(r.plan.ipv4.is_none());
    assert!(r.plan.ipv6.is_some());
    // The gateway MAC stays slirp's default when IPv4 is off.
    assert_eq!(r.plan.gateway_mac.to_string(), "52:55:0a:00:02:02");
}

// ---------------------------------------------------------------- DHCP, MTU, misc

#[test]
fn dhcp_options_and_mtu() {
    let root = std::env::temp_dir().join(format!("vnu-policy-tftp-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("pxelinux.0"), b"boot").unwrap();
    let slirp = format!(
        "hostname=vm1,domainname=example.test,dnssearch=a.example,dnssearch=b.example,tftp={},bootfile=pxelinux.0,tftp-server-name=boot.example,restrict=on",
        root.display()
    );
    let r = ok(&["--slirp", &slirp], None);
    let d = &r.plan.dhcp;
    assert_eq!(d.hostname.as_deref(), Some("vm1"));
    assert_eq!(d.domain_name.as_deref(), Some("example.test"));
    assert_eq!(d.search, vec!["a.example", "b.example"]);
    assert_eq!(d.bootfile.as_deref(), Some("pxelinux.0"));
    assert_eq!(d.tftp_server_name.as_deref(), Some("boot.example"));
    assert_eq!(d.lease_secs, 86400);
    assert_eq!(d.mtu_option, None);
    assert!(r.plan.restrict);
    assert_eq!(r.plan.tftp_root.as_deref(), Some(root.as_path()));
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));

    let r = ok(&["--slirp", "bootfile=pxelinux.0"], None);
    assert!(
        warnings(&r)[0].contains("without tftp="),
        "{:?}",
        warnings(&r)
    );
    // A root that is no directory, or a boot file not in it, is accepted (as slirp accepts
    // it) with a warning naming it.
    let r = ok(&["--slirp", "tftp=/nonexistent/tftp"], None);
    assert_eq!(
        warnings(&r),
        ["tftp=/nonexistent/tftp is not a directory: every TFTP request will get File not found"]
    );
    let slirp = format!("tftp={},bootfile=pxelinux.1", root.display());
    let r = ok(&["--slirp", &slirp], None);
    assert_eq!(
        warnings(&r),
        [format!(
            "bootfile=pxelinux.1 is not a file in tftp={}: the guest's network boot will not find it",
            root.display()
        )]
    );
    std::fs::remove_dir_all(&root).unwrap();

    // (argv, xml body, link MTU, DHCP option 26)
    type Case<'a> = (&'a [&'a str], Option<&'a str>, u16, Option<u16>);
    let cases: &[Case] = &[
        (&[], None, 1500, None),
        (&["--mtu", "9000"], None, 9000, Some(9000)),
        (&["--mtu", "1500"], None, 1500, Some(1500)),
        (&["--mtu", "0"], None, 1500, None),
        (
            &["--libvirt-xml", "d.xml"],
            Some("<mtu size='9000'/>"),
            9000,
            Some(9000),
        ),
        (
            &["--libvirt-xml", "d.xml", "--mtu", "4000"],
            Some("<mtu size='9000'/>"),
            4000,
            Some(4000),
        ),
        (
            &["--profile", "passt", "--mtu", "65520"],
            None,
            65520,
            Some(65520),
        ),
    ];
    for (argv, body, mtu, opt) in cases {
        let xml = body.map(xml_with);
        let r = ok(argv, xml.as_deref());
        assert_eq!(
            (r.plan.mtu, r.plan.dhcp.mtu_option),
            (*mtu, *opt),
            "{argv:?}"
        );
    }
    for bad in ["67", "65521", "x", "1.5"] {
        let e = err(&["--mtu", bad], None);
        assert!(
            e.starts_with(&format!("--mtu {bad}: the MTU must be 68-65520")),
            "{e}"
        );
    }
    let r = ok(&["--mtu", "1000"], None);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.contains("below IPv6's minimum"))
    );

    let r = ok(
        &["--search", "a.example b.example", "--search", "c.example"],
        None,
    );
    assert_eq!(
        r.plan.dhcp.search,
        vec!["a.example", "b.example", "c.example"]
    );
    let r = ok(
        &["--slirp", "dnssearch=a.example", "--search", "none"],
        None,
    );
    assert!(r.plan.dhcp.search.is_empty());
    assert!(
        warnings(&r)[0].contains("--search overrides"),
        "{:?}",
        warnings(&r)
    );
    assert!(err(&["--search", "bad..name"], None).contains("--search bad..name"));

    assert!(ok(&[], None).plan.map_gateway_to_loopback);
    assert!(!ok(&["--no-map-gw"], None).plan.map_gateway_to_loopback);
}

#[test]
fn passt_style_option_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--address", "10.0.0.x"],
            "--address 10.0.0.x: not an IPv4 or IPv6 address",
        ),
        (
            &["--address", "10.0.0.1/33"],
            "--address 10.0.0.1/33: the prefix length must be 0-32",
        ),
        (
            &["--address", "10.0.0.1", "--address", "10.0.0.2"],
            "one IPv4 address only",
        ),
        (
            &["--address", "10.0.0.1/24", "--netmask", "24"],
            "carries a prefix length and --netmask 24 is given too",
        ),
        (
            &["--address", "10.0.0.1", "--netmask", "255.0.255.0"],
            "--netmask 255.0.255.0: 255.0.255.0 is not a contiguous netmask",
        ),
        (
            &["--gateway", "x"],
            "--gateway x: not an IPv4 or IPv6 address",
        ),
        (
            &["--gateway", "10.0.2.1", "--gateway", "10.0.2.4"],
            "one IPv4 gateway only",
        ),
        (
            &["--mac-addr", "52:54:00"],
            "--mac-addr 52:54:00: '52:54:00' is not a MAC address",
        ),
        (
            &["--mac-addr", "01:00:5e:00:00:01"],
            "--mac-addr 01:00:5e:00:00:01: the gateway MAC must be a unicast address",
        ),
        (&["--mac-addr", "00:00:00:00:00:00"], "all zeros"),
        (&["--dns", "none"], "--dns none: not supported"),
        (
            &["--dns", "1.1.1.1", "--dns", "8.8.8.8"],
            "one IPv4 DNS address",
        ),
        (&["-t", "70000"], "-t 70000: '70000' is not a port"),
        (
            &["-t", "8080", "-t", "8000-8100"],
            "-t 8080 and -t 8000-8100 both forward tcp port 8080",
        ),
        (
            &["--slirp", "hostfwd=tcp::2222-:22", "-t", "2222"],
            "--slirp hostfwd=tcp::2222-:22 and -t 2222 both forward tcp port 2222",
        ),
        (
            &["-t", "127.0.0.1/22", "-t", "22"],
            "both forward tcp port 22",
        ),
        (
            &["--slirp", "hostfwd=unix:/tmp/a-:22,hostfwd=unix:/tmp/a-:23"],
            "both forward the socket /tmp/a",
        ),
        (&["--hostname", ""], "--hostname : must be 1-255 bytes"),
        (&["--slirp", "ipv4=off", "-t", "22"], "listen"),
    ];
    for (argv, want) in cases {
        match build(argv, None) {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(want), "{argv:?}:\n  got  {e}\n  want {want}");
            }
            Ok(r) => {
                // The last case is legal: it only warns.
                assert!(
                    warnings(&r).iter().any(|w| w.contains(want)),
                    "{argv:?}: {:?}",
                    warnings(&r)
                );
            }
        }
    }
}

#[test]
fn hostname_goes_to_dhcp_and_wins_over_the_configuration() {
    assert_eq!(
        ok(&["--hostname", "vm1"], None)
            .plan
            .dhcp
            .hostname
            .as_deref(),
        Some("vm1")
    );
    let r = ok(&["--slirp", "hostname=a", "--hostname", "b"], None);
    assert_eq!(r.plan.dhcp.hostname.as_deref(), Some("b"));
    assert_eq!(
        warnings(&r),
        ["--hostname b overrides the configuration's hostname (b instead of a)"]
    );
    let r = ok(&["--slirp", "hostname=b", "--hostname", "b"], None);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_eq!(ok(&[], None).plan.dhcp.hostname, None);
}

#[test]
fn forwards_are_kept_in_the_plan() {
    use policy::{HostListen, Proto};
    let r = ok(
        &[
            "--slirp",
            "hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5353-10.0.2.15:53",
            "-t",
            "8080",
            "-t",
            "1000-1010:2000-2010",
            "-u",
            "127.0.0.1/22",
        ],
        None,
    );
    let f = &r.plan.forwards;
    assert_eq!(f.len(), 5);
    assert_eq!(f[0].proto, Proto::Tcp);
    assert_eq!(f[0].guest_port, 22);
    assert_eq!(f[1].proto, Proto::Udp);
    assert_eq!(f[1].guest_addr, Some("10.0.2.15".parse().unwrap()));
    assert!(
        matches!(&f[2].host, HostListen::Inet { addr: None, ports, .. } if ports.first == 8080)
    );
    assert!(
        matches!(&f[3].host, HostListen::Inet { ports, .. } if ports.first == 1000 && ports.last == 1010)
    );
    assert_eq!(f[3].guest_port, 2000);
    assert_eq!(f[4].proto, Proto::Udp);
    let texts = warnings(&r);
    let open = texts
        .iter()
        .find(|w| w.contains("every host address"))
        .unwrap();
    assert!(
        open.contains("--slirp hostfwd=tcp::2222-:22, -t 8080, -t 1000-1010:2000-2010"),
        "{open}"
    );

    let r = ok(&["--slirp", "hostfwd=tcp::2222-10.0.2.99:22"], None);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.contains("10.0.2.99 is not an address the DHCP server hands out"))
    );
}

#[test]
fn guest_forwards_are_kept_in_the_plan() {
    let r = ok(
        &[
            "--slirp",
            "net=192.168.76.0/24,guestfwd=tcp:192.168.76.100:1234-cmd:socat - 'TCP:127.0.0.1:4321'",
            "--slirp",
            "guestfwd=:192.168.76.20:25-cmd:cat",
        ],
        None,
    );
    let g = &r.plan.guest_forwards;
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].addr.to_string(), "192.168.76.100");
    assert_eq!(g[0].port, 1234);
    assert_eq!(g[0].command, "socat - 'TCP:127.0.0.1:4321'");
    assert_eq!(g[0].argv, ["socat", "-", "TCP:127.0.0.1:4321"]);
    assert_eq!(g[1].addr.to_string(), "192.168.76.20");
    assert_eq!(
        warnings(&r),
        [
            "--slirp guestfwd=:192.168.76.20:25-cmd:cat: 192.168.76.20 is an address the DHCP \
          server hands out (192.168.76.15-192.168.76.30): the guest that gets it cannot reach \
          this guest forward"
        ]
    );

    // An empty SERVER is 0.0.2.4 within the network, here the gateway.
    let e = err(
        &[
            "--slirp",
            "net=192.168.76.0/24,host=192.168.76.4,guestfwd=::1234-cmd:cat",
        ],
        None,
    );
    assert!(
        e.contains("the default address 192.168.76.4 is the gateway"),
        "{e}"
    );
    let e = err(&["--slirp", "guestfwd=tcp:10.0.2.100:1234-chr0"], None);
    assert!(e.contains("only QEMU can reach"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn smb_share_is_kept_in_the_plan() {
    let r = ok(
        &[
            "--slirp",
            "net=192.168.76.0/24,smb=/srv/share,guestfwd=tcp:192.168.76.4:1234-cmd:cat",
            "--slirp",
            "restrict=on",
        ],
        None,
    );
    let smb = r.plan.smb.as_ref().expect("smb share");
    assert_eq!(smb.addr.to_string(), "192.168.76.4");
    assert_eq!(smb.export, std::path::Path::new("/srv/share"));
    assert!(r.plan.restrict);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_eq!(ok(&[], None).plan.smb, None);

    // A relative directory is made absolute against the current directory.
    let r = ok(
        &[
            "--slirp",
            "smb=shared,smbserver=192.168.76.9,net=192.168.76.0/24",
        ],
        None,
    );
    let smb = r.plan.smb.unwrap();
    assert_eq!(smb.export, std::env::current_dir().unwrap().join("shared"));
    assert_eq!(smb.addr.to_string(), "192.168.76.9");

    // smbserver= alone does nothing, as in QEMU, and says so.
    let r = ok(&["--slirp", "smbserver=10.0.2.9"], None);
    assert_eq!(r.plan.smb, None);
    assert_eq!(
        warnings(&r),
        ["--slirp smbserver=10.0.2.9: does nothing without smb= (QEMU ignores it too)"]
    );

    for (argv, want) in [
        (
            &["--slirp", "smb=/srv,smbserver=10.0.2.x"][..],
            "--slirp smbserver=10.0.2.x: not an IPv4 address (QEMU: Failed to parse SMB address)",
        ),
        (
            &["--slirp", "smb=/srv,smbserver=10.0.2.3"],
            "--slirp smbserver=10.0.2.3: 10.0.2.3 is the DNS address; the smb share needs \
             another address of 10.0.2.0/24 (QEMU: Conflicting/invalid smbserver address)",
        ),
        (
            &["--slirp", "smb=/srv", "--gateway", "10.0.2.4"],
            "--slirp smb=/srv: the default address 10.0.2.4 is the gateway; the smb share needs \
             another address of 10.0.2.0/24 (QEMU: Conflicting/invalid smbserver address)",
        ),
        (
            &["--slirp", "smb=/srv,guestfwd=::445-cmd:cat"],
            "--slirp guestfwd=::445-cmd:cat and --slirp smb=/srv both forward guest connections \
             to 10.0.2.4:445 (smbd listens on ports 139 and 445)",
        ),
        (
            &["--slirp", "smb=/srv", "-6"],
            "--slirp smb=/srv: the smb share needs IPv4, which is disabled by -6",
        ),
        (
            &["--slirp", "smb=/srv", "--no-tcp"],
            "--slirp smb=/srv and --no-tcp: the smb share needs TCP",
        ),
        (
            &["--slirp", "smb=/srv/50%"],
            "--slirp smb=/srv/50%: the path contains '%'",
        ),
        (
            &["--slirp", "smb=/srv/a\nb"],
            "--slirp smb=/srv/a\\nb: the path contains a line break",
        ),
        (
            &["--slirp", "smb="],
            "--slirp smb=: expects the directory to share",
        ),
    ] {
        let e = err(argv, None);
        assert!(e.starts_with(want), "{argv:?}:\n  got  {e}\n  want {want}");
        assert!(!e.contains('\n'), "{argv:?}: {e}");
    }
}

// ---------------------------------------------------------------- front-end combinations

#[test]
fn front_end_combinations() {
    // clap refuses these before build() is reached.
    let clap_err = |argv: &[&str]| {
        Cli::try_parse_from(std::iter::once("x").chain(argv.iter().copied()))
            .unwrap_err()
            .kind()
    };
    use clap::error::ErrorKind;
    assert_eq!(
        clap_err(&["--slirp", "net=10.0.0.0/8", "--libvirt-xml", "d.xml"]),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        clap_err(&["--interface", "net0"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        clap_err(&["--format", "json"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(clap_err(&["--profile", "qemu"]), ErrorKind::InvalidValue);
    assert!(Cli::try_parse_from(["x", "--explain", "--format", "json"]).is_ok());

    // build() checks the same when Inputs is filled in by hand, without clap.
    let a = Inputs {
        slirp: vec!["net=10.0.0.0/8".into()],
        libvirt_xml: Some("d.xml".into()),
        ..Default::default()
    };
    assert!(
        a.build_with_xml(Some(SEED_XML))
            .unwrap_err()
            .to_string()
            .contains("--slirp and --libvirt-xml")
    );

    // passt-style options override the XML, and say so.
    let r = ok(
        &["--libvirt-xml", "seed.xml", "--address", "10.0.9.0/24"],
        Some(SEED_XML),
    );
    assert_eq!(v4(&r.plan).guest, "10.0.9.15");
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.starts_with("--address 10.0.9.0/24 overrides <ip family='ipv4'")),
        "{:?}",
        warnings(&r)
    );
    // A vhostuser interface without <ip> (libvirt 9.0 refuses it there) takes --address.
    let vu = "<interface type='vhostuser'><mac address='52:54:00:12:34:56'/>\
              <source type='unix' path='/var/tmp/vu/vu.sock' mode='client'/><model type='virtio'/></interface>";
    let r = ok(
        &[
            "--libvirt-xml",
            "vu.xml",
            "--profile",
            "passt",
            "--address",
            "169.254.2.15/16",
        ],
        Some(vu),
    );
    assert_eq!(v4(&r.plan).guest, "169.254.2.15");
    assert_eq!(r.guest_mac.unwrap().to_string(), "52:54:00:12:34:56");
    assert!(
        r.inputs[0].contains("<interface type='vhostuser'> #0"),
        "{:?}",
        r.inputs
    );
    assert!(
        r.inputs[1].contains("--address 169.254.2.15/16"),
        "{:?}",
        r.inputs
    );

    // A missing file is one line naming it.
    let a = args(&["--libvirt-xml", "/nonexistent/dom.xml"]);
    let err = a.build().unwrap_err();
    let e = err.to_string();
    assert_eq!(e, "cannot read /nonexistent/dom.xml");
    // The cause travels as the error's source; the program prints both on one line.
    let source = std::error::Error::source(&err).expect("io error as source");
    assert!(source.to_string().contains("No such file"), "{source}");
}

#[test]
fn every_error_is_one_line() {
    let cases: &[(&[&str], Option<&str>)] = &[
        (
            &["--libvirt-xml", "seed.xml", "--profile", "passt"],
            Some(SEED_XML),
        ),
        (
            &["--libvirt-xml", "bad.xml"],
            Some("<interface type='user'><ip address='x'/></interface>"),
        ),
        (&["--libvirt-xml", "bad.xml"], Some("<interface")),
        (&["--slirp", "net=10.0.0.0/30"], None),
    ];
    for (argv, xml) in cases {
        let e = err(argv, *xml);
        assert!(!e.contains('\n'), "{argv:?}: {e}");
    }
}

// ---------------------------------------------------------------- --explain

#[test]
fn explain_text_of_the_seed() {
    let a = args(&["--libvirt-xml", "seed.xml", "--explain"]);
    let r = a.build_with_xml(Some(SEED_XML)).unwrap();
    let text = a.explain_output(&r).unwrap();
    for want in [
        "Guest network plan (profile slirp)",
        "guest address     169.254.2.15/16 (netmask 255.255.0.0), by DHCP",
        "DHCP pool         169.254.2.15-169.254.2.30 (16 leases)",
        "gateway           169.254.2.2, MAC 52:55:a9:fe:02:02",
        "DNS               169.254.2.3 (relayed to the host's resolver)",
        "lease             86400 s",
        "MTU option        not sent",
        "guest MAC         52:54:00:41:2c:49",
        "prefix            fec0::/64",
        "gateway->loopback 169.254.2.2 -> 127.0.0.1, fec0::2 -> ::1",
        "! 169.254.0.0 is a network address: slirp semantics give the guest 169.254.2.15",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert_eq!(args(&[]).explain_output(&r), None);
    // The example in EXPLAIN.md is this very output.
    assert!(
        include_str!("../../policy/EXPLAIN.md").contains(&text),
        "EXPLAIN.md's text example is stale; it should read:\n{text}"
    );
}

#[test]
fn explain_json_keys_are_stable_and_documented() {
    let a = args(&[
        "--libvirt-xml",
        "seed.xml",
        "--explain",
        "--format",
        "json",
        "-t",
        "2222:22",
    ]);
    let r = a.build_with_xml(Some(SEED_XML)).unwrap();
    let out = a.explain_output(&r).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["profile"], "slirp");
    assert_eq!(v["guest_mac"], "52:54:00:41:2c:49");
    assert_eq!(v["gateway_mac"], "52:55:a9:fe:02:02");
    assert_eq!(v["ipv4"]["guest_address"], "169.254.2.15");
    assert_eq!(v["ipv4"]["prefix_len"], 16);
    assert_eq!(v["ipv4"]["netmask"], "255.255.0.0");
    assert_eq!(v["ipv4"]["gateway"], "169.254.2.2");
    assert_eq!(v["ipv4"]["dns"], "169.254.2.3");
    assert_eq!(v["ipv4"]["dhcp_end"], "169.254.2.30");
    assert_eq!(v["dhcp"]["lease_secs"], 86400);
    assert_eq!(v["dhcp"]["mtu_option"], serde_json::Value::Null);
    assert_eq!(v["ipv6"]["prefix"], "fec0::");
    assert_eq!(
        v["forwards"][0]["host_ports"],
        serde_json::json!([2222, 2222])
    );
    assert_eq!(v["forwards"][0]["guest_ports"], serde_json::json!([22, 22]));
    assert_eq!(v["mtu"], 1500);

    // Every key printed is listed in EXPLAIN.md.
    let doc = include_str!("../../policy/EXPLAIN.md");
    fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(p.clone());
                    keys(&p, x, out);
                }
            }
            serde_json::Value::Array(a) => {
                for x in a {
                    keys(&format!("{prefix}[]"), x, out);
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    keys("", &v, &mut all);
    // Object-valued keys that are null here appear in other plans.
    let r2 = ok(&["--profile", "passt", "--address", "fd00::5"], None);
    let v2: serde_json::Value = serde_json::from_str(&explain::render_json(&r2)).unwrap();
    keys("", &v2, &mut all);
    let r3 = ok(
        &[
            "--slirp",
            "guestfwd=::22-cmd:cat,smb=/srv/share,hostfwd=unix:/run/x-:22",
        ],
        None,
    );
    let v3: serde_json::Value = serde_json::from_str(&explain::render_json(&r3)).unwrap();
    assert_eq!(v3["smb"]["addr"], "10.0.2.4");
    keys("", &v3, &mut all);
    for k in ["smb.addr", "smb.export", "guest_forwards[].argv"] {
        assert!(all.iter().any(|a| a == k), "{k} not printed");
    }
    for k in all {
        assert!(
            doc.contains(&format!("`{k}`")),
            "EXPLAIN.md does not document `{k}`"
        );
    }
}

// ---------------------------------------------------------------- passt's switches

#[test]
fn passt_switches_turn_one_service_off_each() {
    use policy::Services;
    assert_eq!(ok(&[], None).plan.services, Services::ALL);
    let all = Services::ALL;
    let cases: &[(&str, Services)] = &[
        ("--no-dhcp", Services { dhcp: false, ..all }),
        (
            "--no-dhcpv6",
            Services {
                dhcpv6: false,
                ..all
            },
        ),
        // Router advertisements are NDP messages: --no-ndp stops them too.
        (
            "--no-ndp",
            Services {
                ndp: false,
                ra: false,
                ..all
            },
        ),
        ("--no-ra", Services { ra: false, ..all }),
        ("--no-tcp", Services { tcp: false, ..all }),
        ("--no-udp", Services { udp: false, ..all }),
        ("--no-icmp", Services { icmp: false, ..all }),
    ];
    for (switch, want) in cases {
        let r = ok(&[switch], None);
        assert_eq!(r.plan.services, *want, "{switch}");
        let dead_dns = warnings(&r).iter().any(|w| w.contains("its relay is UDP"));
        assert_eq!(
            dead_dns,
            *switch == "--no-udp",
            "{switch}: {:?}",
            warnings(&r)
        );
        assert!(r.plan.ipv4.is_some() && r.plan.ipv6.is_some(), "{switch}");
        assert_eq!(r.inputs, [*switch], "{switch}");
        assert_eq!(
            warnings(&r).len(),
            usize::from(dead_dns),
            "{switch}: {:?}",
            warnings(&r)
        );
    }
    let r = ok(
        &[
            "--no-dhcp",
            "--no-dhcpv6",
            "--no-ndp",
            "--no-ra",
            "--no-tcp",
            "--no-udp",
            "--no-icmp",
        ],
        None,
    );
    assert_eq!(r.plan.services.off().len(), 7);

    // Laid over the other front ends, like every passt-style option.
    let r = ok(
        &["--slirp", "net=192.168.76.0/24", "--no-icmp", "--no-ra"],
        None,
    );
    assert_eq!(v4(&r.plan).guest, "192.168.76.15");
    assert_eq!(r.plan.services.off(), ["ra", "icmp"]);
    assert_eq!(r.inputs[1], "--no-ra --no-icmp");
    let r = ok(&["--libvirt-xml", "seed.xml", "--no-dhcp"], Some(SEED_XML));
    assert_eq!(v4(&r.plan).guest, "169.254.2.15");
    assert!(!r.plan.services.dhcp);
    // Forwards of the protocol left on are kept.
    let r = ok(&["-t", "8080", "--no-udp", "-u", "none"], None);
    assert_eq!(r.plan.forwards.len(), 1);
    assert!(ok(&["-u", "5353", "--no-tcp"], None).plan.services.udp);
}

#[test]
fn ipv4_only_and_ipv6_only_drop_the_other_family() {
    for switch in ["-4", "--ipv4-only"] {
        let r = ok(&[switch], None);
        assert!(r.plan.ipv6.is_none(), "{switch}");
        assert_eq!(v4(&r.plan).guest, "10.0.2.15", "{switch}");
        assert_eq!(r.plan.services, policy::Services::ALL);
    }
    for switch in ["-6", "--ipv6-only"] {
        let r = ok(&[switch], None);
        assert!(r.plan.ipv4.is_none(), "{switch}");
        assert_eq!(r.plan.ipv6.as_ref().unwrap().gateway.to_string(), "fec0::2");
    }
    // The family given is kept, with the other front ends too.
    let r = ok(&["--slirp", "net=192.168.76.0/24", "-4"], None);
    assert_eq!(v4(&r.plan).guest, "192.168.76.15");
    assert!(r.plan.ipv6.is_none());
    let r = ok(
        &["--profile", "passt", "--address", "fd00::10/64", "-6"],
        None,
    );
    assert!(r.plan.ipv4.is_none());
    assert_eq!(r.plan.ipv6.unwrap().prefix.to_string(), "fd00::");
    let r = ok(&["--libvirt-xml", "seed.xml", "-4"], Some(SEED_XML));
    assert_eq!(v4(&r.plan).guest, "169.254.2.15");
    assert!(r.plan.ipv6.is_none());
    // Saying again what --slirp said is fine.
    assert!(ok(&["--slirp", "ipv4=on", "-4"], None).plan.ipv6.is_none());
    assert!(ok(&["--slirp", "ipv6=off", "-4"], None).plan.ipv6.is_none());
}

#[test]
fn passt_switch_conflicts_name_both_sides() {
    let ipv6_xml = xml_with("<ip family='ipv6' address='fd00::' prefix='64'/>");
    let ipv4_xml = SEED_XML;
    let cases: &[(&[&str], Option<&str>, &str)] = &[
        (
            &["-4", "-6"],
            None,
            "-4/--ipv4-only and -6/--ipv6-only exclude each other: give one",
        ),
        (
            &["--ipv4-only", "--ipv6-only"],
            None,
            "-4/--ipv4-only and -6/--ipv6-only exclude each other: give one",
        ),
        (
            &["-4", "--address", "fec0::5"],
            None,
            "--address fec0::5: IPv6 is disabled by -4/--ipv4-only",
        ),
        (
            &["--address", "10.0.0.1/24", "--address", "fd00::5/64", "-4"],
            None,
            "--address fd00::5/64: IPv6 is disabled by -4/--ipv4-only",
        ),
        (
            &["-4", "--gateway", "fec0::1"],
            None,
            "--gateway fec0::1: IPv6 is disabled by -4/--ipv4-only",
        ),
        (
            &["-4", "--dns", "fec0::3"],
            None,
            "--dns fec0::3: IPv6 is disabled by -4/--ipv4-only",
        ),
        (
            &["-6", "--address", "10.0.0.1/24"],
            None,
            "--address 10.0.0.1/24: IPv4 is disabled by -6/--ipv6-only",
        ),
        (
            &["-6", "--netmask", "24"],
            None,
            "--netmask 24: IPv4 is disabled by -6/--ipv6-only",
        ),
        (
            &["-6", "--dns", "10.0.2.3"],
            None,
            "--dns 10.0.2.3: IPv4 is disabled by -6/--ipv6-only",
        ),
        (
            &["--slirp", "ipv6-net=fd00::/64", "-4"],
            None,
            "--slirp ipv6-net=fd00::/64: IPv6 is disabled by -4/--ipv4-only",
        ),
        (
            &["--slirp", "net=10.0.0.0/8", "-6"],
            None,
            "--slirp net=10.0.0.0/8: IPv4 is disabled by -6/--ipv6-only",
        ),
        (
            &["--libvirt-xml", "d.xml", "-4"],
            Some(&ipv6_xml),
            "<ip family='ipv6' address='fd00::' prefix='64'/>: IPv6 is disabled by -4/--ipv4-only",
        ),
        (
            &["--libvirt-xml", "seed.xml", "-6"],
            Some(ipv4_xml),
            "<ip family='ipv4' address='169.254.0.0' prefix='16'/>: IPv4 is disabled by \
             -6/--ipv6-only",
        ),
        (
            &["--slirp", "ipv4=off", "-4"],
            None,
            "-4/--ipv4-only keeps only IPv4, which --slirp ipv4=off disables",
        ),
        (
            &["--slirp", "ipv6=on", "-4"],
            None,
            "-4/--ipv4-only keeps only IPv4, which --slirp ipv6=on (without ipv4=on) disables",
        ),
        (
            &["--slirp", "ipv6=off", "-6"],
            None,
            "-6/--ipv6-only keeps only IPv6, which --slirp ipv6=off disables",
        ),
        (
            &["-6", "--slirp", "guestfwd=tcp:10.0.2.100:1234-cmd:cat"],
            None,
            "--slirp guestfwd=tcp:10.0.2.100:1234-cmd:cat: a guest forward needs IPv4, which is \
             disabled by -6/--ipv6-only",
        ),
        (
            &["-t", "8080", "--no-tcp"],
            None,
            "-t 8080 and --no-tcp: TCP forwarding needs TCP",
        ),
        (
            &["--no-tcp", "-u", "53", "-t", "1000-1010:2000-2010,~1005"],
            None,
            "-t 1000-1010:2000-2010,~1005 and --no-tcp: TCP forwarding needs TCP",
        ),
        (
            &["--slirp", "hostfwd=tcp::2222-:22", "--no-tcp"],
            None,
            "--slirp hostfwd=tcp::2222-:22 and --no-tcp: TCP forwarding needs TCP",
        ),
        (
            &["--slirp", "hostfwd=unix:/tmp/vnu.sock-:22", "--no-tcp"],
            None,
            "--slirp hostfwd=unix:/tmp/vnu.sock-:22 and --no-tcp: TCP forwarding needs TCP",
        ),
        (
            &[
                "--slirp",
                "guestfwd=tcp:10.0.2.100:1234-cmd:cat",
                "--no-tcp",
            ],
            None,
            "--slirp guestfwd=tcp:10.0.2.100:1234-cmd:cat and --no-tcp: a guest forward needs TCP",
        ),
        (
            &["-u", "5353", "--no-udp"],
            None,
            "-u 5353 and --no-udp: UDP forwarding needs UDP",
        ),
        (
            &["--slirp", "hostfwd=udp::5353-:53", "--no-udp"],
            None,
            "--slirp hostfwd=udp::5353-:53 and --no-udp: UDP forwarding needs UDP",
        ),
    ];
    for (argv, xml, want) in cases {
        assert_eq!(err(argv, *xml), *want, "{argv:?}");
    }
}

#[test]
fn explain_shows_the_services_switched_off() {
    let text = |argv: &[&str]| {
        let a = args(argv);
        let r = a.build_with_xml(None).unwrap();
        explain::render_text(&r)
    };
    let t = text(&["--no-dhcp", "--no-ndp"]);
    assert!(
        t.starts_with(
            "Guest network plan (profile slirp)\n\
             \x20 from              --no-dhcp --no-ndp\n\
             \x20 services off      dhcp, ndp, ra\n\
             IPv4\n"
        ),
        "{t}"
    );
    assert!(
        t.contains(
            "guest address     10.0.2.15/24 (netmask 255.255.255.0), not by DHCP (--no-dhcp): \
             configure it in the guest\n"
        ),
        "{t}"
    );
    assert!(
        t.contains("prefix            fec0::/64 (not advertised: no router advertisements)\n"),
        "{t}"
    );
    assert!(
        text(&[
            "--no-tcp",
            "--no-udp",
            "--no-icmp",
            "--no-dhcpv6",
            "--no-ra"
        ])
        .contains("\n  services off      dhcpv6, ra, tcp, udp, icmp\n")
    );
    // Nothing off: no line, and the usual wording.
    let t = text(&[]);
    assert!(!t.contains("services off"), "{t}");
    assert!(t.contains("(netmask 255.255.255.0), by DHCP\n"), "{t}");
    assert!(t.contains("fec0::/64 (router advertisements)\n"), "{t}");
    // The example in EXPLAIN.md is this line.
    assert!(
        include_str!("../../policy/EXPLAIN.md").contains("\n  services off      dhcp, ndp, ra\n")
    );

    let json = |argv: &[&str]| -> serde_json::Value {
        let r = args(argv).build_with_xml(None).unwrap();
        serde_json::from_str(&explain::render_json(&r)).unwrap()
    };
    assert_eq!(
        json(&[])["services"],
        serde_json::json!({
            "dhcp": true, "dhcpv6": true, "ndp": true, "ra": true,
            "tcp": true, "udp": true, "icmp": true,
        })
    );
    assert_eq!(
        json(&["--no-ndp", "--no-udp", "-4"])["services"],
        serde_json::json!({
            "dhcp": true, "dhcpv6": true, "ndp": false, "ra": false,
            "tcp": true, "udp": false, "icmp": true,
        })
    );
    assert_eq!(json(&["-4"])["ipv6"], serde_json::Value::Null);
    assert_eq!(json(&["-6"])["ipv4"], serde_json::Value::Null);
    let doc = include_str!("../../policy/EXPLAIN.md");
    for key in ["dhcp", "dhcpv6", "ndp", "ra", "tcp", "udp", "icmp"] {
        assert!(
            doc.contains(&format!("| `services.{key}` | bool |")),
            "{key}"
        );
    }
}

#[test]
fn passt_switches_parse_as_passt_spells_them() {
    let a = args(&["-4", "--no-dhcp", "--no-dhcpv6", "--no-ndp", "--no-ra"]);
    assert!(a.ipv4_only && !a.ipv6_only);
    assert!(a.no_dhcp && a.no_dhcpv6 && a.no_ndp && a.no_ra);
    assert!(!a.no_tcp && !a.no_udp && !a.no_icmp);
    let a = args(&["--ipv6-only", "--no-tcp", "--no-udp", "--no-icmp"]);
    assert!(a.ipv6_only && !a.ipv4_only);
    assert!(a.no_tcp && a.no_udp && a.no_icmp);
    assert!(args(&["--ipv4-only"]).ipv4_only);
    assert!(args(&["-6"]).ipv6_only);
    // Flags take no value.
    assert!(Cli::try_parse_from(["x", "--no-dhcp=yes"]).is_err());
}
