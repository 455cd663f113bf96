//! Port forwarding: host sockets on the plan's forwarded ports, whose connections and datagrams
//! go to the guest (QEMU `hostfwd=`, passt `-t`/`-u`, libvirt `<portForward>`).
//!
//! The sockets are opened once, when the program starts: a port that cannot be bound is a
//! startup error, as with QEMU and passt, and the ports stay bound while frontends come and
//! go. Each [`crate::Engine`] watches them while it serves a guest; a connection that arrives
//! in between waits in the listen backlog.
//!
//! What the guest sees follows slirp: a forwarded connection comes from the peer's own
//! address, or from the gateway when the peer is the host's loopback (`sotranslate_accept`).
//! A connection to a unix socket forward (QEMU's `hostfwd=unix:PATH-:PORT`) comes from the
//! gateway too, from a port of its own.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use policy::{HostListen, NetPlan, PortForward, Proto};

use crate::sys;

/// Connections a forwarded TCP port may have waiting to be accepted.
const BACKLOG: libc::c_int = 128;

/// Where a forward's socket is bound on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Inet(SocketAddr),
    /// A unix stream socket at this path; its connections become guest TCP connections.
    Unix(PathBuf),
}

impl Local {
    /// Whether the forward takes IPv6 peers (and so prefers the guest's IPv6 address).
    pub fn is_ipv6(&self) -> bool {
        matches!(self, Local::Inet(a) if a.is_ipv6())
    }
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Local::Inet(a) => write!(f, "{a}"),
            Local::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Who connected to or wrote to a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Inet(SocketAddr),
    /// A client of a unix socket forward, shown to the guest as the gateway at this port.
    Unix {
        port: u16,
    },
}

/// One bound host socket of a forward: a TCP listener or a UDP socket for one host port, or
/// a unix stream listener.
pub struct ForwardSocket {
    sock: OwnedFd,
    pub proto: Proto,
    /// Where it is bound.
    pub local: Local,
    /// The guest's side: `None` for the guest's own address.
    pub guest_addr: Option<IpAddr>,
    pub guest_port: u16,
}

impl fmt::Debug for ForwardSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> ", self.proto, self.local)?;
        match self.guest_addr {
            Some(a) => write!(f, "{}", SocketAddr::new(a, self.guest_port)),
            None => write!(f, "guest:{}", self.guest_port),
        }
    }
}

impl ForwardSocket {
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// A descriptor of the same socket, for an engine's flow to own.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.sock.try_clone()
    }
}

/// Why the forwarded ports could not all be opened.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("port forward {proto} {addr}{}: cannot listen", iface.as_ref().map(|i| format!("%{i}")).unwrap_or_default())]
    Bind {
        proto: Proto,
        addr: SocketAddr,
        iface: Option<String>,
        source: io::Error,
    },
    #[error("port forward from unix:{}: cannot listen", path.display())]
    Unix { path: PathBuf, source: io::Error },
}

/// Opens a socket for every host port of every forward in `plan`.
///
/// A forward without a host address listens on both families, the IPv6 socket for IPv6 only;
/// a host without IPv6 just gets the IPv4 one. Forwards that leave out the ephemeral ports
/// (passt's `all`) also pass over ports something else holds, as passt does.
pub fn open(plan: &NetPlan) -> Result<Vec<ForwardSocket>, ForwardError> {
    let ephemeral = ephemeral_ports();
    let wanted: usize = plan
        .forwards
        .iter()
        .map(|f| match &f.host {
            HostListen::Inet { addr, ports, .. } => {
                ports.count() as usize * if addr.is_none() { 2 } else { 1 }
            }
            HostListen::Unix { .. } => 1,
        })
        .sum();
    if wanted > 0 {
        // One socket per port and family: passt's `all` wants tens of thousands.
        let _ = sys::raise_fd_limit(wanted + 1024);
    }
    let mut sockets = Vec::new();
    for f in &plan.forwards {
        let (addr, iface, ports) = match &f.host {
            HostListen::Inet { addr, iface, ports } => (addr, iface, ports),
            HostListen::Unix { path } => {
                sockets.push(ForwardSocket {
                    sock: bind_unix(path).map_err(|source| ForwardError::Unix {
                        path: path.clone(),
                        source,
                    })?,
                    proto: Proto::Tcp,
                    local: Local::Unix(path.clone()),
                    guest_addr: f.guest_addr,
                    guest_port: f.guest_port,
                });
                continue;
            }
        };
        let both = addr.is_none();
        let addrs: Vec<IpAddr> = match addr {
            Some(a) => vec![*a],
            None => vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
        };
        for port in ports.first..=ports.last {
            if f.skip_ephemeral && ephemeral.contains(&port) {
                continue;
            }
            let Some(guest_port) = guest_port(f, ports.first, port) else {
                break;
            };
            for ip in &addrs {
                let local = SocketAddr::new(*ip, port);
                match bind(f.proto, local, iface.as_deref(), both && ip.is_ipv6()) {
                    Ok(sock) => sockets.push(ForwardSocket {
                        sock,
                        proto: f.proto,
                        local: Local::Inet(local),
                        guest_addr: f.guest_addr,
                        guest_port,
                    }),
                    Err(e) if both && ip.is_ipv6() && no_ipv6(&e) => {
                        log::debug!("no IPv6 on this host: {} {local} not forwarded", f.proto);
                    }
                    Err(e) if f.skip_ephemeral && in_use(&e) => {
                        log::debug!("{} {local} is taken: not forwarded", f.proto);
                    }
                    Err(source) => {
                        return Err(ForwardError::Bind {
                            proto: f.proto,
                            addr: local,
                            iface: iface.clone(),
                            source,
                        });
                    }
                }
            }
        }
    }
    Ok(sockets)
}

