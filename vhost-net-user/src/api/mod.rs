//! Runtime control over a UNIX socket (`--api-socket`): slirp4netns's JSON API, so that its
//! clients work unchanged, and `vhost-net-user ctl`, a client for people.
//!
//! The protocol (this module) is pure: a request's bytes in, a [`Request`] or an error
//! description out, and replies built as slirp4netns builds them: `{"return":{...}}` or
//! `{"error":{"desc":"..."}}`. [`server`] serves the socket on a thread of its own and
//! applies requests through [`netcore::control::Control`]; [`ctl`] speaks QEMU's monitor
//! syntax on the command line.
//!
//! Beyond slirp4netns: IPv6 host and guest addresses, unix-socket host ends
//! (`"host_addr":"unix:/path"`, as QEMU's `hostfwd=unix:`), and `query_stats` and
//! `list_flows`.

pub mod ctl;
pub mod server;

use std::net::IpAddr;
use std::path::PathBuf;

use policy::{HostListen, NetPlan, PortForward, PortRange, Proto};
use serde_json::{Map, Value, json};

/// A request of this many bytes or more is refused, as slirp4netns refuses it ("A request
/// must be less than 4096 bytes").
pub const MAX_REQUEST: usize = 4096;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    AddHostfwd(HostFwd),
    ListHostfwd,
    RemoveHostfwd { id: u32 },
    QueryStats,
    ListFlows,
}

/// A forward to add: `add_hostfwd`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFwd {
    pub proto: Proto,
    pub host: Host,
    /// `None`: the guest's own address (its DHCP address, or its IPv6 address for IPv6 peers).
    pub guest_addr: Option<IpAddr>,
    pub guest_port: u16,
}

/// A forward's host end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Inet { addr: IpAddr, port: u16 },
    Unix(PathBuf),
}

/// slirp4netns's default host address (QEMU's for an empty one too): IPv4's any.
pub const DEFAULT_HOST_ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

impl HostFwd {
    /// The forward as the plan and [`netcore::forward::open_one`] know it.
    pub fn to_forward(&self) -> PortForward {
        PortForward {
            proto: self.proto,
            host: match &self.host {
                Host::Inet { addr, port } => HostListen::Inet {
                    addr: Some(*addr),
                    iface: None,
                    ports: PortRange::single(*port),
                },
                Host::Unix(path) => HostListen::Unix { path: path.clone() },
            },
            guest_addr: self.guest_addr,
            guest_port: self.guest_port,
            skip_ephemeral: false,
        }
    }

    /// `add_hostfwd`'s arguments object; what [`parse_request`] reads back.
    pub fn to_arguments(&self) -> Value {
        let mut args = Map::new();
        args.insert("proto".into(), json!(self.proto.to_string()));
        match &self.host {
            Host::Inet { addr, port } => {
                args.insert("host_addr".into(), json!(addr.to_string()));
                args.insert("host_port".into(), json!(port));
            }
            Host::Unix(path) => {
                args.insert(
                    "host_addr".into(),
                    json!(format!("unix:{}", path.display())),
                );
            }
        }
        if let Some(addr) = self.guest_addr {
            args.insert("guest_addr".into(), json!(addr.to_string()));
        }
        args.insert("guest_port".into(), json!(self.guest_port));
        Value::Object(args)
    }
}

impl Request {
    /// The request as a client sends it.
    pub fn to_json(&self) -> String {
        let value = match self {
            Request::AddHostfwd(fwd) => {
                json!({"execute": "add_hostfwd", "arguments": fwd.to_arguments()})
            }
            Request::ListHostfwd => json!({"execute": "list_hostfwd"}),
            Request::RemoveHostfwd { id } => {
                json!({"execute": "remove_hostfwd", "arguments": {"id": id}})
            }
            Request::QueryStats => json!({"execute": "query_stats"}),
            Request::ListFlows => json!({"execute": "list_flows"}),
        };
        value.to_string()
    }
}

