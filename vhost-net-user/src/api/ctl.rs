//! `vhost-net-user ctl SOCKET COMMAND...`: the API socket for people, in QEMU's monitor
//! syntax (`hostfwd_add`, `hostfwd_remove`, `info usernet`) plus `stats` and `flows`.
//! `--json` prints the raw replies. An error is one line on standard error, exit status 2.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use policy::Proto;
use serde_json::Value;

use super::{DEFAULT_HOST_ADDR, Host, HostFwd, Request};

#[derive(Parser, Debug)]
#[command(
    name = "vhost-net-user ctl",
    about = "Change forwards and read statistics of a running vhost-net-user (--api-socket)",
    after_help = "COMMAND is one of:\n  \
        hostfwd_add [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT\n  \
        hostfwd_add unix:PATH-[GUESTADDR]:GUESTPORT\n  \
        hostfwd_remove [tcp|udp]:[HOSTADDR]:HOSTPORT   (or unix:PATH, or a forward's id)\n  \
        info usernet\n  \
        stats\n  \
        flows\n\
        IPv6 addresses go in brackets: tcp:[::1]:8080-[fec0::15]:80"
)]
struct CtlArgs {
    /// Print the API's JSON replies as they come.
    #[arg(long)]
    json: bool,
    /// The backend's --api-socket.
    socket: PathBuf,
    /// The command and its arguments.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Exit status of every error: a command the user got wrong, a backend that refused it or
/// cannot be reached.
const ERROR_STATUS: i32 = 2;

/// Runs `vhost-net-user ctl` with `args` (those after `ctl`); returns the exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let argv = std::iter::once(OsString::from("vhost-net-user ctl")).chain(args);
    let args = match CtlArgs::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!(
                "vhost-net-user ctl: {}",
                first.trim_start_matches("error: ")
            );
            return ERROR_STATUS;
        }
    };
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("vhost-net-user ctl: {e}");
            ERROR_STATUS
        }
    }
}

fn run(args: &CtlArgs) -> Result<String, String> {
    let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
    // QEMU's monitor takes a netdev id before the rule; there is one netdev here.
    let rule = |words: &[&str]| match words {
        [rule] | [_, rule] => Ok(rule.to_string()),
        _ => Err(format!("{}: one rule expected", words.join(" "))),
    };
    let call = |request: &Request| call(&args.socket, request);
    match words.as_slice() {
        ["hostfwd_add", rest @ ..] => {
            let fwd = parse_add_rule(&rule(rest)?)?;
            let reply = call(&Request::AddHostfwd(fwd))?;
            Ok(if args.json {
                format!("{reply}\n")
            } else {
                format!("forward {} added\n", reply["id"])
            })
        }
        ["hostfwd_remove", rest @ ..] => {
            let target = parse_remove_rule(&rule(rest)?)?;
            let id = match target {
                Removal::Id(id) => id,
                Removal::Rule(target) => {
                    let listed = call(&Request::ListHostfwd)?;
                    find_forward(&listed, &target)?
                }
            };
            let reply = call(&Request::RemoveHostfwd { id })?;
            Ok(if args.json {
                format!("{reply}\n")
            } else {
                format!("forward {id} removed\n")
            })
        }
        ["info", "usernet"] => {
            let listed = call(&Request::ListHostfwd)?;
            if args.json {
                return Ok(format!("{listed}\n"));
            }
            // Flows exist only while a frontend is connected.
            let flows = call(&Request::ListFlows).unwrap_or(Value::Null);
            Ok(usernet_table(&listed, &flows))
        }
        ["stats"] => {
            let stats = call(&Request::QueryStats)?;
            Ok(if args.json {
                format!("{stats}\n")
            } else {
                stats
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect()
            })
        }
        ["flows"] => {
            let flows = call(&Request::ListFlows)?;
            Ok(if args.json {
                format!("{flows}\n")
            } else {
                flows_table(&flows)
            })
        }
        _ => Err(format!("{}: unknown command", words.join(" "))),
    }
}

/// Sends `request` to the API socket at `socket`; the reply's `return` value, or its error
/// description.
fn call(socket: &Path, request: &Request) -> Result<Value, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    stream
        .write_all(request.to_json().as_bytes())
        .map_err(fail)?;
    stream.shutdown(Shutdown::Write).map_err(fail)?;
    let mut reply = Vec::new();
    stream
        .take(64 << 20)
        .read_to_end(&mut reply)
        .map_err(fail)?;
    let reply: Value = serde_json::from_slice(&reply)
        .map_err(|_| format!("{}: the reply is not JSON", socket.display()))?;
    if let Some(desc) = reply.pointer("/error/desc") {
        return Err(desc.as_str().unwrap_or_default().to_string());
    }
    reply
        .get("return")
        .cloned()
        .ok_or_else(|| format!("{}: a reply without return or error", socket.display()))
}

