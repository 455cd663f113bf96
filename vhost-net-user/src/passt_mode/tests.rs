//! passt's command lines as libvirt, libguestfs and QEMU give them, read into what the
//! program runs with and what the guest sees.

use super::logging::*;
use super::*;
use policy::{HostListen, NetPlan, Proto};
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

fn parsed(argv: &[&str]) -> PasstArgs {
    parse(std::iter::once("passt").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?}: exit {e:?}"))
}

fn converted(argv: &[&str]) -> Converted {
    convert(&parsed(argv)).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// The one line a command line is refused with (by clap or by `convert`).
fn refused(argv: &[&str]) -> String {
    let p = parse(std::iter::once("passt").chain(argv.iter().copied()));
    match p {
        Err(Exit(status)) => {
            assert_eq!(status, USAGE_STATUS, "{argv:?}");
            "clap".to_string()
        }
        Ok(p) => match convert(&p) {
            Ok(c) => panic!("{argv:?}: accepted: {c:?}"),
            Err(e) => {
                assert!(!e.contains('\n'), "{argv:?}: more than one line: {e}");
                e
            }
        },
    }
}

fn plan_of(c: &Converted) -> NetPlan {
    c.args.policy.build().unwrap().plan
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `(proto, host first, host last, guest first)` of each forward.
fn forwards(plan: &NetPlan) -> Vec<(Proto, u16, u16, u16)> {
    plan.forwards
        .iter()
        .map(|f| match &f.host {
            HostListen::Inet { ports, .. } => (f.proto, ports.first, ports.last, f.guest_port),
            HostListen::Unix { .. } => panic!("unix forward"),
        })
        .collect()
}

#[test]
fn the_name_decides_the_mode() {
    assert!(invoked_as_passt(Some(OsStr::new("passt"))));
    assert!(invoked_as_passt(Some(OsStr::new("/usr/local/bin/passt"))));
    assert!(!invoked_as_passt(Some(OsStr::new("vhost-net-user"))));
    assert!(!invoked_as_passt(Some(OsStr::new("passt.avx2"))));
    assert!(!invoked_as_passt(Some(OsStr::new("/usr/bin/passt/x"))));
    assert!(!invoked_as_passt(None));
}

#[test]
fn libvirt_vhostuser_command_line() {
    let c = converted(&[
        "--vhost-user",
        "--one-off",
        "--socket",
        "/run/libvirt/qemu/passt/3-DOM-net0.socket",
        "--pid",
        "/run/libvirt/qemu/passt/3-DOM-net0-passt.pid",
        "--address",
        "169.254.0.0",
        "--netmask",
        "16",
        "--tcp-ports",
        "2222:22",
    ]);
    assert!(c.vhost_user && !c.foreground && c.fd.is_none());
    assert_eq!(
        c.args.socket_path.as_deref(),
        Some(Path::new("/run/libvirt/qemu/passt/3-DOM-net0.socket"))
    );
    assert_eq!(c.args.stream, None);
    assert!(c.args.one_off);
    assert_eq!(
        c.args.pid_file.as_deref(),
        Some(Path::new("/run/libvirt/qemu/passt/3-DOM-net0-passt.pid"))
    );
    assert_eq!(c.level, log::LevelFilter::Info);
    assert_eq!(c.log_file, None);
    // The slirp profile's reading: the seed's view.
    let plan = plan_of(&c);
    let v4 = plan.ipv4.as_ref().unwrap();
    assert_eq!(v4.network.to_string(), "169.254.0.0");
    assert_eq!(v4.prefix_len, 16);
    assert_eq!(v4.dhcp_start.to_string(), "169.254.2.15");
    assert_eq!(v4.gateway.to_string(), "169.254.2.2");
    assert_eq!(forwards(&plan), [(Proto::Tcp, 2222, 2222, 22)]);
    assert!(plan.map_gateway_to_loopback);
}

#[test]
fn libvirt_user_command_line_is_the_stream_link() {
    let c = converted(&[
        "--one-off",
        "--socket",
        "/run/libvirt/qemu/passt/3-DOM-net0.socket",
        "--pid",
        "/run/libvirt/qemu/passt/3-DOM-net0-passt.pid",
        "--address",
        "169.254.0.0",
        "--netmask",
        "16",
        "--tcp-ports",
        "2222:22",
    ]);
    assert!(!c.vhost_user);
    assert_eq!(c.args.socket_path, None);
    assert_eq!(
        c.args.stream.as_deref(),
        Some(Path::new("/run/libvirt/qemu/passt/3-DOM-net0.socket"))
    );
}

#[test]
fn libvirt_optional_options() {
    let c = converted(&[
        "--one-off",
        "--socket",
        "/run/x.socket",
        "--pid",
        "/run/x.pid",
        "--mtu",
        "1400",
        "--log-file",
        "/var/log/passt.log",
        "--hostname",
        "vm1",
        "--address",
        "10.1.0.0",
        "--netmask",
        "24",
        "--address",
        "fd00::",
        "--tcp-ports",
        "2222:22",
        "--udp-ports",
        "5353",
    ]);
    assert_eq!(c.log_file.as_deref(), Some(Path::new("/var/log/passt.log")));
    let plan = plan_of(&c);
    assert_eq!(plan.mtu, 1400);
    assert_eq!(plan.dhcp.mtu_option, Some(1400));
    assert_eq!(plan.dhcp.hostname.as_deref(), Some("vm1"));
    assert_eq!(
        plan.ipv4.as_ref().unwrap().dhcp_start.to_string(),
        "10.1.0.15"
    );
    assert_eq!(plan.ipv6.as_ref().unwrap().prefix.to_string(), "fd00::");
    assert_eq!(
        forwards(&plan),
        [(Proto::Tcp, 2222, 2222, 22), (Proto::Udp, 5353, 5353, 5353)]
    );
    // libvirt's `<source dev=...>` and `<backend fqdn=...>`: not this backend's.
    let e = refused(&["--socket", "/run/x.socket", "--interface", "eth0"]);
    assert!(e.starts_with("-i/--interface eth0: not supported"), "{e}");
    let e = refused(&["--socket", "/run/x.socket", "--fqdn", "vm1.example.org"]);
    assert!(
        e.starts_with("--fqdn vm1.example.org: not supported"),
        "{e}"
    );
}

#[test]
fn libguestfs_command_line() {
    let c = converted(&[
        "--one-off",
        "--socket",
        "/tmp/libguestfsXXXX/passt.sock",
        "--pid",
        "/tmp/libguestfsXXXX/passt.pid",
        "--address",
        "169.254.2.15",
        "--netmask",
        "16",
        "--mac-addr",
        "52:56:00:00:00:02",
        "--gateway",
        "169.254.2.2",
    ]);
    assert!(c.args.stream.is_some() && c.args.one_off);
    let plan = plan_of(&c);
    let v4 = plan.ipv4.as_ref().unwrap();
    assert_eq!(v4.dhcp_start.to_string(), "169.254.2.15");
    assert_eq!(v4.prefix_len, 16);
    assert_eq!(v4.gateway.to_string(), "169.254.2.2");
    assert_eq!(plan.gateway_mac.to_string(), "52:56:00:00:00:02");
    // It first checks that `passt --help` exits 0 or 1.
    assert_eq!(
        parse(["passt", "--help"]).unwrap_err(),
        Exit(0),
        "--help exits 0"
    );
}

#[test]
fn qemu_netdev_passt_command_line() {
    let c = converted(&[
        "--quiet",
        "--mtu",
        "1500",
        "--address",
        "10.0.2.15",
        "--netmask",
        "24",
        "--mac-addr",
        "52:55:0a:00:02:02",
        "--gateway",
        "10.0.2.2",
        "--dns",
        "10.0.2.3",
        "--map-host-loopback",
        "10.0.2.2",
        "--map-guest-addr",
        "none",
        "--dns-forward",
        "10.0.2.3",
        "--no-icmp",
        "--no-ra",
        "--search",
        "a.example b.example",
        "--tcp-ports",
        "2222:22,8080",
        "--udp-ports",
        "5353",
        "--pid",
        "/tmp/passt-ABC123.pid",
        "--fd",
        "3",
    ]);
    assert_eq!(c.fd, Some(3));
    assert!(c.args.one_off, "--fd implies --one-off");
    assert_eq!(c.args.socket_path, None);
    assert_eq!(c.args.stream, None);
    assert!(!c.vhost_user);
    assert_eq!(c.level, log::LevelFilter::Warn);
    let plan = plan_of(&c);
    let v4 = plan.ipv4.as_ref().unwrap();
    assert_eq!(
        (
            v4.dhcp_start.to_string(),
            v4.gateway.to_string(),
            v4.dns.to_string()
        ),
        ("10.0.2.15".into(), "10.0.2.2".into(), "10.0.2.3".into())
    );
    assert_eq!(plan.dhcp.search, ["a.example", "b.example"]);
    assert!(!plan.services.icmp && !plan.services.ra);
    assert!(plan.map_gateway_to_loopback);
    assert_eq!(
        forwards(&plan),
        [
            (Proto::Tcp, 2222, 2222, 22),
            (Proto::Tcp, 8080, 8080, 8080),
            (Proto::Udp, 5353, 5353, 5353)
        ]
    );

    let c = converted(&[
        "--quiet",
        "--vhost-user",
        "--pid",
        "/tmp/p.pid",
        "--fd",
        "3",
    ]);
    assert!(c.vhost_user && c.fd == Some(3) && c.args.one_off);
    let c = converted(&["--quiet", "--ipv4-only", "--no-dhcpv6", "--fd", "3"]);
    assert!(plan_of(&c).ipv6.is_none());
    let c = converted(&["--quiet", "--ipv6-only", "--fd", "3"]);
    assert!(plan_of(&c).ipv4.is_none());
    let c = converted(&["--quiet", "--map-host-loopback", "none", "--fd", "3"]);
    assert!(!plan_of(&c).map_gateway_to_loopback);
    let c = converted(&["--no-map-gw", "--fd", "3"]);
    assert!(!plan_of(&c).map_gateway_to_loopback);
    let c = converted(&["--no-dhcp-search", "--search", "x.example", "--fd", "3"]);
    assert!(plan_of(&c).dhcp.search.is_empty());
    let c = converted(&[
        "--dns-host",
        "192.0.2.53",
        "--dns-host",
        "2001:db8::53",
        "--fd",
        "3",
    ]);
    assert_eq!(c.dns_hosts, [ip("192.0.2.53"), ip("2001:db8::53")]);
}

#[test]
fn mappings_the_engine_does_not_make_are_refused() {
    for (argv, want) in [
        (
            &["--map-host-loopback", "10.0.2.9"][..],
            "--map-host-loopback 10.0.2.9: not supported",
        ),
        (
            &["--no-map-gw", "--map-host-loopback", "10.0.2.2"][..],
            "--map-host-loopback 10.0.2.2: not supported",
        ),
        (
            &["--map-guest-addr", "10.0.2.9"][..],
            "--map-guest-addr 10.0.2.9: not supported",
        ),
        (
            &["--dns-forward", "10.0.2.9"][..],
            "--dns-forward 10.0.2.9: not supported",
        ),
        (
            &["--dns-forward", "nonsense"][..],
            "--dns-forward nonsense: not an IPv4 or IPv6 address",
        ),
        (
            &["--dns-host", "0.0.0.0"][..],
            "--dns-host 0.0.0.0: not a host nameserver address",
        ),
        (
            &["--outbound", "192.0.2.1"][..],
            "-o/--outbound 192.0.2.1: not supported",
        ),
        (
            &["--outbound-if4", "eth0"][..],
            "--outbound-if4 eth0: not supported",
        ),
        (
            &["--outbound-if6", "eth0"][..],
            "--outbound-if6 eth0: not supported",
        ),
        (&["--no-dhcp-dns"][..], "--no-dhcp-dns: not supported"),
        (&["--freebind"][..], "--freebind: not supported"),
        (
            &["--vhost-user", "--migrate-exit"][..],
            "--migrate-exit: not supported",
        ),
        (
            &["--vhost-user", "--migrate-no-linger"][..],
            "--migrate-no-linger: not supported",
        ),
        (&["-f", "--stats", "10"][..], "--stats 10: not supported"),
        (
            &["-c", "/tmp/c"][..],
            "-c/--conf-path /tmp/c: not supported",
        ),
        (
            &["--chroot-fallback"][..],
            "--chroot-fallback: not supported",
        ),
        (&["x"][..], "Extra non-option argument: x"),
    ] {
        let argv: Vec<&str> = argv.iter().copied().chain(["--fd", "3"]).collect();
        let e = refused(&argv);
        assert!(e.starts_with(want), "{argv:?}: {e}");
    }
    // --dns-forward at the DNS address the guest is offered is what the relay does.
    converted(&["--dns-forward", "10.0.2.3", "--fd", "3"]);
    converted(&[
        "--dns",
        "10.0.2.9",
        "--dns-forward",
        "10.0.2.9",
        "--fd",
        "3",
    ]);
}

#[test]
fn pasta_options_are_refused_as_passt_refuses_them() {
    for (argv, opt) in [
        (&["-T", "22"][..], "-T"),
        (&["--tcp-ns", "22"][..], "-T"),
        (&["-U", "53"][..], "-U"),
        (&["--udp-ns", "53"][..], "-U"),
        (&["-I", "tap0"][..], "-I"),
        (&["--userns", "/proc/1/ns/user"][..], "--userns"),
        (&["--netns", "x"][..], "--netns"),
        (&["--netns-only"][..], "--netns-only"),
        (&["--ns-mac-addr", "52:54:00:00:00:01"][..], "--ns-mac-addr"),
        (&["--no-netns-quit"][..], "--no-netns-quit"),
        (&["--config-net"][..], "--config-net"),
        (&["--no-copy-routes"][..], "--no-copy-routes"),
        (&["--no-copy-addrs"][..], "--no-copy-addrs"),
        (&["--host-lo-to-ns-lo"][..], "--host-lo-to-ns-lo"),
        (&["--dhcp-dns"][..], "--dhcp-dns"),
        (&["--dhcp-search"][..], "--dhcp-search"),
        (&["--splice-only"][..], "--splice-only"),
    ] {
        assert_eq!(
            refused(argv),
            format!("{opt} is for pasta mode only"),
            "{argv:?}"
        );
    }
}

#[test]
fn accepted_without_effect_with_a_word_where_passt_has_one() {
    let c = converted(&["--vhost-user", "--repair-path", "/tmp/r", "--fd", "3"]);
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("migration is not supported"),
        "{:?}",
        c.warnings
    );
    let c = converted(&["-e", "--no-splice", "--fd", "3"]);
    assert_eq!(c.warnings, ["--stderr has no effect (as in passt)"]);
}

#[test]
fn bad_values_are_one_line_naming_them() {
    for (argv, want) in [
        (&["--address", "300.1.1.1"][..], "--address 300.1.1.1"),
        (&["--netmask", "33"][..], "--netmask 33"),
        (&["--mac-addr", "52:54"][..], "--mac-addr 52:54"),
        (&["--mtu", "70000"][..], "--mtu 70000"),
        (&["--gateway", "nonsense"][..], "--gateway nonsense"),
        (&["--tcp-ports", "auto"][..], "-t auto"),
        (&["--tcp-ports", "80-22"][..], "-t 80-22"),
        (&["--udp-ports", "x/53"][..], "-u x/53"),
        (&["--hostname", ""][..], "--hostname "),
        (&["-4", "--address", "fd00::"][..], "--address fd00::"),
    ] {
        let argv: Vec<&str> = argv.iter().copied().chain(["--fd", "3"]).collect();
        let p = parsed(&argv);
        let c = convert(&p).unwrap_or_else(|e| panic!("{argv:?}: refused early: {e}"));
        let e = c.args.policy.build().unwrap_err().to_string();
        assert!(e.contains(want), "{argv:?}: {e}");
        assert!(!e.contains('\n'), "{argv:?}: {e}");
    }
    // What clap refuses is one line too, exit 1.
    for argv in [
        &["--fd", "2"][..],
        &["--fd", "x"][..],
        &["--bogus"][..],
        &["--socket"][..],
    ] {
        assert_eq!(
            parse(std::iter::once("passt").chain(argv.iter().copied())).unwrap_err(),
            Exit(USAGE_STATUS),
            "{argv:?}"
        );
    }
}

#[test]
fn the_last_of_conflicting_options_wins_as_in_passt() {
    assert_eq!(
        converted(&["-q", "-d", "-F", "3"]).level,
        log::LevelFilter::Debug
    );
    assert_eq!(
        converted(&["-d", "-q", "-F", "3"]).level,
        log::LevelFilter::Warn
    );
    assert_eq!(
        converted(&["--trace", "-F", "3"]).level,
        log::LevelFilter::Trace
    );
    assert_eq!(
        converted(&["--trace", "-q", "-F", "3"]).level,
        log::LevelFilter::Warn
    );
    assert_eq!(
        converted(&["-d", "-d", "-F", "3"]).level,
        log::LevelFilter::Debug
    );
    let p = parsed(&["-4", "-6", "-F", "3"]);
    assert!(p.ipv6_only && !p.ipv4_only);
    let p = parsed(&["-6", "-4", "-F", "3"]);
    assert!(p.ipv4_only && !p.ipv6_only);
    let c = converted(&["-s", "/tmp/a.socket", "-F", "3"]);
    assert_eq!((c.fd, c.args.stream), (Some(3), None));
    let c = converted(&["-F", "3", "-s", "/tmp/a.socket"]);
    assert_eq!(c.fd, None);
    assert_eq!(c.args.stream.as_deref(), Some(Path::new("/tmp/a.socket")));
    assert!(c.args.one_off, "-F implied --one-off, as in passt");
    let c = converted(&["-s", "/tmp/a.socket"]);
    assert!(!c.args.one_off);
    // Repeated options add up (or the last wins, for those passt keeps one of).
    let c = converted(&[
        "-t", "22", "-t", "80", "-m", "1400", "-m", "1500", "-F", "3",
    ]);
    let plan = plan_of(&c);
    assert_eq!(
        forwards(&plan),
        [(Proto::Tcp, 22, 22, 22), (Proto::Tcp, 80, 80, 80)]
    );
    assert_eq!(plan.mtu, 1500);
}

#[test]
fn short_options_and_abbreviations_read_as_passt_reads_them() {
    let c = converted(&[
        "-1",
        "-s",
        "/tmp/s",
        "-P",
        "/tmp/p",
        "-a",
        "10.9.0.0",
        "-n",
        "255.255.0.0",
        "-g",
        "10.9.0.1",
        "-M",
        "52:54:00:aa:bb:cc",
        "-D",
        "10.9.0.3",
        "-S",
        "x.example",
        "-H",
        "vm",
        "-m",
        "1500",
        "-p",
        "/tmp/c.pcap",
        "-l",
        "/tmp/l.log",
        "-f",
        "-u",
        "53",
    ]);
    assert!(c.args.one_off && c.foreground);
    assert_eq!(c.args.pcap.as_deref(), Some(Path::new("/tmp/c.pcap")));
    let plan = plan_of(&c);
    let v4 = plan.ipv4.as_ref().unwrap();
    assert_eq!(
        (v4.prefix_len, v4.gateway.to_string(), v4.dns.to_string()),
        (16, "10.9.0.1".into(), "10.9.0.3".into())
    );
    assert_eq!(plan.gateway_mac.to_string(), "52:54:00:aa:bb:cc");
    assert_eq!(plan.dhcp.hostname.as_deref(), Some("vm"));
    // getopt_long's unambiguous prefixes, and `--opt=value`.
    let c = converted(&["--vhost", "--sock=/tmp/s", "--no-dhcp", "--no-dhcpv6"]);
    assert!(c.vhost_user);
    assert_eq!(c.args.socket_path.as_deref(), Some(Path::new("/tmp/s")));
    let plan = plan_of(&c);
    assert!(!plan.services.dhcp && !plan.services.dhcpv6);
    let c = converted(&["--socket-path", "/tmp/t"]);
    assert_eq!(c.args.stream.as_deref(), Some(Path::new("/tmp/t")));
}

#[test]
fn relative_paths_are_made_absolute_before_the_move_to_root() {
    let c = converted(&[
        "-s", "a.socket", "-P", "a.pid", "-l", "a.log", "-p", "a.pcap",
    ]);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.args.stream, Some(cwd.join("a.socket")));
    assert_eq!(c.args.pid_file, Some(cwd.join("a.pid")));
    assert_eq!(c.log_file, Some(cwd.join("a.log")));
    assert_eq!(c.args.pcap, Some(cwd.join("a.pcap")));
}