/// The guest port for host port `port` of a range starting at `first`; `None` past 65535.
fn guest_port(f: &PortForward, first: u16, port: u16) -> Option<u16> {
    u16::try_from(u32::from(f.guest_port) + u32::from(port - first)).ok()
}

fn bind(
    proto: Proto,
    local: SocketAddr,
    iface: Option<&str>,
    v6_only: bool,
) -> io::Result<OwnedFd> {
    let ty = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    let sock = sys::socket(sys::family(&local.ip()), ty, 0)?;
    let fd = sock.as_raw_fd();
    sys::set_reuse_addr(fd)?;
    if v6_only {
        sys::set_v6_only(fd)?;
    }
    if let Some(name) = iface {
        sys::bind_to_device(fd, name)?;
    }
    sys::bind(fd, &local)?;
    if proto == Proto::Tcp {
        sys::listen(fd, BACKLOG)?;
    }
    Ok(sock)
}

/// A non-blocking unix stream listener at `path`; an existing file there is left alone (an
/// error), as for the backend's own socket.
fn bind_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(OwnedFd::from(listener))
}

fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

fn in_use(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EADDRINUSE | libc::EACCES))
}

/// The host's ephemeral port range (`net.ipv4.ip_local_port_range`), Linux's default if
/// unreadable.
fn ephemeral_ports() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(32768..=60999)
}

fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut words = text.split_whitespace();
    let first = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    Some(first..=last)
}