/// Reads one request; the error is the description the reply carries, in slirp4netns's
/// words where it has them.
pub fn parse_request(raw: &[u8]) -> Result<Request, String> {
    if raw.len() >= MAX_REQUEST {
        return Err("bad request: too large message".into());
    }
    let value: Value =
        serde_json::from_slice(raw).map_err(|_| "bad request: cannot parse JSON".to_string())?;
    let Value::Object(obj) = value else {
        return Err("bad request: json_object() failed".into());
    };
    let Some(execute) = obj.get("execute").and_then(Value::as_str) else {
        return Err("bad request: no execute found".into());
    };
    let args = obj.get("arguments");
    let arg = |name: &str| args.and_then(|a| a.get(name));
    match execute {
        "add_hostfwd" => parse_add(&arg).map(Request::AddHostfwd),
        "list_hostfwd" => Ok(Request::ListHostfwd),
        "remove_hostfwd" => match arg("id").and_then(Value::as_u64) {
            Some(id) if id > 0 => Ok(Request::RemoveHostfwd {
                id: u32::try_from(id).unwrap_or(u32::MAX),
            }),
            _ => Err("bad request: remove_hostfwd: bad arguments.id".into()),
        },
        "query_stats" => Ok(Request::QueryStats),
        "list_flows" => Ok(Request::ListFlows),
        _ => Err("bad request: unknown execute".into()),
    }
}

fn parse_add<'a>(arg: &impl Fn(&str) -> Option<&'a Value>) -> Result<HostFwd, String> {
    let bad = |what: &str| format!("bad request: add_hostfwd: bad arguments.{what}");
    let proto = match arg("proto").and_then(Value::as_str) {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => return Err(bad("proto")),
    };
    let port = |name: &str, value: Option<&Value>| -> Result<u16, String> {
        value
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(name))
    };
    // An absent or empty address takes the default, as slirp4netns.
    let addr = |name: &str| -> Result<Option<&str>, String> {
        match arg(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(name)),
        }
    };
    let host = match addr("host_addr")? {
        Some(text) if text.starts_with("unix:") => {
            let path = &text["unix:".len()..];
            let port_given = arg("host_port").is_some_and(|p| p.as_u64() != Some(0));
            if proto != Proto::Tcp || !path.starts_with('/') || port_given {
                return Err(bad("host_addr"));
            }
            Host::Unix(PathBuf::from(path))
        }
        text => Host::Inet {
            addr: match text {
                None => DEFAULT_HOST_ADDR,
                Some(text) => text.parse().map_err(|_| bad("host_addr"))?,
            },
            port: port("host_port", arg("host_port"))?,
        },
    };
    let guest_addr = match addr("guest_addr")? {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| bad("guest_addr"))?),
    };
    let guest_port = port("guest_port", arg("guest_port"))?;
    Ok(HostFwd {
        proto,
        host,
        guest_addr,
        guest_port,
    })
}

/// A successful reply.
pub fn reply_ok(value: Value) -> String {
    json!({ "return": value }).to_string()
}

/// A failed request's reply.
pub fn reply_error(desc: &str) -> String {
    json!({"error": {"desc": desc}}).to_string()
}