#[test]
fn port_specs_in_passt_syntax() {
    type Case<'a> = (&'a str, &'a [(u16, u16, u16)]);
    let cases: &[Case] = &[
        ("22", &[(22, 22, 22)]),
        ("22:23", &[(22, 22, 23)]),
        ("22,25", &[(22, 22, 22), (25, 25, 25)]),
        ("22-80", &[(22, 80, 22)]),
        ("22-80:32-90", &[(22, 80, 32)]),
        ("1000-1010:2000", &[(1000, 1010, 2000)]),
        ("127.0.0.1/22", &[(22, 22, 22)]),
        ("::1/22", &[(22, 22, 22)]),
        ("127.0.0.1%lo/22", &[(22, 22, 22)]),
        ("%lo/22", &[(22, 22, 22)]),
        (
            "2000-5000,~3000-3010",
            &[(2000, 2999, 2000), (3011, 5000, 3011)],
        ),
        ("127.0.0.1/20-30,~25", &[(20, 24, 20), (26, 30, 26)]),
        ("~20000-20010", &[(1, 19999, 1), (20011, 65535, 20011)]),
        ("all", &[(1, 65535, 1)]),
        ("none", &[]),
    ];
    for (spec, want) in cases {
        for opt in ["-t", "--tcp-ports", "-u", "--udp-ports"] {
            let plan = plan_of(&converted(&[opt, spec, "-F", "3"]));
            let got: Vec<(u16, u16, u16)> = forwards(&plan)
                .into_iter()
                .map(|(_, a, b, g)| (a, b, g))
                .collect();
            assert_eq!(got, *want, "{opt} {spec}");
        }
    }
    let plan = plan_of(&converted(&[
        "-t",
        "127.0.0.1%lo/22",
        "-u",
        "all",
        "-F",
        "3",
    ]));
    assert_eq!(
        plan.forwards[0].host,
        HostListen::Inet {
            addr: Some(ip("127.0.0.1")),
            iface: Some("lo".into()),
            ports: policy::PortRange {
                first: 22,
                last: 22
            },
        }
    );
    assert_eq!(plan.forwards[1].proto, Proto::Udp);
    assert!(
        plan.forwards[1].skip_ephemeral,
        "all leaves ephemeral ports out"
    );
}