/// Where a forwarded connection or datagram from `peer` lands in the guest, and the address
/// it comes from there: `None` when the guest has no address of a family the forward can use.
pub fn guest_side(
    fwd: &ForwardSocket,
    plan: &NetPlan,
    upstream: &crate::nat::Upstream,
    guest_ipv6: Option<Ipv6Addr>,
    peer: Peer,
) -> Option<(SocketAddr, SocketAddr)> {
    let own = |v6: bool| -> Option<IpAddr> {
        if v6 {
            plan.ipv6.as_ref().and(guest_ipv6).map(IpAddr::V6)
        } else {
            plan.ipv4.as_ref().map(|v4| IpAddr::V4(v4.dhcp_start))
        }
    };
    let v6 = fwd.local.is_ipv6();
    let guest_ip = fwd.guest_addr.or_else(|| own(v6)).or_else(|| own(!v6))?;
    let gateway = match guest_ip {
        IpAddr::V4(_) => IpAddr::V4(plan.ipv4.as_ref()?.gateway),
        IpAddr::V6(_) => IpAddr::V6(plan.ipv6.as_ref()?.gateway),
    };
    let from = match peer {
        Peer::Inet(peer) => {
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let from = crate::nat::inbound_source(plan, upstream, peer);
            if from.is_ipv6() == guest_ip.is_ipv6() {
                from
            } else {
                // A peer of the other family: it comes from the gateway of the guest's.
                SocketAddr::new(gateway, peer.port())
            }
        }
        Peer::Unix { port } => SocketAddr::new(gateway, port),
    };
    Some((SocketAddr::new(guest_ip, fwd.guest_port), from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::PortRange;

    fn forward(proto: Proto, addr: Option<IpAddr>, ports: PortRange, guest: u16) -> PortForward {
        PortForward {
            proto,
            host: HostListen::Inet {
                addr,
                iface: None,
                ports,
            },
            guest_addr: None,
            guest_port: guest,
            skip_ephemeral: false,
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_range_gets_one_socket_per_port_with_the_guest_ports_offset_alike() {
        let first = free_port();
        let mut plan = NetPlan::slirp_default();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let range = PortRange {
            first,
            last: first + 1,
        };
        plan.forwards = vec![forward(Proto::Tcp, lo, range, 2000)];
        let Ok(sockets) = open(&plan) else {
            return; // the neighbouring port was taken meanwhile: nothing to learn
        };
        let seen: Vec<(Local, u16)> = sockets
            .iter()
            .map(|s| (s.local.clone(), s.guest_port))
            .collect();
        let at = |port| Local::Inet(SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(seen, [(at(first), 2000), (at(first + 1), 2001)]);
        std::net::TcpStream::connect(("127.0.0.1", first + 1)).expect("listening");
    }

    #[test]
    fn a_taken_port_names_itself_in_the_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut plan = NetPlan::slirp_default();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        plan.forwards = vec![forward(Proto::Tcp, lo, PortRange::single(port), 22)];
        let err = open(&plan).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("port forward tcp 127.0.0.1:{port}: cannot listen")
        );
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert_eq!(
            source,
            Some(io::Error::from_raw_os_error(libc::EADDRINUSE).to_string())
        );
        // UDP is a separate port space: the same number is free there.
        plan.forwards = vec![forward(Proto::Udp, lo, PortRange::single(port), 22)];
        if let Ok(sockets) = open(&plan) {
            assert_eq!(sockets.len(), 1);
        }
    }

    #[test]
    fn a_unix_forward_listens_at_its_path_and_a_taken_path_is_named() {
        let dir = std::env::temp_dir().join(format!("vnu-fwd-unix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fwd.sock");
        let mut plan = NetPlan::slirp_default();
        plan.forwards = vec![PortForward {
            proto: Proto::Tcp,
            host: HostListen::Unix { path: path.clone() },
            guest_addr: None,
            guest_port: 22,
            skip_ephemeral: false,
        }];
        let sockets = open(&plan).unwrap();
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets[0].local, Local::Unix(path.clone()));
        std::os::unix::net::UnixStream::connect(&path).expect("listening");
        // The path is taken now (by the socket above): a second backend is refused.
        let err = open(&plan).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("port forward from unix:{}: cannot listen", path.display())
        );
        drop(sockets);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ephemeral_range_is_read_as_two_numbers() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("32768"), None);
    }

    fn socket_for(local: &str, guest_addr: Option<IpAddr>) -> ForwardSocket {
        let local: SocketAddr = local.parse().unwrap();
        ForwardSocket {
            sock: sys::socket(sys::family(&local.ip()), libc::SOCK_DGRAM, 0).unwrap(),
            proto: Proto::Tcp,
            local: Local::Inet(local),
            guest_addr,
            guest_port: 22,
        }
    }

    #[test]
    fn the_guest_sees_loopback_peers_as_the_gateway_and_others_as_themselves() {
        let plan = NetPlan::slirp_default();
        let up = crate::nat::Upstream::default();
        let fwd = socket_for("0.0.0.0:2222", None);
        let side = |peer: &str, v6| {
            guest_side(&fwd, &plan, &up, v6, Peer::Inet(peer.parse().unwrap()))
                .map(|(g, f)| (g.to_string(), f.to_string()))
        };
        let own = |g: &str, f: &str| Some((g.to_string(), f.to_string()));
        assert_eq!(
            side("127.0.0.1:40000", None),
            own("10.0.2.15:22", "10.0.2.2:40000")
        );
        assert_eq!(
            side("192.0.2.7:40000", None),
            own("10.0.2.15:22", "192.0.2.7:40000")
        );
        // An IPv6 listener: the guest's IPv6 address once known, its IPv4 one before.
        let fwd = socket_for("[::]:2222", None);
        let side = |peer: &str, v6| {
            guest_side(&fwd, &plan, &up, v6, Peer::Inet(peer.parse().unwrap()))
                .map(|(g, f)| (g.to_string(), f.to_string()))
        };
        let guest6 = Some("fec0::5054:ff:fe12:3456".parse().unwrap());
        assert_eq!(
            side("[::1]:40000", guest6),
            own("[fec0::5054:ff:fe12:3456]:22", "[fec0::2]:40000")
        );
        assert_eq!(
            side("[::1]:40000", None),
            own("10.0.2.15:22", "10.0.2.2:40000")
        );
        // A client of a unix socket forward: the gateway, at the port it was given.
        let fwd = socket_for("0.0.0.0:0", None);
        assert_eq!(
            guest_side(&fwd, &plan, &up, None, Peer::Unix { port: 49152 })
                .map(|(g, f)| (g.to_string(), f.to_string())),
            own("10.0.2.15:22", "10.0.2.2:49152")
        );
        // A forward to a set guest address; no address at all of any family: nowhere.
        let lo = Peer::Inet("127.0.0.1:1".parse().unwrap());
        let fwd = socket_for("0.0.0.0:2222", Some("10.0.2.20".parse().unwrap()));
        assert_eq!(
            guest_side(&fwd, &plan, &up, None, lo).map(|(g, _)| g.to_string()),
            Some("10.0.2.20:22".to_string())
        );
        let mut v6_only = plan.clone();
        v6_only.ipv4 = None;
        let fwd = socket_for("0.0.0.0:2222", None);
        assert_eq!(guest_side(&fwd, &v6_only, &up, None, lo), None);
    }
}