/// `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` or `unix:PATH-[GUESTADDR]:GUESTPORT`,
/// as QEMU's `hostfwd_add`: an empty host address is 0.0.0.0, an empty guest address the
/// guest's own.
pub fn parse_add_rule(rule: &str) -> Result<HostFwd, String> {
    let bad = |why: &str| format!("{rule}: {why}");
    let (proto, rest) = rule
        .split_once(':')
        .ok_or_else(|| bad("expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT"))?;
    let (host, guest) = if proto == "unix" {
        let (path, guest) = rest
            .rsplit_once('-')
            .ok_or_else(|| bad("expected unix:PATH-[GUESTADDR]:GUESTPORT"))?;
        if !path.starts_with('/') {
            return Err(bad("the unix socket's path must be absolute"));
        }
        (Host::Unix(PathBuf::from(path)), guest)
    } else {
        let (host, guest) = rest
            .split_once('-')
            .ok_or_else(|| bad("expected HOSTPORT-[GUESTADDR]:GUESTPORT"))?;
        let (addr, port) = addr_port(host).map_err(|e| bad(&e))?;
        let port = port.ok_or_else(|| bad("a host port is needed"))?;
        (
            Host::Inet {
                addr: addr.unwrap_or(DEFAULT_HOST_ADDR),
                port,
            },
            guest,
        )
    };
    let proto = match proto {
        "" | "tcp" | "unix" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => return Err(bad(&format!("{other}: the protocol is tcp or udp"))),
    };
    let (guest_addr, guest_port) = addr_port(guest).map_err(|e| bad(&e))?;
    Ok(HostFwd {
        proto,
        host,
        guest_addr,
        guest_port: guest_port.ok_or_else(|| bad("a guest port is needed"))?,
    })
}

/// What `hostfwd_remove` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Id(u32),
    Rule(RemoveRule),
}

/// `[tcp|udp]:[HOSTADDR]:HOSTPORT` or `unix:PATH`: the forward to remove, an empty address
/// matching any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveRule {
    pub proto: Proto,
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub path: Option<PathBuf>,
}

pub fn parse_remove_rule(rule: &str) -> Result<Removal, String> {
    if let Ok(id) = rule.parse::<u32>() {
        return Ok(Removal::Id(id));
    }
    let bad = |why: &str| format!("{rule}: {why}");
    let (proto, rest) = rule
        .split_once(':')
        .ok_or_else(|| bad("expected [tcp|udp]:[HOSTADDR]:HOSTPORT"))?;
    if proto == "unix" {
        return Ok(Removal::Rule(RemoveRule {
            proto: Proto::Tcp,
            addr: None,
            port: 0,
            path: Some(PathBuf::from(rest)),
        }));
    }
    let proto = match proto {
        "" | "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => return Err(bad(&format!("{other}: the protocol is tcp or udp"))),
    };
    let (addr, port) = addr_port(rest).map_err(|e| bad(&e))?;
    Ok(Removal::Rule(RemoveRule {
        proto,
        addr,
        port: port.ok_or_else(|| bad("a host port is needed"))?,
        path: None,
    }))
}

/// `[ADDR]:PORT`, `[[IPV6]]:PORT` or `PORT`: an empty address is `None`, as is an empty port.
fn addr_port(text: &str) -> Result<(Option<IpAddr>, Option<u16>), String> {
    let (addr, port) = if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text}: no closing bracket"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{text}: expected [ADDRESS]:PORT"))?;
        (addr, port)
    } else {
        text.rsplit_once(':').unwrap_or(("", text))
    };
    let addr = match addr {
        "" => None,
        a => Some(a.parse().map_err(|_| format!("{a}: not an IP address"))?),
    };
    let port = match port {
        "" => None,
        p => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{p}: not a port"))?,
        ),
    };
    Ok((addr, port))
}