#[test]
fn the_default_socket_is_the_first_free_passt_n_socket() {
    let dir = std::env::temp_dir().join(format!("vnu-passt-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(
        free_default_socket(&dir).unwrap(),
        dir.join("passt_1.socket")
    );
    // Taken by a live listener, by a file of someone's: skipped. Left by a dead one: reused.
    let _live = std::os::unix::net::UnixListener::bind(dir.join("passt_1.socket")).unwrap();
    std::fs::write(dir.join("passt_2.socket"), "not a socket").unwrap();
    drop(std::os::unix::net::UnixListener::bind(dir.join("passt_3.socket")).unwrap());
    assert_eq!(
        free_default_socket(&dir).unwrap(),
        dir.join("passt_3.socket")
    );
    std::fs::write(dir.join("passt_3.socket.x"), "").unwrap();
    for n in 3..=64 {
        let _ = std::fs::remove_file(dir.join(format!("passt_{n}.socket")));
        std::fs::write(dir.join(format!("passt_{n}.socket")), "").unwrap();
    }
    let e = free_default_socket(&dir).unwrap_err();
    assert!(e.starts_with("no free socket path from"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn syslog_messages_are_rfc3164_as_the_c_library_sends_them() {
    // 2026-12-06 22:10:02 as local time.
    let local = 1_796_595_002;
    assert_eq!(
        syslog_datagram(log::Level::Info, local, 42, "info: serving"),
        "<30>Dec  6 22:10:02 passt[42]: info: serving"
    );
    assert_eq!(
        syslog_datagram(log::Level::Error, 0, 7, "x"),
        "<27>Jan  1 00:00:00 passt[7]: x"
    );
    assert!(syslog_datagram(log::Level::Warn, 0, 7, "x").starts_with("<28>"));
    assert!(syslog_datagram(log::Level::Trace, 0, 7, "x").starts_with("<31>"));
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(20_793), (2026, 12, 6));
}

#[test]
fn records_reach_the_log_file_or_syslog_and_the_file_is_private() {
    use log::Log;
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vnu-passt-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("passt.log");
    std::fs::write(&file, "left from before\n").unwrap();
    let conv = converted(&["-l", file.to_str().unwrap(), "-F", "3"]);
    assert_eq!(conv.log_size, DEFAULT_LOG_SIZE);
    let logger = PasstLogger {
        level: log::LevelFilter::Info,
        sink: open_sink(conv.log_file.as_deref(), conv.log_size, false).unwrap(),
        start: Instant::now(),
        utc_offset: 0,
    };
    logger.log(
        &log::Record::builder()
            .level(log::Level::Info)
            .args(format_args!("serving"))
            .build(),
    );
    logger.log(
        &log::Record::builder()
            .level(log::Level::Debug)
            .args(format_args!("not at info"))
            .build(),
    );
    logger.flush();
    let text = std::fs::read_to_string(&file).unwrap();
    let (time, rest) = text.split_once(": ").unwrap();
    assert_eq!(rest, "info: serving\n", "{text:?}");
    assert!(time.parse::<f64>().is_ok(), "{text:?}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never through a symbolic link.
    let link = dir.join("link.log");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let e = open_sink(Some(&link), DEFAULT_LOG_SIZE, false).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");

    let syslogd = UnixDatagram::bind(dir.join("log")).unwrap();
    let client = UnixDatagram::unbound().unwrap();
    client.connect(dir.join("log")).unwrap();
    let logger = PasstLogger {
        level: log::LevelFilter::Info,
        sink: Sink::Syslog(Some(client)),
        start: Instant::now(),
        utc_offset: 0,
    };
    logger.log(
        &log::Record::builder()
            .level(log::Level::Warn)
            .args(format_args!("careful"))
            .build(),
    );
    let mut buf = [0u8; 512];
    let n = syslogd.recv(&mut buf).unwrap();
    let msg = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(msg.starts_with("<28>"), "{msg}");
    assert!(
        msg.ends_with(&format!(" passt[{}]: WARNING: careful", std::process::id())),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_log_file_keeps_under_its_size_dropping_the_oldest_lines() {
    let path = std::env::temp_dir().join(format!("vnu-passt-rotate-{}.log", std::process::id()));
    let mut file = LogFile::create(&path, 100).unwrap();
    for n in 0..40 {
        file.append(format!("line {n:02}\n").as_bytes()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= 100, "{n}: {} bytes", text.len());
        // Whole lines, the newest last, in order, with none missing since the first kept.
        let kept: Vec<u32> = text
            .lines()
            .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
            .collect();
        assert_eq!(kept.last(), Some(&n), "{text:?}");
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{text:?}");
        assert!(text.ends_with('\n'));
    }
    // A record longer than the whole limit keeps its end.
    file.append(&[b'x'; 250]).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 100]);
    let _ = std::fs::remove_file(&path);
    // passt's limits on --log-size.
    assert_eq!(
        converted(&["--log-size", "40960", "-F", "3"]).log_size,
        40_960
    );
    assert_eq!(
        parse(["passt", "--log-size", "4096"]).unwrap_err(),
        Exit(USAGE_STATUS)
    );
}
