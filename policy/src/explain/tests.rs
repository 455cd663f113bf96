//! What both renderings show of guest forwards and the smb share.

use super::*;
use crate::Inputs;

fn resolved(slirp: &str) -> Resolved {
    Inputs {
        slirp: vec![slirp.into()],
        ..Inputs::default()
    }
    .build_with_xml(None)
    .unwrap_or_else(|e| panic!("{slirp}: {e}"))
}

const TWO_GUEST_FORWARDS: &str =
    "guestfwd=tcp:10.0.2.100:1234-cmd:netcat 127.0.0.1 4321,guestfwd=::22-cmd:sh -c 'nc x 22'";

#[test]
fn text_shows_guest_forwards() {
    let text = render_text(&resolved(TWO_GUEST_FORWARDS));
    let section = text
        .split_once("Port forwards\n")
        .and_then(|(_, rest)| rest.split_once("Warnings\n"))
        .map(|(section, _)| section)
        .unwrap();
    assert_eq!(
        section,
        "  guest forward     10.0.2.100:1234 -> command: netcat 127.0.0.1 4321\n\
         \x20 guest forward     10.0.2.4:22 -> command: sh -c 'nc x 22'\n"
    );
    // EXPLAIN.md shows the first line as the example.
    assert!(include_str!("../../EXPLAIN.md").contains(section.lines().next().unwrap()));
    let text = render_text(&resolved(
        "hostfwd=tcp:127.0.0.1:2222-:22,guestfwd=::80-cmd:cat",
    ));
    assert!(
        text.contains(
            "Port forwards\n\
             \x20 tcp               127.0.0.1:2222 -> guest:22\n\
             \x20                   guest = 10.0.2.15 for IPv4, the guest's own address for IPv6\n\
             \x20 guest forward     10.0.2.4:80 -> command: cat\n\
             Warnings\n"
        ),
        "{text}"
    );
    let text = render_text(&resolved("net=10.0.0.0/8"));
    assert!(
        text.contains("Port forwards\n                    none\n"),
        "{text}"
    );
}

#[test]
fn json_lists_guest_forwards() {
    let out = render_json(&resolved(TWO_GUEST_FORWARDS));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["guest_forwards"],
        serde_json::json!([
            {
                "address": "10.0.2.100",
                "port": 1234,
                "command": "netcat 127.0.0.1 4321",
                "argv": ["netcat", "127.0.0.1", "4321"],
            },
            {
                "address": "10.0.2.4",
                "port": 22,
                "command": "sh -c 'nc x 22'",
                "argv": ["sh", "-c", "nc x 22"],
            },
        ])
    );
    let doc = include_str!("../../EXPLAIN.md");
    for key in ["address", "port", "command", "argv"] {
        assert!(
            doc.contains(&format!("| `guest_forwards[].{key}` |")),
            "{key}"
        );
    }
    assert!(doc.contains("| `guest_forwards` |"));

    let v: serde_json::Value =
        serde_json::from_str(&render_json(&resolved("net=10.0.0.0/8"))).unwrap();
    assert_eq!(v["guest_forwards"], serde_json::json!([]));
}

#[test]
fn text_shows_the_smb_share() {
    let text = render_text(&resolved(
        "net=192.168.76.0/24,guestfwd=::22-cmd:cat,smb=/srv/share",
    ));
    assert!(
        text.contains(
            "Port forwards\n\
             \x20 guest forward     192.168.76.4:22 -> command: cat\n\
             \x20 smb share         /srv/share at 192.168.76.4 ports 139 and 445 (smbd; the \
             guest opens \\\\192.168.76.4\\qemu)\n\
             Warnings\n"
        ),
        "{text}"
    );
    // Alone, it is the section's only line.
    let text = render_text(&resolved("smb=/srv/share,smbserver=10.0.2.9"));
    let line = "  smb share         /srv/share at 10.0.2.9 ports 139 and 445 (smbd; the guest \
                opens \\\\10.0.2.9\\qemu)\n";
    assert!(
        text.contains(&format!("Port forwards\n{line}Warnings\n")),
        "{text}"
    );
    // EXPLAIN.md shows the default share as the example.
    let text = render_text(&resolved("smb=/srv/share"));
    let line = text.lines().find(|l| l.contains("smb share")).unwrap();
    assert!(
        include_str!("../../EXPLAIN.md").contains(&format!("\n{line}\n")),
        "{line}"
    );
}

#[test]
fn json_has_the_smb_share() {
    let json = |opts: &str| -> serde_json::Value {
        serde_json::from_str(&render_json(&resolved(opts))).unwrap()
    };
    assert_eq!(
        json("net=192.168.76.0/24,smb=/srv/share")["smb"],
        serde_json::json!({"addr": "192.168.76.4", "export": "/srv/share"})
    );
    let v = json("net=10.0.0.0/8");
    assert!(v.as_object().unwrap().contains_key("smb"));
    assert_eq!(v["smb"], serde_json::Value::Null);
    let doc = include_str!("../../EXPLAIN.md");
    for key in ["smb", "smb.addr", "smb.export"] {
        assert!(doc.contains(&format!("| `{key}` |")), "{key}");
    }
}