/// One `list_hostfwd` entry. A forward of a port range (given at startup) shows its first
/// port, with `host_port_last` and `guest_port_last` beside (slirp4netns has none); one
/// without a host address shows `::`, every address; one without a guest address, the
/// guest's DHCP address, as slirp4netns fills in.
pub fn entry(id: u32, fwd: &PortForward, plan: &NetPlan) -> Value {
    let mut e = Map::new();
    e.insert("id".into(), json!(id));
    e.insert("proto".into(), json!(fwd.proto.to_string()));
    match &fwd.host {
        HostListen::Inet { addr, iface, ports } => {
            let addr = addr.map_or_else(|| "::".to_string(), |a| a.to_string());
            e.insert("host_addr".into(), json!(addr));
            e.insert("host_port".into(), json!(ports.first));
            if ports.last != ports.first {
                e.insert("host_port_last".into(), json!(ports.last));
                let last = u32::from(fwd.guest_port) + u32::from(ports.last - ports.first);
                e.insert("guest_port_last".into(), json!(last.min(65535)));
            }
            if let Some(iface) = iface {
                e.insert("host_iface".into(), json!(iface));
            }
        }
        HostListen::Unix { path } => {
            e.insert(
                "host_addr".into(),
                json!(format!("unix:{}", path.display())),
            );
            e.insert("host_port".into(), json!(0));
        }
    }
    let guest = fwd
        .guest_addr
        .or_else(|| plan.ipv4.as_ref().map(|v4| IpAddr::V4(v4.dhcp_start)))
        .or_else(|| {
            plan.ipv6
                .as_ref()
                .and_then(|v6| v6.guest_addr)
                .map(IpAddr::V6)
        })
        .map(|a| a.to_string())
        .unwrap_or_default();
    e.insert("guest_addr".into(), json!(guest));
    e.insert("guest_port".into(), json!(fwd.guest_port));
    Value::Object(e)
}

/// One `list_flows` entry.
pub fn flow_entry(f: &netcore::flow::FlowInfo) -> Value {
    json!({
        "proto": f.proto,
        "guest_addr": f.guest.ip().to_string(),
        "guest_port": f.guest.port(),
        "remote_addr": f.remote.map(|r| r.ip().to_string()),
        "remote_port": f.remote.map(|r| r.port()),
        "state": f.state,
        "to_host_bytes": f.to_host,
        "to_guest_bytes": f.to_guest,
        "age_ms": u64::try_from(f.age.as_millis()).unwrap_or(u64::MAX),
        "idle_ms": u64::try_from(f.idle.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Refuses a forward that the same checks as startup's would refuse: a protocol switched
/// off, a guest address of a disabled family or outside the guest's network, or one of the
/// emulated hosts (gateway, DNS).
pub fn check_forward(plan: &NetPlan, fwd: &PortForward) -> Result<(), String> {
    let (on, name) = match fwd.proto {
        Proto::Tcp => (plan.services.tcp, "TCP"),
        Proto::Udp => (plan.services.udp, "UDP"),
    };
    if !on {
        return Err(format!("{name} is disabled"));
    }
    match fwd.guest_addr {
        None => {}
        Some(IpAddr::V4(g)) => {
            let Some(v4) = &plan.ipv4 else {
                return Err(format!("{g}: IPv4 is disabled"));
            };
            let mask = u32::MAX
                .checked_shl(32 - u32::from(v4.prefix_len))
                .unwrap_or(0);
            let inside = u32::from(g) & mask == u32::from(v4.network) & mask;
            let host_bits = u32::from(g) & !mask;
            if !inside || host_bits == 0 || host_bits == !mask {
                return Err(format!("{g}: not a guest address in {}", network_v4(v4)));
            }
            if g == v4.gateway || g == v4.dns {
                return Err(format!("{g}: an address of the gateway"));
            }
        }
        Some(IpAddr::V6(g)) => {
            let Some(v6) = &plan.ipv6 else {
                return Err(format!("{g}: IPv6 is disabled"));
            };
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6.prefix_len))
                .unwrap_or(0);
            if u128::from(g) & mask != u128::from(v6.prefix) & mask {
                return Err(format!(
                    "{g}: not a guest address in {}/{}",
                    v6.prefix, v6.prefix_len
                ));
            }
            if g == v6.gateway || g == v6.dns {
                return Err(format!("{g}: an address of the gateway"));
            }
        }
    }
    Ok(())
}

fn network_v4(v4: &policy::Ipv4Plan) -> String {
    format!("{}/{}", v4.network, v4.prefix_len)
}

#[cfg(test)]
mod tests;