/// The id of the one listed forward `target` names.
fn find_forward(listed: &Value, target: &RemoveRule) -> Result<u32, String> {
    let entries = listed["entries"].as_array().cloned().unwrap_or_default();
    let matches: Vec<u32> = entries
        .iter()
        .filter(|e| e["proto"].as_str() == Some(&target.proto.to_string()))
        .filter(|e| match &target.path {
            Some(path) => e["host_addr"].as_str() == Some(&format!("unix:{}", path.display())),
            None => {
                e["host_port"].as_u64() == Some(u64::from(target.port))
                    && target.addr.is_none_or(|a| {
                        e["host_addr"].as_str().and_then(|h| h.parse().ok()) == Some(a)
                    })
            }
        })
        .filter_map(|e| e["id"].as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect();
    match matches.as_slice() {
        [id] => Ok(*id),
        [] => Err("no such forward".into()),
        _ => Err(format!(
            "{} forwards match (ids {}): give the host address or the id",
            matches.len(),
            matches
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `list_flows`' entries, one a line.
fn flows_table(flows: &Value) -> String {
    let mut out = format!(
        "{:<5} {:<13} {:>39} {:>39} {:>12} {:>12} {:>9}\n",
        "Proto", "State", "Guest", "Remote", "To host", "To guest", "Age (s)"
    );
    for f in flows["flows"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<5} {:<13} {:>39} {:>39} {:>12} {:>12} {:>9}\n",
            f["proto"].as_str().unwrap_or_default(),
            f["state"].as_str().unwrap_or_default(),
            endpoint(&f["guest_addr"], &f["guest_port"]),
            endpoint(&f["remote_addr"], &f["remote_port"]),
            f["to_host_bytes"].to_string(),
            f["to_guest_bytes"].to_string(),
            f["age_ms"].as_u64().unwrap_or_default() / 1000,
        ));
    }
    out
}

/// `ADDR:PORT`, `[ADDR]:PORT` for IPv6, `-` for none.
fn endpoint(addr: &Value, port: &Value) -> String {
    match (addr.as_str(), port.as_u64()) {
        (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        _ => "-".into(),
    }
}

/// `list_hostfwd`'s entries and `list_flows`' (`Null` without a frontend) as QEMU's
/// `info usernet` shows forwards and sockets.
fn usernet_table(listed: &Value, flows: &Value) -> String {
    let mut out =
        String::from("  Protocol[State]      ID  Source Address  Port   Dest. Address  Port\n");
    for e in listed["entries"].as_array().into_iter().flatten() {
        let proto = e["proto"].as_str().unwrap_or_default().to_uppercase();
        out.push_str(&format!(
            "  {:<18} {:>4} {:>15} {:>5} {:>15} {:>5}\n",
            format!("{proto}[HOST_FORWARD]"),
            e["id"].to_string(),
            e["host_addr"].as_str().unwrap_or_default(),
            e["host_port"].to_string(),
            e["guest_addr"].as_str().unwrap_or_default(),
            e["guest_port"].to_string(),
        ));
    }
    for f in flows["flows"].as_array().into_iter().flatten() {
        let proto = f["proto"].as_str().unwrap_or_default().to_uppercase();
        let state = f["state"].as_str().unwrap_or_default();
        let port = |v: &Value| v.as_u64().map_or_else(|| "-".into(), |p| p.to_string());
        out.push_str(&format!(
            "  {:<18} {:>4} {:>15} {:>5} {:>15} {:>5}\n",
            format!("{proto}[{state}]"),
            "-",
            f["guest_addr"].as_str().unwrap_or_default(),
            port(&f["guest_port"]),
            f["remote_addr"].as_str().unwrap_or("-"),
            port(&f["remote_port"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(proto: Proto, addr: &str, port: u16, guest: Option<&str>, gport: u16) -> HostFwd {
        HostFwd {
            proto,
            host: Host::Inet {
                addr: addr.parse().unwrap(),
                port,
            },
            guest_addr: guest.map(|g| g.parse().unwrap()),
            guest_port: gport,
        }
    }

    #[test]
    fn hostfwd_add_takes_qemus_syntax() {
        let ok = |rule: &str| parse_add_rule(rule).unwrap();
        assert_eq!(
            ok("tcp:127.0.0.1:8080-10.0.2.15:80"),
            inet(Proto::Tcp, "127.0.0.1", 8080, Some("10.0.2.15"), 80)
        );
        assert_eq!(
            ok("tcp::8080-:80"),
            inet(Proto::Tcp, "0.0.0.0", 8080, None, 80)
        );
        assert_eq!(
            ok("::8080-:80"),
            inet(Proto::Tcp, "0.0.0.0", 8080, None, 80)
        );
        assert_eq!(
            ok("udp::5353-:53"),
            inet(Proto::Udp, "0.0.0.0", 5353, None, 53)
        );
        assert_eq!(
            ok("tcp:[::1]:8080-[fec0::15]:80"),
            inet(Proto::Tcp, "::1", 8080, Some("fec0::15"), 80)
        );
        assert_eq!(
            ok("unix:/tmp/a-b.sock-:22"),
            HostFwd {
                proto: Proto::Tcp,
                host: Host::Unix("/tmp/a-b.sock".into()),
                guest_addr: None,
                guest_port: 22,
            }
        );
        let err = |rule: &str| parse_add_rule(rule).unwrap_err();
        assert_eq!(
            err("sctp::1-:1"),
            "sctp::1-:1: sctp: the protocol is tcp or udp"
        );
        assert_eq!(
            err("tcp::8080"),
            "tcp::8080: expected HOSTPORT-[GUESTADDR]:GUESTPORT"
        );
        assert_eq!(err("tcp::0-:80"), "tcp::0-:80: 0: not a port");
        assert_eq!(err("tcp::8080-:"), "tcp::8080-:: a guest port is needed");
        assert_eq!(
            err("tcp:1.2.3:1-:1"),
            "tcp:1.2.3:1-:1: 1.2.3: not an IP address"
        );
        assert_eq!(
            err("tcp:[::1:1-:1"),
            "tcp:[::1:1-:1: [::1:1: no closing bracket"
        );
        assert_eq!(
            err("unix:x.sock-:1"),
            "unix:x.sock-:1: the unix socket's path must be absolute"
        );
        assert!(err("8080").contains("expected"));
    }

    #[test]
    fn hostfwd_remove_takes_a_rule_or_an_id_and_finds_the_one_forward() {
        assert_eq!(parse_remove_rule("7"), Ok(Removal::Id(7)));
        let Removal::Rule(any) = parse_remove_rule("tcp::8080").unwrap() else {
            panic!()
        };
        assert_eq!((any.proto, any.addr, any.port), (Proto::Tcp, None, 8080));
        let Removal::Rule(lo6) = parse_remove_rule("tcp:[::1]:8080").unwrap() else {
            panic!()
        };
        let Removal::Rule(udp) = parse_remove_rule("udp:127.0.0.1:8080").unwrap() else {
            panic!()
        };
        let listed = serde_json::json!({"entries": [
            {"id": 1, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8080},
            {"id": 2, "proto": "tcp", "host_addr": "::1", "host_port": 8080},
            {"id": 3, "proto": "udp", "host_addr": "127.0.0.1", "host_port": 8080},
            {"id": 4, "proto": "tcp", "host_addr": "unix:/tmp/x", "host_port": 0},
        ]});
        assert_eq!(find_forward(&listed, &lo6), Ok(2));
        assert_eq!(find_forward(&listed, &udp), Ok(3));
        assert!(
            find_forward(&listed, &any)
                .unwrap_err()
                .contains("ids 1, 2")
        );
        let Removal::Rule(unix) = parse_remove_rule("unix:/tmp/x").unwrap() else {
            panic!()
        };
        assert_eq!(find_forward(&listed, &unix), Ok(4));
        let Removal::Rule(none) = parse_remove_rule("tcp::9").unwrap() else {
            panic!()
        };
        assert_eq!(find_forward(&listed, &none), Err("no such forward".into()));
        assert!(parse_remove_rule("tcp::x").is_err());
    }

    #[test]
    fn info_usernet_shows_forwards_as_qemu_does() {
        let listed = serde_json::json!({"entries": [
            {"id": 1, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": 2222,
             "guest_addr": "10.0.2.15", "guest_port": 22},
        ]});
        assert_eq!(
            usernet_table(&listed, &Value::Null),
            "  Protocol[State]      ID  Source Address  Port   Dest. Address  Port\n  \
             TCP[HOST_FORWARD]     1       127.0.0.1  2222       10.0.2.15    22\n"
        );
        let flows = serde_json::json!({"flows": [
            {"proto": "udp", "guest_addr": "10.0.2.15", "guest_port": 5353,
             "remote_addr": null, "remote_port": null, "state": "OPEN",
             "to_host_bytes": 0, "to_guest_bytes": 0, "age_ms": 1500, "idle_ms": 0},
        ]});
        assert!(
            usernet_table(&listed, &flows).ends_with(
                "  UDP[OPEN]             -       10.0.2.15  5353               -     -\n"
            )
        );
        let table = flows_table(&flows);
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["udp", "OPEN", "10.0.2.15:5353", "-", "0", "0", "1"]);
    }
}
