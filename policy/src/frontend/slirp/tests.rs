//! `--slirp` read as QEMU reads it.

use super::*;

#[test]
fn tokenizer_follows_qemuopts() {
    let t =
        tokenize("user,id=n0,net=10.0.0.0/8,restrict,dnssearch=a,,b,hostfwd=tcp::1-:2").unwrap();
    assert_eq!(
        t,
        vec![
            ("type".to_string(), "user".to_string()),
            ("id".into(), "n0".into()),
            ("net".into(), "10.0.0.0/8".into()),
            ("restrict".into(), "on".into()),
            ("dnssearch".into(), "a,b".into()),
            ("hostfwd".into(), "tcp::1-:2".into()),
        ]
    );
    assert!(tokenize("").unwrap().is_empty());
}

#[test]
fn net_forms() {
    type Case<'a> = (&'a str, Option<(&'a str, Option<u8>)>);
    let cases: &[Case] = &[
        ("10.1.16.0/20", Some(("10.1.16.0", Some(20)))),
        ("10.0.2.0/255.255.255.0", Some(("10.0.2.0", Some(24)))),
        ("172.17.2.0", Some(("172.17.2.0", None))),
        ("10.0.2.0/32", Some(("10.0.2.0", Some(32)))),
        ("10.0.2.0/4", Some(("10.0.2.0", Some(4)))),
        ("10.0.2.0/3", None),
        ("10.0.2.0/33", None),
        ("10.0.2.0/", None),
        ("10.0.2.0/255.0.255.0", None),
        ("10.0.2.0/24x", None),
        ("x/24", None),
    ];
    for (v, want) in cases {
        let got = parse_net("net", v).ok();
        let want = want.map(|(a, p)| (a.parse::<Ipv4Addr>().unwrap(), p));
        assert_eq!(got, want, "net={v}");
    }
}

#[test]
fn hostfwd_forms() {
    let f = parse_hostfwd("tcp::2222-:22").unwrap();
    assert_eq!(f.proto, Proto::Tcp);
    assert_eq!(
        f.host,
        HostListen::Inet {
            addr: Some("0.0.0.0".parse().unwrap()),
            iface: None,
            ports: PortRange::single(2222)
        }
    );
    assert_eq!(f.guest_addr, None);
    assert_eq!(f.guest_port, 22);

    let f = parse_hostfwd("udp:127.0.0.1:5353-10.0.2.15:53").unwrap();
    assert_eq!(f.proto, Proto::Udp);
    assert_eq!(f.guest_addr, Some("10.0.2.15".parse().unwrap()));

    let f = parse_hostfwd(":127.0.0.1:0x50-:80").unwrap();
    assert!(matches!(f.host, HostListen::Inet { ports, .. } if ports.first == 80));

    let f = parse_hostfwd("unix:/tmp/s.sock-:22").unwrap();
    assert_eq!(
        f.host,
        HostListen::Unix {
            path: "/tmp/s.sock".into()
        }
    );

    let bad = [
        ("tcp", "No : separators"),
        ("sctp::1-:2", "Bad protocol name"),
        ("tcp:12", "Missing : separator"),
        ("tcp:x:1-:2", "Bad host address"),
        ("tcp::1:2", "Bad host port separator"),
        ("tcp::70000-:2", "Bad host port"),
        ("tcp::1-2", "Missing guest address"),
        ("tcp::1-x:2", "Bad guest address"),
        ("tcp::1-:0", "Bad guest port"),
        ("tcp::1-:65536", "Bad guest port"),
        ("unix:rel-:22", "unix socket path must be absolute"),
        ("unix:-:22", "Missing unix socket path"),
        ("unix:/p", "Missing - separator"),
    ];
    for (rule, why) in bad {
        let e = parse_hostfwd(rule).unwrap_err().to_string();
        assert!(e.contains(why), "hostfwd={rule}: {e}");
        assert!(e.contains(rule), "hostfwd={rule}: {e}");
    }
}

#[test]
fn ipv4_ipv6_switches_as_qemu() {
    // (options, ipv4 on, ipv6 on)
    let cases = [
        ("", true, true),
        ("ipv4=on", true, false),
        ("ipv6=on", false, true),
        ("ipv4=on,ipv6=on", true, true),
        ("ipv4=off", false, true),
        ("ipv6=off", true, false),
        ("ipv4=off,ipv6=on", false, true),
    ];
    for (o, v4, v6) in cases {
        let r = parse(o).unwrap();
        assert_eq!(r.ipv4_off.is_none(), v4, "{o}");
        assert_eq!(r.ipv6_off.is_none(), v6, "{o}");
    }
    for (o, want) in [
        ("ipv4=off,ipv6=off", "IPv4 and IPv6 disabled"),
        (
            "ipv4=off,net=10.0.0.0/8",
            "IPv4 disabled but net/host/dns provided",
        ),
        (
            "ipv6=on,dns=10.0.2.3",
            "IPv4 disabled but net/host/dns provided",
        ),
        (
            "ipv6=off,ipv6-dns=fec0::3",
            "IPv6 disabled but prefix/host6/dns6",
        ),
        (
            "ipv4=on,ipv6-net=fec0::/64",
            "IPv6 disabled but prefix/host6/dns6",
        ),
        ("ipv4=maybe", "expects 'on' or 'off'"),
    ] {
        let e = parse(o).unwrap_err().to_string();
        assert!(e.contains(want), "{o}: {e}");
    }
}

#[test]
fn option_errors_name_the_option() {
    let cases = [
        ("net=x", "--slirp net=x"),
        ("net=10.0.0.0/33", "must be in range 4-32"),
        ("host=x", "--slirp host=x: not an IPv4 address"),
        ("dns=1.2.3.x", "--slirp dns=1.2.3.x"),
        ("dhcpstart=y", "--slirp dhcpstart=y"),
        ("ipv6-prefix=x", "--slirp ipv6-prefix=x: not an IPv6 prefix"),
        ("ipv6-prefixlen=127", "QEMU accepts 0-126"),
        ("ipv6-net=fec0::/200", "QEMU accepts 0-126"),
        ("ipv6-net=fec0::/x", "expects a number after '/'"),
        ("ipv6-host=x", "--slirp ipv6-host=x"),
        ("domainname=", "cannot be empty"),
        ("dnssearch=a..b", "--slirp dnssearch=a..b"),
        ("guestfwd=tcp:10.0.2.100:1234-chr0", "only QEMU can reach"),
        (
            "smbserver=10.0.2.x",
            "--slirp smbserver=10.0.2.x: not an IPv4 address (QEMU: Failed to parse SMB address)",
        ),
        ("smb=", "--slirp smb=: expects the directory to share"),
        ("bogus=1", "invalid parameter 'bogus'"),
        ("type=tap", "only the 'user' netdev type"),
        ("restrict=sometimes", "--slirp restrict=sometimes"),
    ];
    for (o, want) in cases {
        let e = parse(o).unwrap_err().to_string();
        assert!(e.contains(want), "{o}: {e}");
    }
    let long = "x".repeat(256);
    for o in ["hostname", "domainname", "tftp-server-name"] {
        let e = parse(&format!("{o}={long}")).unwrap_err().to_string();
        assert!(e.contains("cannot exceed 255 bytes"), "{o}: {e}");
    }
    let e = parse(&format!("bootfile={}", "b".repeat(128)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shorter than 128 bytes"), "{e}");
}

#[test]
fn repeated_and_legacy_options() {
    let r = parse("net=10.0.0.0/8,net=192.168.0.0/16").unwrap();
    assert_eq!(r.v4_addr.unwrap().value, Ipv4Addr::new(192, 168, 0, 0));
    let r = parse("ip=10.9.0.0").unwrap();
    assert_eq!(r.v4_prefix.unwrap().value, 24);
    let r = parse("dnssearch=a.example,dnssearch=b.example").unwrap();
    assert_eq!(r.search.unwrap(), vec!["a.example", "b.example"]);
    let r = parse("ipv6-prefix=2001:db8::,ipv6-prefixlen=48,ipv6-net=fd00::/56").unwrap();
    assert_eq!(
        r.v6_addr.unwrap().value,
        "fd00::".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(r.v6_prefix.unwrap().value, 56);
    let r = parse("ipv6-net=fd00::").unwrap();
    assert_eq!(r.v6_prefix.unwrap().value, 64);
    let r = parse("ipv6-prefixlen=0").unwrap();
    assert_eq!(r.v6_prefix.unwrap().value, 64);
    assert_eq!(r.notes.len(), 1);
}

/// The guest forwards of a parsed option string, as `(addr, port, command, argv)`.
fn guestfwds(opts: &str) -> Vec<(Option<Ipv4Addr>, u16, String, Vec<String>)> {
    parse(opts)
        .unwrap_or_else(|e| panic!("{opts}: {e}"))
        .guest_forwards
        .into_iter()
        .map(|g| (g.value.addr, g.value.port, g.value.command, g.value.argv))
        .collect()
}

#[test]
fn guestfwd_forms() {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let a100 = Some(Ipv4Addr::new(10, 0, 2, 100));
    assert_eq!(
        guestfwds("guestfwd=tcp:10.0.2.100:1234-cmd:netcat 127.0.0.1 4321"),
        vec![(
            a100,
            1234,
            "netcat 127.0.0.1 4321".to_string(),
            words(&["netcat", "127.0.0.1", "4321"])
        )]
    );
    // Empty protocol and server, 0.0.0.0 (libslirp's "not given"), inet_aton forms, strtol.
    let r = guestfwds(
        "guestfwd=::80-cmd:cat,guestfwd=:10.0.2.100:81-cmd:cat,\
         guestfwd=tcp:0.0.0.0:82-cmd:cat,guestfwd=tcp:10.0.0x2.100:+83-cmd:cat",
    );
    let got: Vec<_> = r.iter().map(|(a, p, ..)| (*a, *p)).collect();
    assert_eq!(got, vec![(None, 80), (a100, 81), (None, 82), (a100, 83)]);
    // `,,` is QemuOpts' comma; quotes and spaces reach the splitter untouched.
    let r = guestfwds(
        "net=10.0.0.0/8,guestfwd=tcp:10.0.2.100:1234-cmd:sh -c 'echo a,,b' \"x y\",restrict",
    );
    assert_eq!(r[0].2, "sh -c 'echo a,b' \"x y\"");
    assert_eq!(r[0].3, words(&["sh", "-c", "echo a,b", "x y"]));
    // A `-` in the command is not a separator any more.
    let r = guestfwds("guestfwd=tcp:10.0.2.100:1234-cmd:socat - TCP:127.0.0.1:22");
    assert_eq!(r[0].3, words(&["socat", "-", "TCP:127.0.0.1:22"]));
    assert_eq!(guestfwds("hostfwd=tcp::1-:2"), vec![]);
}

#[test]
fn guestfwd_errors() {
    let rule = "invalid guest forwarding rule";
    let cases = [
        (
            "cmd",
            format!("{rule} (expected [tcp]:[SERVER]:PORT-cmd:COMMAND)"),
        ),
        (
            "udp:10.0.2.100:1234-cmd:cat",
            format!("{rule} (the protocol must be tcp or empty; QEMU forwards no UDP)"),
        ),
        (
            "TCP:10.0.2.100:1234-cmd:cat",
            format!("{rule} (the protocol must be tcp or empty; QEMU forwards no UDP)"),
        ),
        (
            "tcp:1234-chr0",
            format!("{rule} (missing : after the server address)"),
        ),
        ("tcp:x:1234-cmd:cat", format!("{rule} (bad server address)")),
        (
            "tcp:10.0.2.100:1234",
            format!("{rule} (missing - after the port)"),
        ),
        (
            "tcp::x1-cmd:cat",
            format!("{rule} (the port must be a number from 1 to 65535)"),
        ),
        (
            "tcp::0-cmd:cat",
            format!("{rule} (the port must be a number from 1 to 65535)"),
        ),
        (
            "tcp::-cmd:cat",
            format!("{rule} (the port must be a number from 1 to 65535)"),
        ),
        (
            "tcp::65536-cmd:cat",
            format!("{rule} (the port must be a number from 1 to 65535)"),
        ),
        (
            "tcp::0x50-cmd:cat",
            format!("{rule} (the port must be a number from 1 to 65535)"),
        ),
        (
            "tcp::80-",
            format!("{rule} (nothing after the port; expected cmd:COMMAND)"),
        ),
        (
            "tcp:10.0.2.100:1234-mychardev",
            "forwards to a QEMU chardev, which only QEMU can reach; use cmd:COMMAND".into(),
        ),
        ("tcp::80-cmd:", "the command is empty".into()),
        ("tcp::80-cmd:  ", "the command is empty".into()),
        (
            "tcp::80-cmd:echo 'a",
            "the command has an unterminated quote".into(),
        ),
        (
            "tcp::80-cmd:echo a\\",
            "the command ends in a lone backslash".into(),
        ),
        (
            "tcp::80-cmd:echo #",
            "the command ends in '#', which GLib's shell parser (slirp's) refuses".into(),
        ),
    ];
    for (value, reason) in cases {
        let e = parse(&format!("guestfwd={value}")).unwrap_err().to_string();
        assert_eq!(e, format!("--slirp guestfwd={value}: {reason}"));
    }
}

/// The smb share of a parsed option string, as `(export, smbserver)`.
fn smb(opts: &str) -> Option<(PathBuf, Option<(Ipv4Addr, String)>)> {
    parse(opts)
        .unwrap_or_else(|e| panic!("{opts}: {e}"))
        .smb
        .map(|s| (s.export.value, s.server.map(|a| (a.value, a.origin))))
}

#[test]
fn smb_forms() {
    assert_eq!(smb("smb=/srv/share"), Some(("/srv/share".into(), None)));
    assert_eq!(smb("net=10.0.0.0/8"), None);
    let r = parse("smb=/srv/share,smbserver=10.0.2.9").unwrap();
    let share = r.smb.unwrap();
    assert_eq!(share.export.value, PathBuf::from("/srv/share"));
    assert_eq!(share.export.origin, "--slirp smb=/srv/share");
    let server = share.server.unwrap();
    assert_eq!(server.value, Ipv4Addr::new(10, 0, 2, 9));
    assert_eq!(server.origin, "--slirp smbserver=10.0.2.9");
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    // inet_aton forms, 0.0.0.0 kept as written (the profile reads it as "not given"),
    // the last of each wins, and `,,` is a comma of the path.
    let r = parse("smbserver=10.9,smb=/a,smb=/srv/a,,b,smbserver=10.0.0x2.011").unwrap();
    let share = r.smb.unwrap();
    assert_eq!(share.export.value, PathBuf::from("/srv/a,b"));
    assert_eq!(share.server.unwrap().value, Ipv4Addr::new(10, 0, 2, 9));
    let r = parse("smb=/srv,smbserver=0.0.0.0").unwrap();
    assert_eq!(r.smb.unwrap().server.unwrap().value, Ipv4Addr::UNSPECIFIED);
    // Spaces and quotes are a directory's own characters; trailing slashes stay.
    let r = parse("smb=/srv/my share/'x'/").unwrap();
    assert_eq!(
        r.smb.unwrap().export.value,
        PathBuf::from("/srv/my share/'x'/")
    );
}

#[test]
fn smb_relative_path_is_made_absolute() {
    let cwd = std::env::current_dir().unwrap();
    let r = parse("smb=share/dir").unwrap();
    let export = r.smb.unwrap().export;
    assert!(export.value.is_absolute(), "{:?}", export.value);
    assert_eq!(export.value, cwd.join("share/dir"));
    // The origin quotes the value as written.
    assert_eq!(export.origin, "--slirp smb=share/dir");
    let r = parse("smb=.").unwrap();
    assert_eq!(r.smb.unwrap().export.value, cwd);
}

#[test]
fn smbserver_without_smb_is_parsed_and_warned_about() {
    let r = parse("smbserver=10.0.2.9").unwrap();
    assert!(r.smb.is_none());
    assert_eq!(
        r.notes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["--slirp smbserver=10.0.2.9: does nothing without smb= (QEMU ignores it too)"]
    );
    // QEMU parses it all the same.
    assert_eq!(
        parse("smbserver=nowhere").unwrap_err().to_string(),
        "--slirp smbserver=nowhere: not an IPv4 address (QEMU: Failed to parse SMB address)"
    );
    assert!(parse("smb=/srv,smbserver=").is_err());
}

#[test]
fn smb_paths_smb_conf_cannot_hold_are_refused() {
    let line_break = "the path contains a line break, which would cut smb.conf's line path=DIR";
    let percent = "the path contains '%', which Samba expands in path= (%u, %m, ...), so \
                   smbd would share another directory";
    let trailing = "the path ends in whitespace or a backslash, which smb.conf drops or reads \
                    as a line continuation, so smbd would share another directory";
    let cases = [
        ("/srv/a\nb", r"/srv/a\nb", line_break),
        ("/srv/a\rb", r"/srv/a\rb", line_break),
        ("rel\n", r"rel\n", line_break),
        ("/srv/100%", "/srv/100%", percent),
        ("/home/%u", "/home/%u", percent),
        ("/srv/x ", "/srv/x ", trailing),
        ("/srv/x\t", "/srv/x\t", trailing),
        (r"/srv/x\", r"/srv/x\", trailing),
    ];
    for (value, shown, why) in cases {
        let e = parse(&format!("smb={value}")).unwrap_err().to_string();
        assert_eq!(e, format!("--slirp smb={shown}: {why}"), "{value:?}");
        assert!(!e.contains('\n') && !e.contains('\r'), "{e:?}");
    }
    // The current directory's name is checked too, once the path is absolute.
    let shown = || "--slirp smb=share".to_string();
    for (abs, why) in [
        ("/home/50%/share", percent),
        ("/tmp/a\nb/share", line_break),
    ] {
        assert_eq!(
            smb_absolute_checked(shown(), abs.into())
                .unwrap_err()
                .to_string(),
            format!(
                "--slirp smb=share: its absolute path {} {}",
                one_line(abs),
                why.strip_prefix("the path ").unwrap()
            )
        );
    }
    assert_eq!(
        smb_absolute_checked(shown(), "/home/u/share".into()).unwrap(),
        PathBuf::from("/home/u/share")
    );
    assert!(smb_conf_trouble(b"/srv/a b/c").is_none());
    assert!(smb_conf_trouble(b"/srv/x\x0b").is_some());
    assert!(smb_conf_trouble(b"/srv/x\\y").is_none());
}
