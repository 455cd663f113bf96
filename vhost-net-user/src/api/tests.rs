//! The JSON protocol against slirp4netns's documented requests and replies.

use super::*;

fn add(proto: Proto, addr: &str, port: u16, guest: Option<&str>, guest_port: u16) -> Request {
    Request::AddHostfwd(HostFwd {
        proto,
        host: Host::Inet {
            addr: addr.parse().unwrap(),
            port,
        },
        guest_addr: guest.map(|g| g.parse().unwrap()),
        guest_port,
    })
}

#[test]
fn slirp4netns_documented_requests_parse() {
    let req = br#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}"#;
    assert_eq!(
        parse_request(req),
        Ok(add(Proto::Tcp, "0.0.0.0", 8080, Some("10.0.2.100"), 80))
    );
    assert_eq!(
        parse_request(br#"{"execute": "list_hostfwd"}"#),
        Ok(Request::ListHostfwd)
    );
    assert_eq!(
        parse_request(br#"{"execute": "remove_hostfwd", "arguments": {"id": 42}}"#),
        Ok(Request::RemoveHostfwd { id: 42 })
    );
    assert_eq!(
        parse_request(br#"{"execute":"query_stats"}"#),
        Ok(Request::QueryStats)
    );
    assert_eq!(
        parse_request(br#"{"execute":"list_flows"}"#),
        Ok(Request::ListFlows)
    );
}

#[test]
fn addresses_default_as_slirp4netns_and_ipv6_and_unix_ends_are_taken() {
    let req = br#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":5353,"guest_port":53}}"#;
    assert_eq!(
        parse_request(req),
        Ok(add(Proto::Udp, "0.0.0.0", 5353, None, 53))
    );
    let req = br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"","host_port":1,"guest_addr":"","guest_port":2}}"#;
    assert_eq!(
        parse_request(req),
        Ok(add(Proto::Tcp, "0.0.0.0", 1, None, 2))
    );
    let req = br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":8080,"guest_addr":"fec0::15","guest_port":80}}"#;
    assert_eq!(
        parse_request(req),
        Ok(add(Proto::Tcp, "::1", 8080, Some("fec0::15"), 80))
    );
    let req = br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"unix:/run/x.sock","guest_port":22}}"#;
    assert_eq!(
        parse_request(req),
        Ok(Request::AddHostfwd(HostFwd {
            proto: Proto::Tcp,
            host: Host::Unix("/run/x.sock".into()),
            guest_addr: None,
            guest_port: 22,
        }))
    );
}

#[test]
fn requests_round_trip_through_their_json() {
    for req in [
        add(Proto::Tcp, "127.0.0.1", 8080, Some("10.0.2.15"), 80),
        add(Proto::Udp, "::", 53, None, 53),
        Request::AddHostfwd(HostFwd {
            proto: Proto::Tcp,
            host: Host::Unix("/tmp/a b.sock".into()),
            guest_addr: None,
            guest_port: 22,
        }),
        Request::ListHostfwd,
        Request::RemoveHostfwd { id: 7 },
        Request::QueryStats,
        Request::ListFlows,
    ] {
        assert_eq!(parse_request(req.to_json().as_bytes()), Ok(req));
    }
}

#[test]
fn bad_requests_get_slirp4netns_descriptions() {
    let err = |raw: &[u8]| parse_request(raw).unwrap_err();
    assert_eq!(err(b"{not json"), "bad request: cannot parse JSON");
    assert_eq!(err(b"\xff\xfe"), "bad request: cannot parse JSON");
    assert_eq!(err(b"[1,2]"), "bad request: json_object() failed");
    assert_eq!(err(b"{}"), "bad request: no execute found");
    assert_eq!(err(br#"{"execute":3}"#), "bad request: no execute found");
    assert_eq!(
        err(br#"{"execute":"shutdown"}"#),
        "bad request: unknown execute"
    );
    let add =
        |args: &str| err(format!(r#"{{"execute":"add_hostfwd","arguments":{args}}}"#).as_bytes());
    let bad = |what: &str| format!("bad request: add_hostfwd: bad arguments.{what}");
    assert_eq!(add(r#"{"host_port":1,"guest_port":1}"#), bad("proto"));
    assert_eq!(
        add(r#"{"proto":"sctp","host_port":1,"guest_port":1}"#),
        bad("proto")
    );
    assert_eq!(
        add(r#"{"proto":"tcp","host_addr":"nowhere","host_port":1,"guest_port":1}"#),
        bad("host_addr")
    );
    assert_eq!(add(r#"{"proto":"tcp","guest_port":1}"#), bad("host_port"));
    for port in ["0", "65536", "-1", "1.5", "\"80\""] {
        assert_eq!(
            add(&format!(
                r#"{{"proto":"tcp","host_port":{port},"guest_port":1}}"#
            )),
            bad("host_port"),
            "{port}"
        );
        assert_eq!(
            add(&format!(
                r#"{{"proto":"tcp","host_port":1,"guest_port":{port}}}"#
            )),
            bad("guest_port"),
            "{port}"
        );
    }
    assert_eq!(
        add(r#"{"proto":"tcp","host_port":1,"guest_addr":"10.0.2","guest_port":1}"#),
        bad("guest_addr")
    );
    // A unix end is TCP's, an absolute path, and has no port.
    assert_eq!(
        add(r#"{"proto":"udp","host_addr":"unix:/x","guest_port":1}"#),
        bad("host_addr")
    );
    assert_eq!(
        add(r#"{"proto":"tcp","host_addr":"unix:x","guest_port":1}"#),
        bad("host_addr")
    );
    assert_eq!(
        add(r#"{"proto":"tcp","host_addr":"unix:/x","host_port":9,"guest_port":1}"#),
        bad("host_addr")
    );
    for args in [
        "",
        r#","arguments":{}"#,
        r#","arguments":{"id":0}"#,
        r#","arguments":{"id":"1"}"#,
    ] {
        assert_eq!(
            err(format!(r#"{{"execute":"remove_hostfwd"{args}}}"#).as_bytes()),
            "bad request: remove_hostfwd: bad arguments.id"
        );
    }
}

#[test]
fn a_request_must_be_less_than_4096_bytes() {
    let pad = |len: usize| {
        let base = r#"{"execute":"list_hostfwd"}"#;
        format!("{base}{}", " ".repeat(len - base.len()))
    };
    assert_eq!(
        parse_request(pad(MAX_REQUEST - 1).as_bytes()),
        Ok(Request::ListHostfwd)
    );
    assert_eq!(
        parse_request(pad(MAX_REQUEST).as_bytes()),
        Err("bad request: too large message".into())
    );
}

#[test]
fn replies_are_shaped_as_slirp4netns_replies() {
    assert_eq!(reply_ok(json!({"id": 1})), r#"{"return":{"id":1}}"#);
    assert_eq!(reply_ok(json!({})), r#"{"return":{}}"#);
    assert_eq!(
        reply_error("bad request: unknown execute"),
        r#"{"error":{"desc":"bad request: unknown execute"}}"#
    );
    let plan = NetPlan::slirp_default();
    let fwd = add(Proto::Tcp, "127.0.0.1", 8080, None, 80);
    let Request::AddHostfwd(fwd) = fwd else {
        unreachable!()
    };
    assert_eq!(
        entry(3, &fwd.to_forward(), &plan),
        json!({"id": 3, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8080,
               "guest_addr": "10.0.2.15", "guest_port": 80})
    );
    // A startup range without a host address.
    let range = PortForward {
        proto: Proto::Udp,
        host: HostListen::Inet {
            addr: None,
            iface: None,
            ports: PortRange {
                first: 5000,
                last: 5009,
            },
        },
        guest_addr: Some("10.0.2.16".parse().unwrap()),
        guest_port: 6000,
        skip_ephemeral: false,
    };
    assert_eq!(
        entry(1, &range, &plan),
        json!({"id": 1, "proto": "udp", "host_addr": "::", "host_port": 5000,
               "host_port_last": 5009, "guest_addr": "10.0.2.16", "guest_port": 6000,
               "guest_port_last": 6009})
    );
}

#[test]
fn runtime_forwards_get_the_checks_of_startup_ones() {
    let plan = NetPlan::slirp_default();
    let to = |guest: Option<&str>, proto| {
        let Request::AddHostfwd(fwd) = add(proto, "127.0.0.1", 8080, guest, 80) else {
            unreachable!()
        };
        check_forward(&plan, &fwd.to_forward())
    };
    assert_eq!(to(None, Proto::Tcp), Ok(()));
    assert_eq!(to(Some("10.0.2.100"), Proto::Udp), Ok(()));
    assert!(
        to(Some("10.0.3.15"), Proto::Tcp)
            .unwrap_err()
            .contains("10.0.2.0/24")
    );
    assert!(to(Some("10.0.2.255"), Proto::Tcp).is_err());
    assert!(
        to(Some("10.0.2.2"), Proto::Tcp)
            .unwrap_err()
            .contains("gateway")
    );
    assert!(to(Some("10.0.2.3"), Proto::Tcp).is_err());
    let v6 = plan.ipv6.as_ref().map(|v6| v6.prefix);
    if let Some(prefix) = v6 {
        let mut inside = prefix.octets();
        inside[15] = 0x15;
        let inside = std::net::Ipv6Addr::from(inside).to_string();
        assert_eq!(to(Some(&inside), Proto::Tcp), Ok(()));
        assert!(to(Some("2001:db8::1"), Proto::Tcp).is_err());
    }
    let mut no_udp = plan.clone();
    no_udp.services.udp = false;
    let Request::AddHostfwd(fwd) = add(Proto::Udp, "127.0.0.1", 1, None, 1) else {
        unreachable!()
    };
    assert_eq!(
        check_forward(&no_udp, &fwd.to_forward()),
        Err("UDP is disabled".into())
    );
    let mut no_v4 = plan.clone();
    no_v4.ipv4 = None;
    let Request::AddHostfwd(fwd) = add(Proto::Tcp, "127.0.0.1", 1, Some("10.0.2.15"), 1) else {
        unreachable!()
    };
    assert!(check_forward(&no_v4, &fwd.to_forward()).is_err());
}
