//! `--libvirt-xml FILE`: a libvirt domain XML (or a bare `<interface>` element).
//!
//! Picks one `<interface type='user'>` or `<interface type='vhostuser'>` (by `--interface`:
//! alias name, MAC or index among all interfaces), and reads the elements that shape what the
//! guest sees: `<mac>`, `<ip>`, a default `<route>`, `<portForward>`, `<mtu>`, `<backend>`,
//! `<model>`, `<source>`. Validation follows libvirt's own (`qemu_validate.c`: one address per
//! family, an IPv4 prefix of 4-27, an IPv6 prefix of 64, no `peer`), so an XML libvirt would
//! refuse is refused here too, with the element and attribute named as written.
//!
//! libvirt 9.0 (Debian 12) refuses `<ip>`, `<route>` and `<portForward>` on an interface that
//! is not passt's, but keeps namespaced elements in the domain's `<metadata>`; so for a whole
//! domain they are also read from there ([`METADATA_NS`], see [`metadata_for`]), exactly as if
//! they were inside the `<interface>` they name. One given in both places is an error naming
//! both: which one the guest gets would otherwise depend on a rule the user has to remember.
//!
//! libvirt hands `<ip>` to QEMU slirp as `net=ADDR/PREFIX` and to passt as
//! `--address ADDR --netmask PREFIX`; which of those readings the guest gets is the profile's
//! choice, not this module's. A default route's gateway is recorded as the gateway (slirp's
//! `host=`, passt's `--gateway`); libvirt itself refuses `<route>` for QEMU slirp, which is
//! why it is accepted here rather than copied from libvirt.

use std::net::IpAddr;

use roxmltree::{Document, Node};

use crate::addr::decimal;
use crate::addr::{MAX_MTU, MIN_MTU};
use crate::error::ConfigError;
use crate::frontend::ports::{Include, to_forwards};
use crate::request::{AddrKind, Request, Setting};
use crate::warning::Warning;
use crate::{MacAddr, PortRange, Proto};

/// The namespace of this program's element in a domain's `<metadata>`. libvirt keeps only the
/// first element of each namespace there, so one `<net>` element holds what every interface
/// needs. The `.invalid` domain is never anyone's, so the name stays this program's.
pub(crate) const METADATA_NS: &str = "https://vhost-net-user.invalid/ns/1";

/// The elements read from `<metadata>`: those libvirt 9.0 refuses on a vhostuser interface.
const METADATA_ELEMENTS: [&str; 3] = ["ip", "route", "portForward"];

/// `type=` of a usable interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InterfaceType {
    User,
    Vhostuser,
}

impl std::fmt::Display for InterfaceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InterfaceType::User => "user",
            InterfaceType::Vhostuser => "vhostuser",
        })
    }
}

/// The selected interface: what it is, for `--explain`, and what it asks of the guest's view.
#[derive(Clone, Debug)]
pub(crate) struct LibvirtInterface {
    pub(crate) kind: InterfaceType,
    /// Position among all `<interface>` elements of the document (0-based).
    pub(crate) index: usize,
    pub(crate) alias: Option<String>,
    /// The guest's own MAC (`<mac address>`).
    pub(crate) mac: Option<MacAddr>,
    /// `<backend type>`.
    pub(crate) backend: Option<String>,
    /// `<model type>`.
    pub(crate) model: Option<String>,
    /// `<source>`, described (`unix:/path mode=client`, `dev=eth0`); noted, not used.
    pub(crate) source: Option<String>,
    /// The line of the domain's `<metadata>` entry for this interface, if it has one.
    pub(crate) metadata_line: Option<u32>,
    pub(crate) request: Request,
}

impl LibvirtInterface {
    /// What was picked, for `--explain`'s "from" line (`origin` names the file).
    pub(crate) fn describe(&self, origin: &str) -> String {
        let mut d = format!(
            "--libvirt-xml {origin}: <interface type='{}'> #{}",
            self.kind, self.index
        );
        for (what, value) in [
            ("alias", &self.alias),
            ("backend", &self.backend),
            ("model", &self.model),
            ("source", &self.source),
        ] {
            if let Some(v) = value {
                d.push_str(&format!(", {what} {v}"));
            }
        }
        if let Some(line) = self.metadata_line {
            d.push_str(&format!(", <metadata> line {line}"));
        }
        d
    }
}

/// `<name a='v' …/>` as written, to quote the element in messages.
fn quote(n: Node) -> String {
    let mut s = format!("<{}", n.tag_name().name());
    for a in n.attributes() {
        s.push_str(&format!(" {}='{}'", a.name(), a.value()));
    }
    s.push_str(if n.children().any(|c| c.is_element()) {
        ">"
    } else {
        "/>"
    });
    s
}

/// Messages about the XML name the file, the line and the element.
struct Ctx<'a> {
    origin: &'a str,
    doc: &'a Document<'a>,
}

impl Ctx<'_> {
    fn at(&self, n: Node) -> String {
        let pos = self.doc.text_pos_at(n.range().start);
        format!("{}:{}: {}", self.origin, pos.row, quote(n))
    }

    fn bad(&self, n: Node, attr: &str, why: impl std::fmt::Display) -> ConfigError {
        let val = n.attribute(attr).unwrap_or_default();
        ConfigError::invalid(self.at(n), format!("attribute {attr}='{val}': {why}"))
    }

    fn missing(&self, n: Node, attr: &str) -> ConfigError {
        ConfigError::invalid(self.at(n), format!("attribute '{attr}' is required"))
    }

    fn element(&self, n: Node, why: impl std::fmt::Display) -> ConfigError {
        ConfigError::invalid(self.at(n), why.to_string())
    }

    /// Attribute `attr` as an IPv4 or IPv6 address; it must be there.
    fn required_ip(&self, n: Node, attr: &str) -> Result<IpAddr, ConfigError> {
        self.ip(n, attr)?.ok_or_else(|| self.missing(n, attr))
    }

    /// Attribute `attr` as an IPv4 or IPv6 address, if present.
    fn ip(&self, n: Node, attr: &str) -> Result<Option<IpAddr>, ConfigError> {
        n.attribute(attr)
            .map(|a| {
                a.parse()
                    .map_err(|_| self.bad(n, attr, "not an IPv4 or IPv6 address"))
            })
            .transpose()
    }

    /// `family='ipv4|ipv6'`, when written, must be that of `addr` (attribute `attr`).
    fn check_family(&self, n: Node, addr: IpAddr, attr: &str) -> Result<(), ConfigError> {
        match n.attribute("family") {
            None => Ok(()),
            Some(f @ ("ipv4" | "ipv6")) if (f == "ipv4") != addr.is_ipv4() => {
                Err(self.bad(n, attr, format!("not an {f} address")))
            }
            Some("ipv4" | "ipv6") => Ok(()),
            Some(_) => Err(self.bad(n, "family", "expected 'ipv4' or 'ipv6'")),
        }
    }
}

/// Where an element allowed once per address family was first seen, to name it when it comes
/// again (`<ip>`, a default `<route>`).
#[derive(Default)]
struct Seen {
    v4: Option<String>,
    v6: Option<String>,
}

impl Seen {
    /// Record `n` (of `addr`'s family); the first one's place if there was one already.
    fn again(&mut self, ctx: &Ctx, n: Node, addr: IpAddr) -> Option<String> {
        let slot = if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        slot.replace(ctx.at(n))
    }
}

fn interface_kind(n: Node) -> Option<InterfaceType> {
    match n.attribute("type") {
        Some("user") => Some(InterfaceType::User),
        Some("vhostuser") => Some(InterfaceType::Vhostuser),
        _ => None,
    }
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn describe(i: usize, n: Node) -> String {
    let mut s = format!("#{i} type='{}'", n.attribute("type").unwrap_or("?"));
    if let Some(a) = child(n, "alias").and_then(|a| a.attribute("name")) {
        s.push_str(&format!(" alias '{a}'"));
    }
    if let Some(m) = child(n, "mac").and_then(|m| m.attribute("address")) {
        s.push_str(&format!(" mac {m}"));
    }
    s
}

/// Parse `xml` (its name for messages is `origin`) and read the interface `selector` picks.
pub(crate) fn parse(
    xml: &str,
    origin: &str,
    selector: Option<&str>,
) -> Result<LibvirtInterface, ConfigError> {
    let doc = Document::parse(xml).map_err(|source| ConfigError::XmlSyntax {
        origin: origin.to_string(),
        source,
    })?;
    let ctx = Ctx { origin, doc: &doc };
    let root = doc.root_element();
    let all: Vec<Node> = match root.tag_name().name() {
        "interface" => vec![root],
        "domain" => root
            .descendants()
            .filter(|n| {
                n.is_element()
                    && n.tag_name().name() == "interface"
                    && n.parent_element().map(|p| p.tag_name().name()) == Some("devices")
            })
            .collect(),
        other => {
            return Err(ConfigError::invalid(
                ctx.at(root),
                format!("the root element is <{other}>, not <domain> or <interface>"),
            ));
        }
    };
    let (index, node) = select(&all, root, origin, selector)?;
    let kind = interface_kind(node).ok_or_else(|| match node.attribute("type") {
        None => ctx.missing(node, "type"),
        Some(_) => ctx.bad(
            node,
            "type",
            "vhost-net-user serves interfaces of type 'user' or 'vhostuser'",
        ),
    })?;
    let metadata = match root.tag_name().name() {
        "domain" => metadata_for(&ctx, root, node)?,
        _ => None,
    };
    read_interface(&ctx, node, kind, index, metadata)
}

/// The domain's `<metadata>` entry for `iface`, if it has one: `<net xmlns='`[`METADATA_NS`]`'>`
/// naming the interface by `mac='…'` or `alias='…'` itself, or holding one `<interface mac='…'>`
/// (or `alias='…'`) per interface. Every entry is checked, not only the one picked, so that a
/// mistake shows the first time the domain is read.
fn metadata_for<'a, 'i>(
    ctx: &Ctx,
    root: Node<'a, 'i>,
    iface: Node,
) -> Result<Option<Node<'a, 'i>>, ConfigError> {
    let Some(net) = child(root, "metadata").and_then(|m| {
        m.children()
            .find(|c| c.is_element() && c.tag_name().namespace() == Some(METADATA_NS))
    }) else {
        return Ok(None);
    };
    if net.tag_name().name() != "net" {
        return Err(ctx.element(net, format!("expected <net> in namespace {METADATA_NS}")));
    }
    let keyed = |n: Node| n.has_attribute("mac") || n.has_attribute("alias");
    let entries: Vec<Node> = if keyed(net) {
        vec![net]
    } else {
        let mut entries = Vec::new();
        for n in net.children().filter(|c| c.is_element()) {
            if n.tag_name().name() != "interface" {
                return Err(ctx.element(
                    n,
                    "unexpected in <net> (only <interface mac='…'> or <interface alias='…'>, or name the interface on <net> itself)",
                ));
            }
            entries.push(n);
        }
        entries
    };
    let mac = child(iface, "mac")
        .and_then(|m| m.attribute("address"))
        .and_then(|a| a.parse::<MacAddr>().ok());
    let alias = child(iface, "alias").and_then(|a| a.attribute("name"));
    let mut found: Option<Node> = None;
    for entry in entries {
        let matches = match (entry.attribute("mac"), entry.attribute("alias")) {
            (Some(m), None) => {
                let m: MacAddr = m
                    .parse()
                    .map_err(|why: String| ctx.bad(entry, "mac", why))?;
                mac == Some(m)
            }
            (None, Some(a)) => alias == Some(a),
            (Some(_), Some(_)) => {
                return Err(ctx.element(entry, "name the interface by mac or by alias, not both"));
            }
            (None, None) => {
                return Err(ctx.element(entry, "attribute 'mac' or 'alias' is required"));
            }
        };
        if matches && let Some(prev) = found.replace(entry) {
            return Err(ctx.element(
                entry,
                format!(
                    "a second entry for the same interface (the first is {})",
                    ctx.at(prev)
                ),
            ));
        }
    }
    Ok(found)
}

/// The interface `selector` picks (alias name, MAC or index among all of `all`), or without
/// one the only usable interface, as `(index, node)`: a bare `<interface>` is the one meant,
/// whatever its type.
fn select<'a, 'i>(
    all: &[Node<'a, 'i>],
    root: Node<'a, 'i>,
    origin: &str,
    selector: Option<&str>,
) -> Result<(usize, Node<'a, 'i>), ConfigError> {
    let listing = || {
        all.iter()
            .enumerate()
            .map(|(i, n)| describe(i, *n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(match selector {
        // A bare <interface> is the one meant, whatever its type.
        None if root.tag_name().name() == "interface" => (0, root),
        Some(sel) => {
            let found = if let Some(i) = decimal(sel) {
                all.get(i as usize).map(|n| (i as usize, *n))
            } else if let Ok(mac) = sel.parse::<MacAddr>() {
                all.iter().enumerate().map(|(i, n)| (i, *n)).find(|(_, n)| {
                    child(*n, "mac")
                        .and_then(|m| m.attribute("address"))
                        .and_then(|a| a.parse::<MacAddr>().ok())
                        == Some(mac)
                })
            } else {
                all.iter().enumerate().map(|(i, n)| (i, *n)).find(|(_, n)| {
                    child(*n, "alias").and_then(|a| a.attribute("name")) == Some(sel)
                })
            };
            found.ok_or_else(|| {
                ConfigError::invalid(
                    format!("--interface {sel}"),
                    format!(
                        "no <interface> in {origin} has that alias name, MAC or index (there are: {})",
                        if all.is_empty() { "none".to_string() } else { listing() }
                    ),
                )
            })?
        }
        None => {
            let usable: Vec<(usize, Node)> = all
                .iter()
                .enumerate()
                .filter(|(_, n)| interface_kind(**n).is_some())
                .map(|(i, n)| (i, *n))
                .collect();
            match usable.as_slice() {
                [one] => *one,
                [] => {
                    return Err(ConfigError::invalid(
                        origin,
                        format!(
                            "no <interface type='user'> or <interface type='vhostuser'> (interfaces: {})",
                            if all.is_empty() {
                                "none".to_string()
                            } else {
                                listing()
                            }
                        ),
                    ));
                }
                _ => {
                    return Err(ConfigError::invalid(
                        origin,
                        format!(
                            "{} usable interfaces ({}): pick one with --interface ALIAS|MAC|INDEX",
                            usable.len(),
                            listing()
                        ),
                    ));
                }
            }
        }
    })
}

/// The elements of the interface that shape the guest's view; those that do not are noted.
fn read_interface(
    ctx: &Ctx,
    node: Node,
    kind: InterfaceType,
    index: usize,
    metadata: Option<Node>,
) -> Result<LibvirtInterface, ConfigError> {
    let mut req = Request::default();
    let mut out = LibvirtInterface {
        kind,
        index,
        alias: None,
        mac: None,
        backend: None,
        model: None,
        source: None,
        metadata_line: None,
        request: Request::default(),
    };
    let mut seen_mac = None;
    let mut seen_ip = Seen::default();
    let mut seen_route = Seen::default();
    let seen = |n: Node, slot: &mut Option<String>| -> Result<(), ConfigError> {
        if let Some(prev) = slot.replace(ctx.at(n)) {
            return Err(ctx.element(n, format!("only one allowed (the first is {prev})")));
        }
        Ok(())
    };
    for n in node.children().filter(|c| c.is_element()) {
        match n.tag_name().name() {
            "mac" => {
                seen(n, &mut seen_mac)?;
                let mac = read_mac(ctx, n)?;
                out.mac = Some(mac);
                req.guest_mac = Some(Setting::new(mac, quote(n)));
            }
            "ip" => read_ip(ctx, n, &mut req, &mut seen_ip)?,
            "route" => read_route(ctx, n, &mut req, &mut seen_route)?,
            "portForward" => read_port_forward(ctx, n, &mut req)?,
            "mtu" => req.mtu = Some(Setting::new(read_mtu(ctx, n)?, quote(n))),
            "backend" => out.backend = Some(read_backend(ctx, n, &mut req)?),
            "model" => out.model = Some(read_model(ctx, n)?),
            "source" => out.source = Some(describe_source(n)),
            "alias" => out.alias = n.attribute("name").map(str::to_string),
            "link" if n.attribute("state") == Some("down") => {
                req.notes.push(Warning::LinkStateIgnored { at: ctx.at(n) })
            }
            // Device placement, boot order and QEMU tuning: nothing the guest's network sees.
            "address" | "boot" | "rom" | "target" | "driver" | "acpi" | "guest" | "coalesce"
            | "tune" | "link" => {}
            other => req.notes.push(Warning::NoEffect {
                at: ctx.at(n),
                element: other.to_string(),
            }),
        }
    }
    if let Some(entry) = metadata {
        out.metadata_line = Some(ctx.doc.text_pos_at(entry.range().start).row);
        for n in entry.children().filter(|c| c.is_element()) {
            let name = n.tag_name().name();
            if !METADATA_ELEMENTS.contains(&name) {
                return Err(ctx.element(
                    n,
                    "not read from <metadata> (only <ip>, <route> and <portForward> are)",
                ));
            }
            if let Some(own) = node
                .children()
                .find(|c| c.is_element() && c.tag_name().name() == name)
            {
                return Err(ctx.element(
                    n,
                    format!(
                        "the <interface> has its own <{name}> ({}): give them in one place",
                        ctx.at(own)
                    ),
                ));
            }
            match name {
                "ip" => read_ip(ctx, n, &mut req, &mut seen_ip)?,
                "route" => read_route(ctx, n, &mut req, &mut seen_route)?,
                _ => read_port_forward(ctx, n, &mut req)?,
            }
        }
    }
    if out.backend.as_deref() == Some("passt") {
        req.notes.push(Warning::PasstBackend { at: ctx.at(node) });
    }
    out.request = req;
    Ok(out)
}

/// `<mac address>`: the guest's own MAC, unicast.
fn read_mac(ctx: &Ctx, n: Node) -> Result<MacAddr, ConfigError> {
    let a = n
        .attribute("address")
        .ok_or_else(|| ctx.missing(n, "address"))?;
    let mac: MacAddr = a
        .parse()
        .map_err(|why: String| ctx.bad(n, "address", why))?;
    if mac.is_multicast() {
        return Err(ctx.bad(n, "address", "expected a unicast MAC address"));
    }
    Ok(mac)
}

/// `<mtu size>`, within the bounds passt advertises.
fn read_mtu(ctx: &Ctx, n: Node) -> Result<u16, ConfigError> {
    let s = n.attribute("size").ok_or_else(|| ctx.missing(n, "size"))?;
    let size = decimal(s)
        .filter(|v| (u64::from(MIN_MTU)..=u64::from(MAX_MTU)).contains(v))
        .ok_or_else(|| ctx.bad(n, "size", format!("the MTU must be {MIN_MTU}-{MAX_MTU}")))?;
    Ok(size as u16)
}

/// `<backend type hostname fqdn>`: its type (`default` or `passt`) for `--explain`; the
/// hostname goes to DHCP.
fn read_backend(ctx: &Ctx, n: Node, req: &mut Request) -> Result<String, ConfigError> {
    match n.attribute("type") {
        None | Some("default") | Some("passt") => {}
        Some(_) => {
            return Err(ctx.bad(n, "type", "expected 'default' or 'passt'"));
        }
    }
    if let Some(h) = n.attribute("hostname") {
        if h.is_empty() || h.len() > 255 {
            return Err(ctx.bad(n, "hostname", "must be 1-255 bytes"));
        }
        req.hostname = Some(h.to_string());
    }
    if n.attribute("fqdn").is_some() {
        req.notes.push(Warning::FqdnNotSent { at: ctx.at(n) });
    }
    Ok(n.attribute("type").unwrap_or("default").to_string())
}

/// `<model type>`: a vhost-user device is one of the virtio models.
fn read_model(ctx: &Ctx, n: Node) -> Result<String, ConfigError> {
    let t = n.attribute("type").ok_or_else(|| ctx.missing(n, "type"))?;
    if !matches!(
        t,
        "virtio" | "virtio-transitional" | "virtio-non-transitional"
    ) {
        return Err(ctx.bad(n, "type", "a vhost-user network device is virtio"));
    }
    Ok(t.to_string())
}

/// `<source>` described for `--explain` (`unix path=/p mode=client`, `dev=eth0`).
fn describe_source(n: Node) -> String {
    let mut d = Vec::new();
    if let Some(t) = n.attribute("type") {
        d.push(t.to_string());
    }
    for a in ["path", "mode", "dev"] {
        if let Some(v) = n.attribute(a) {
            d.push(format!("{a}={v}"));
        }
    }
    d.join(" ")
}

/// `<ip address prefix family>`: the guest's address, which libvirt hands QEMU and passt alike.
fn read_ip(ctx: &Ctx, n: Node, req: &mut Request, seen: &mut Seen) -> Result<(), ConfigError> {
    let addr = ctx.required_ip(n, "address")?;
    ctx.check_family(n, addr, "address")?;
    if n.attribute("peer").is_some() {
        return Err(ctx.bad(
            n,
            "peer",
            "a peer address cannot be set for a user-mode guest",
        ));
    }
    // libvirt: prefix='0' is the same as no prefix.
    let prefix = match n.attribute("prefix") {
        None => None,
        Some(p) => match decimal(p) {
            Some(0) => None,
            Some(v) if v <= 128 => Some(v as u8),
            _ => return Err(ctx.bad(n, "prefix", "not a prefix length")),
        },
    };
    let shown = quote(n);
    if let Some(prev) = seen.again(ctx, n, addr) {
        return Err(ctx.element(
            n,
            format!(
                "only one {} address per interface is allowed (the first is {prev})",
                if addr.is_ipv4() { "IPv4" } else { "IPv6" }
            ),
        ));
    }
    match addr {
        IpAddr::V4(v4) => {
            if let Some(p) = prefix
                && !(4..=27).contains(&p)
            {
                return Err(ctx.bad(n, "prefix", "libvirt accepts 4-27 for an IPv4 address"));
            }
            req.v4_addr = Some(Setting::new(v4, &shown));
            req.v4_addr_kind = AddrKind::Address;
            req.v4_prefix = prefix.map(|p| Setting::new(p, &shown));
        }
        IpAddr::V6(v6) => {
            if let Some(p) = prefix
                && p != 64
            {
                return Err(ctx.bad(n, "prefix", "libvirt accepts only 64 for an IPv6 address"));
            }
            req.v6_addr = Some(Setting::new(v6, &shown));
            req.v6_addr_kind = AddrKind::Address;
            req.v6_prefix = prefix.map(|p| Setting::new(p, &shown));
        }
    }
    Ok(())
}

/// `<route address prefix|netmask gateway family>`: only a default route means anything to a
/// user-mode guest, and its gateway becomes the guest's.
fn read_route(ctx: &Ctx, n: Node, req: &mut Request, seen: &mut Seen) -> Result<(), ConfigError> {
    let gw = ctx.required_ip(n, "gateway")?;
    let dest = ctx.ip(n, "address")?;
    ctx.check_family(n, gw, "gateway")?;
    if dest.is_some_and(|d| d.is_ipv4() != gw.is_ipv4()) {
        return Err(ctx.bad(n, "address", "not the family of the gateway"));
    }
    let prefix = match (n.attribute("prefix"), n.attribute("netmask")) {
        (Some(p), _) => Some(
            decimal(p)
                .filter(|v| *v <= 128)
                .ok_or_else(|| ctx.bad(n, "prefix", "not a prefix length"))?,
        ),
        (None, Some(m)) => Some(u64::from(
            crate::addr::parse_netmask(m).map_err(|why| ctx.bad(n, "netmask", why))?,
        )),
        (None, None) => None,
    };
    let is_default = dest.is_none_or(|d| d.is_unspecified()) && prefix.is_none_or(|p| p == 0);
    if !is_default {
        return Err(ctx.element(
            n,
            "only a default route (address 0.0.0.0 or ::, prefix 0) can be given to the guest",
        ));
    }
    if let Some(prev) = seen.again(ctx, n, gw) {
        return Err(ctx.element(n, format!("a second default route (the first is {prev})")));
    }
    let shown = quote(n);
    match gw {
        IpAddr::V4(a) => req.v4_gateway = Some(Setting::new(a, shown)),
        IpAddr::V6(a) => req.v6_gateway = Some(Setting::new(a, shown)),
    }
    Ok(())
}

/// `<portForward proto address dev>` with `<range start end to exclude>`: the same spec
/// libvirt hands passt (`[addr][%dev]/` then `all` or the ranges, `~` for exclusions).
fn read_port_forward(ctx: &Ctx, n: Node, req: &mut Request) -> Result<(), ConfigError> {
    let proto = match n.attribute("proto") {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        Some(_) => return Err(ctx.bad(n, "proto", "expected 'tcp' or 'udp'")),
        None => return Err(ctx.missing(n, "proto")),
    };
    let addr: Option<IpAddr> = match n.attribute("address") {
        None => None,
        Some(a) => Some(
            a.parse()
                .map_err(|_| ctx.bad(n, "address", "not an IPv4 or IPv6 address"))?,
        ),
    };
    let dev = match n.attribute("dev") {
        Some("") => return Err(ctx.bad(n, "dev", "empty device name")),
        d => d.map(str::to_string),
    };
    let port = |r: Node, attr: &str| -> Result<Option<u16>, ConfigError> {
        match r.attribute(attr) {
            None => Ok(None),
            Some(v) => decimal(v)
                .filter(|p| (1..=65535).contains(p))
                .map(|p| Some(p as u16))
                .ok_or_else(|| ctx.bad(r, attr, "not a port (1-65535)")),
        }
    };
    let mut includes: Vec<Include> = Vec::new();
    let mut excludes = Vec::new();
    for r in n.children().filter(|c| c.is_element()) {
        if r.tag_name().name() != "range" {
            return Err(ctx.element(r, "unexpected inside <portForward> (only <range>)"));
        }
        let start = port(r, "start")?.ok_or_else(|| ctx.missing(r, "start"))?;
        let end = port(r, "end")?.unwrap_or(start);
        if end < start {
            return Err(ctx.bad(r, "end", format!("below start='{start}'")));
        }
        let range = PortRange {
            first: start,
            last: end,
        };
        let exclude = match r.attribute("exclude") {
            None | Some("no") => false,
            Some("yes") => true,
            Some(_) => return Err(ctx.bad(r, "exclude", "expected 'yes' or 'no'")),
        };
        let to = port(r, "to")?;
        if exclude {
            if to.is_some() {
                return Err(ctx.bad(r, "to", "an excluded range is not forwarded anywhere"));
            }
            excludes.push(range);
            continue;
        }
        let to = to.unwrap_or(start);
        if u32::from(to) + range.count() - 1 > 65535 {
            return Err(ctx.bad(
                r,
                "to",
                format!("{range} mapped from {to} runs past port 65535"),
            ));
        }
        includes.push((range, to));
    }
    let all = includes.is_empty() && excludes.is_empty();
    let shown = ctx.at(n);
    for f in to_forwards(proto, addr, dev, all, includes, &excludes, &shown)? {
        req.forwards.push(Setting::new(f, quote(n)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostListen;

    fn iface(xml: &str) -> Result<LibvirtInterface, String> {
        parse(xml, "t.xml", None).map_err(|e| e.to_string())
    }

    const SEED: &str = "<interface type='user'><mac address='52:54:00:41:2c:49'/>\
        <ip family='ipv4' address='169.254.0.0' prefix='16'/><model type='virtio'/></interface>";

    #[test]
    fn seed_interface_is_read_as_written() {
        let i = iface(SEED).unwrap();
        assert_eq!(i.kind, InterfaceType::User);
        assert_eq!(i.mac.unwrap().to_string(), "52:54:00:41:2c:49");
        let r = &i.request;
        assert_eq!(r.v4_addr.as_ref().unwrap().value.to_string(), "169.254.0.0");
        assert_eq!(r.v4_prefix.as_ref().unwrap().value, 16);
        assert_eq!(
            r.v4_addr.as_ref().unwrap().origin,
            "<ip family='ipv4' address='169.254.0.0' prefix='16'/>"
        );
        assert_eq!(r.v4_addr_kind, AddrKind::Address);
    }

    #[test]
    fn domain_selection() {
        let dom = "<domain type='qemu'><name>d</name><devices>\
            <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/></interface>\
            <interface type='user'><alias name='ua-net1'/><mac address='52:54:00:00:00:02'/></interface>\
            <interface type='vhostuser'><alias name='net2'/><mac address='52:54:00:00:00:03'/>\
              <source type='unix' path='/run/vu.sock' mode='client'/><model type='virtio'/></interface>\
            </devices></domain>";
        let e = iface(dom).unwrap_err();
        assert!(e.contains("2 usable interfaces"), "{e}");
        assert!(e.contains("--interface"), "{e}");
        let pick = |sel: &str| parse(dom, "d.xml", Some(sel)).map_err(|e| e.to_string());
        assert_eq!(pick("ua-net1").unwrap().index, 1);
        assert_eq!(pick("52:54:00:00:00:03").unwrap().index, 2);
        assert_eq!(pick("52:54:0:0:0:3").unwrap().index, 2);
        let vu = pick("2").unwrap();
        assert_eq!(vu.kind, InterfaceType::Vhostuser);
        assert_eq!(vu.alias.as_deref(), Some("net2"));
        assert_eq!(
            vu.source.as_deref(),
            Some("unix path=/run/vu.sock mode=client")
        );
        let e = pick("0").unwrap_err();
        assert!(
            e.contains("type='network'") && e.contains("'user' or 'vhostuser'"),
            "{e}"
        );
        let e = pick("nosuch").unwrap_err();
        assert!(e.starts_with("--interface nosuch:"), "{e}");
        let e = pick("7").unwrap_err();
        assert!(e.contains("#0 type='network'"), "{e}");

        let one = "<domain><devices><interface type='bridge'/><interface type='vhostuser'/></devices></domain>";
        assert_eq!(iface(one).unwrap().index, 1);
        let none = "<domain><devices><interface type='bridge'/></devices></domain>";
        assert!(
            iface(none)
                .unwrap_err()
                .contains("no <interface type='user'>")
        );
        assert!(
            iface("<network/>")
                .unwrap_err()
                .contains("root element is <network>")
        );
        assert!(
            iface("<interface type='user'>")
                .unwrap_err()
                .contains("not well-formed")
        );
    }

    #[test]
    fn invalid_elements_are_named() {
        // (interface body, words the error must contain)
        let cases = [
            (
                "<mac address='52:54:00:41:2c'/>",
                "<mac address='52:54:00:41:2c'/>",
            ),
            ("<mac address='01:00:5e:00:00:01'/>", "unicast"),
            ("<mac/>", "attribute 'address' is required"),
            (
                "<ip address='169.254.0.x'/>",
                "attribute address='169.254.0.x'",
            ),
            (
                "<ip family='ipv6' address='10.0.0.1'/>",
                "not an ipv6 address",
            ),
            (
                "<ip family='ipx' address='10.0.0.1'/>",
                "attribute family='ipx'",
            ),
            (
                "<ip address='10.0.0.1' prefix='28'/>",
                "libvirt accepts 4-27",
            ),
            (
                "<ip address='10.0.0.1' prefix='3'/>",
                "attribute prefix='3'",
            ),
            (
                "<ip address='10.0.0.1' prefix='x'/>",
                "attribute prefix='x'",
            ),
            ("<ip address='fd00::1' prefix='48'/>", "only 64"),
            (
                "<ip address='10.0.0.1' peer='10.0.0.2'/>",
                "attribute peer=",
            ),
            (
                "<ip address='10.0.0.1'/><ip address='10.0.0.2'/>",
                "only one IPv4 address",
            ),
            (
                "<route gateway='10.0.0.x'/>",
                "attribute gateway='10.0.0.x'",
            ),
            (
                "<route address='0.0.0.0' prefix='0'/>",
                "attribute 'gateway' is required",
            ),
            (
                "<route address='10.1.0.0' prefix='16' gateway='10.0.0.1'/>",
                "only a default route",
            ),
            (
                "<route family='ipv6' gateway='10.0.0.1'/>",
                "not an ipv6 address",
            ),
            (
                "<route gateway='10.0.0.1'/><route address='0.0.0.0' gateway='10.0.0.2'/>",
                "a second default route",
            ),
            ("<mtu size='20'/>", "attribute size='20'"),
            ("<mtu size='65536'/>", "the MTU must be 68-65520"),
            ("<mtu/>", "attribute 'size' is required"),
            ("<model type='e1000'/>", "attribute type='e1000'"),
            ("<backend type='slirp'/>", "attribute type='slirp'"),
            ("<portForward proto='sctp'/>", "attribute proto='sctp'"),
            ("<portForward/>", "attribute 'proto' is required"),
            (
                "<portForward proto='tcp' address='x'/>",
                "attribute address='x'",
            ),
            (
                "<portForward proto='tcp'><range/></portForward>",
                "'start' is required",
            ),
            (
                "<portForward proto='tcp'><range start='0'/></portForward>",
                "attribute start='0'",
            ),
            (
                "<portForward proto='tcp'><range start='10' end='5'/></portForward>",
                "attribute end='5': below start='10'",
            ),
            (
                "<portForward proto='tcp'><range start='10' to='20' exclude='yes'/></portForward>",
                "attribute to='20'",
            ),
            (
                "<portForward proto='tcp'><range start='10' exclude='maybe'/></portForward>",
                "attribute exclude='maybe'",
            ),
            (
                "<portForward proto='tcp'><port/></portForward>",
                "only <range>",
            ),
        ];
        for (body, want) in cases {
            let xml = format!("<interface type='user'>{body}</interface>");
            let e = iface(&xml).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.starts_with("t.xml:1: <"), "{body}: {e}");
        }
        let e = iface("<interface type='bridge'/>").unwrap_err();
        assert!(e.contains("attribute type='bridge'"), "{e}");
        let e = iface("<interface/>").unwrap_err();
        assert!(e.contains("attribute 'type' is required"), "{e}");
    }

    #[test]
    fn routes_and_forwards() {
        let i = iface(
            "<interface type='vhostuser'>\
             <ip family='ipv4' address='169.254.2.15' prefix='16'/>\
             <route family='ipv4' address='0.0.0.0' prefix='0' gateway='169.254.2.2'/>\
             <route family='ipv6' address='::' netmask='::' gateway='fd00::1'/>\
             <portForward proto='tcp' address='127.0.0.1' dev='lo'>\
               <range start='2022' to='22'/>\
               <range start='5000' end='5020' to='6000'/>\
               <range start='5010' end='5015' exclude='yes'/>\
             </portForward>\
             <portForward proto='udp'/>\
             <mtu size='9000'/><backend type='passt' hostname='vm1'/></interface>",
        );
        // A netmask='::' is not an IPv4 netmask: refused by name.
        assert!(i.unwrap_err().contains("attribute netmask='::'"));

        let i = iface(
            "<interface type='vhostuser'>\
             <ip family='ipv4' address='169.254.2.15' prefix='16'/>\
             <route family='ipv4' address='0.0.0.0' prefix='0' gateway='169.254.2.2'/>\
             <route family='ipv6' gateway='fd00::1'/>\
             <portForward proto='tcp' address='127.0.0.1' dev='lo'>\
               <range start='2022' to='22'/>\
               <range start='5000' end='5020' to='6000'/>\
               <range start='5010' end='5015' exclude='yes'/>\
             </portForward>\
             <portForward proto='udp'/>\
             <mtu size='9000'/><backend type='passt' hostname='vm1'/></interface>",
        )
        .unwrap();
        let r = &i.request;
        assert_eq!(
            r.v4_gateway.as_ref().unwrap().value.to_string(),
            "169.254.2.2"
        );
        assert_eq!(r.v6_gateway.as_ref().unwrap().value.to_string(), "fd00::1");
        assert_eq!(r.mtu.as_ref().unwrap().value, 9000);
        assert_eq!(r.hostname.as_deref(), Some("vm1"));
        assert_eq!(i.backend.as_deref(), Some("passt"));
        let shapes: Vec<_> = r
            .forwards
            .iter()
            .map(|f| match &f.value.host {
                HostListen::Inet { ports, addr, iface } => (
                    f.value.proto,
                    addr.map(|a| a.to_string()),
                    iface.clone(),
                    ports.first,
                    ports.last,
                    f.value.guest_port,
                    f.value.skip_ephemeral,
                ),
                HostListen::Unix { .. } => unreachable!(),
            })
            .collect();
        let lo = || (Some("127.0.0.1".to_string()), Some("lo".to_string()));
        assert_eq!(
            shapes,
            vec![
                (Proto::Tcp, lo().0, lo().1, 2022, 2022, 22, false),
                (Proto::Tcp, lo().0, lo().1, 5000, 5009, 6000, false),
                (Proto::Tcp, lo().0, lo().1, 5016, 5020, 6016, false),
                (Proto::Udp, None, None, 1, 65535, 1, true),
            ]
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.to_string().contains("backend type='passt'"))
        );
    }

    #[test]
    fn unknown_elements_are_noted_not_fatal() {
        let i = iface(
            "<interface type='user'><bandwidth/><address type='pci'/><target dev='x'/></interface>",
        )
        .unwrap();
        assert_eq!(i.request.notes.len(), 1);
        assert!(
            i.request.notes[0]
                .to_string()
                .contains("<bandwidth> has no effect")
        );
    }

    /// A domain in the shape libvirt 9.0 keeps: a vhostuser interface with only what that
    /// version accepts, and `meta` inside `<metadata>`.
    fn domain_with_metadata(iface_body: &str, meta: &str) -> String {
        format!(
            "<domain type='kvm'>\n<name>g</name>\n<metadata>\n{meta}\n</metadata>\n<devices>\n\
             <interface type='vhostuser'>\n<mac address='52:54:00:41:2c:49'/>\n\
             <source type='unix' path='/run/vnu/g.sock' mode='client'/>\n\
             <model type='virtio'/>\n{iface_body}</interface>\n</devices>\n</domain>"
        )
    }

    /// What the elements in the interface or in the metadata amount to.
    const PLAN_ELEMENTS: &str = "<ip family='ipv4' address='169.254.0.0' prefix='16'/>\
        <route family='ipv4' address='0.0.0.0' prefix='0' gateway='169.254.0.2'/>\
        <portForward proto='tcp'><range start='2222' to='22'/></portForward>";

    fn plan(xml: &str, selector: Option<&str>) -> Result<crate::NetPlan, String> {
        crate::Inputs {
            libvirt_xml: Some("d.xml".into()),
            interface: selector.map(str::to_string),
            ..Default::default()
        }
        .build_with_xml(Some(xml))
        .map(|r| r.plan)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn metadata_reads_as_if_inside_the_interface() {
        let inside = plan(&domain_with_metadata(PLAN_ELEMENTS, ""), None).unwrap();
        let bare = plan(&domain_with_metadata("", ""), None).unwrap();
        assert_ne!(inside, bare, "the elements change the plan");
        // The short form: <net> names the interface itself.
        let short = format!(
            "<vnu:net xmlns:vnu='{METADATA_NS}' mac='52:54:00:41:2c:49'>{PLAN_ELEMENTS}</vnu:net>"
        );
        assert_eq!(
            plan(&domain_with_metadata("", &short), None).unwrap(),
            inside
        );
        // One entry per interface, keyed by MAC (written otherwise) or by alias.
        let per_interface = format!(
            "<vnu:net xmlns:vnu='{METADATA_NS}'>\
             <vnu:interface mac='52:54:00:00:00:99'><ip address='10.9.9.9' prefix='8'/></vnu:interface>\
             <vnu:interface mac='52:54:0:41:2c:49'>{PLAN_ELEMENTS}</vnu:interface></vnu:net>"
        );
        assert_eq!(
            plan(&domain_with_metadata("", &per_interface), None).unwrap(),
            inside
        );
        let by_alias = format!(
            "<net xmlns='{METADATA_NS}'><interface alias='ua-net0'>{PLAN_ELEMENTS}</interface></net>"
        );
        let aliased = domain_with_metadata("<alias name='ua-net0'/>", &by_alias);
        assert_eq!(plan(&aliased, None).unwrap(), inside);
        let i = parse(&aliased, "d.xml", None).unwrap();
        assert_eq!(i.metadata_line, Some(4));
        assert!(
            i.describe("d.xml").ends_with(", <metadata> line 4"),
            "{}",
            i.describe("d.xml")
        );
    }

    #[test]
    fn metadata_for_another_interface_or_namespace_is_ignored() {
        let bare = plan(&domain_with_metadata("", ""), None).unwrap();
        for meta in [
            format!(
                "<vnu:net xmlns:vnu='{METADATA_NS}' mac='52:54:00:00:00:99'>{PLAN_ELEMENTS}</vnu:net>"
            ),
            format!(
                "<vnu:net xmlns:vnu='{METADATA_NS}' alias='ua-other'>{PLAN_ELEMENTS}</vnu:net>"
            ),
            format!("<vnu:net xmlns:vnu='{METADATA_NS}'/>"),
            format!("<o:net xmlns:o='https://example.invalid/other'>{PLAN_ELEMENTS}</o:net>"),
        ] {
            assert_eq!(
                plan(&domain_with_metadata("", &meta), None).unwrap(),
                bare,
                "{meta}"
            );
        }
        // The other interface of a domain picks its own entry.
        let two = format!(
            "<domain><metadata><vnu:net xmlns:vnu='{METADATA_NS}'>\
             <vnu:interface mac='52:54:00:00:00:01'><ip address='10.1.0.0' prefix='16'/></vnu:interface>\
             <vnu:interface mac='52:54:00:00:00:02'><ip address='10.2.0.0' prefix='16'/></vnu:interface>\
             </vnu:net></metadata><devices>\
             <interface type='vhostuser'><mac address='52:54:00:00:00:01'/></interface>\
             <interface type='vhostuser'><mac address='52:54:00:00:00:02'/></interface>\
             </devices></domain>"
        );
        let addr = |sel| {
            parse(&two, "d.xml", Some(sel))
                .unwrap()
                .request
                .v4_addr
                .unwrap()
                .value
                .to_string()
        };
        assert_eq!(addr("0"), "10.1.0.0");
        assert_eq!(addr("52:54:00:00:00:02"), "10.2.0.0");
        // A bare <interface> has no metadata to read.
        assert_eq!(iface(SEED).unwrap().metadata_line, None);
    }

    #[test]
    fn bad_metadata_is_a_one_line_error() {
        let ns = METADATA_NS;
        // (the metadata, the interface's own elements, the error expected)
        let cases = [
            (
                format!("<vnu:net xmlns:vnu='{ns}' mac='52:54:00:41:2c'/>"),
                "",
                "d.xml:4: <net mac='52:54:00:41:2c'/>: attribute mac='52:54:00:41:2c':",
            ),
            (
                format!("<vnu:net xmlns:vnu='{ns}' mac='52:54:00:41:2c:49' alias='ua-x'/>"),
                "",
                "d.xml:4: <net mac='52:54:00:41:2c:49' alias='ua-x'/>: name the interface by mac or by alias, not both",
            ),
            (
                format!("<vnu:net xmlns:vnu='{ns}'><vnu:interface/></vnu:net>"),
                "",
                "d.xml:4: <interface/>: attribute 'mac' or 'alias' is required",
            ),
            (
                format!("<vnu:net xmlns:vnu='{ns}'><ip address='10.0.0.1'/></vnu:net>"),
                "",
                "d.xml:4: <ip address='10.0.0.1'/>: unexpected in <net>",
            ),
            (
                format!("<vnu:plan xmlns:vnu='{ns}'/>"),
                "",
                "d.xml:4: <plan/>: expected <net> in namespace https://vhost-net-user.invalid/ns/1",
            ),
            (
                format!(
                    "<vnu:net xmlns:vnu='{ns}'><vnu:interface mac='52:54:00:41:2c:49'/>\n\
                     <vnu:interface mac='52:54:00:41:2c:49'/></vnu:net>"
                ),
                "",
                "d.xml:5: <interface mac='52:54:00:41:2c:49'/>: a second entry for the same interface (the first is d.xml:4: <interface mac='52:54:00:41:2c:49'/>)",
            ),
            (
                format!(
                    "<vnu:net xmlns:vnu='{ns}' mac='52:54:00:41:2c:49'><mtu size='9000'/></vnu:net>"
                ),
                "",
                "d.xml:4: <mtu size='9000'/>: not read from <metadata> (only <ip>, <route> and <portForward> are)",
            ),
            (
                format!(
                    "<vnu:net xmlns:vnu='{ns}' mac='52:54:00:41:2c:49'><ip address='169.254.0.0' prefix='30'/></vnu:net>"
                ),
                "",
                "d.xml:4: <ip address='169.254.0.0' prefix='30'/>: attribute prefix='30': libvirt accepts 4-27",
            ),
            (
                format!(
                    "<vnu:net xmlns:vnu='{ns}' mac='52:54:00:41:2c:49'><portForward proto='sctp'/></vnu:net>"
                ),
                "",
                "d.xml:4: <portForward proto='sctp'/>: attribute proto='sctp': expected 'tcp' or 'udp'",
            ),
            (
                format!(
                    "<vnu:net xmlns:vnu='{ns}' mac='52:54:00:41:2c:49'><ip address='10.0.0.1'/></vnu:net>"
                ),
                "<ip address='169.254.0.0' prefix='16'/>\n",
                "d.xml:4: <ip address='10.0.0.1'/>: the <interface> has its own <ip> (d.xml:11: <ip address='169.254.0.0' prefix='16'/>): give them in one place",
            ),
        ];
        for (meta, body, want) in cases {
            let xml = domain_with_metadata(body, &meta);
            let e = match parse(&xml, "d.xml", None) {
                Ok(i) => panic!("{meta}: expected an error, got {:?}", i.request),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with(want), "{meta}:\n got  {e}\n want {want}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    /// `virsh dumpxml` of libvirt 9.0.0 (Debian 12, `qemu:///embed`) after `virsh define` of a
    /// domain whose `<metadata>` held this `<vnu:net>` and a second one of the same namespace:
    /// libvirt kept the first, dropped the second, and refused `<ip>` inside the interface
    /// ("Invalid attempt to set network interface guest-side IP route and/or address info, not
    /// supported by QEMU").
    const LIBVIRT_9_0_DUMPXML: &str = r#"<domain type='qemu'>
  <name>seed</name>
  <uuid>0cc2db6b-5984-4ac3-b714-f8dea27ce261</uuid>
  <metadata>
    <vnu:net xmlns:vnu="https://vhost-net-user.invalid/ns/1">
      <vnu:interface mac="52:54:00:41:2c:49">
        <ip family="ipv4" address="169.254.0.0" prefix="16"/>
        <route family="ipv4" address="0.0.0.0" prefix="0" gateway="169.254.0.2"/>
        <portForward proto="tcp">
          <range start="2222" to="22"/>
        </portForward>
      </vnu:interface>
    </vnu:net>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <interface type='vhostuser'>
      <mac address='52:54:00:41:2c:49'/>
      <source type='unix' path='/run/vnu/seed.sock' mode='client'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </interface>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </memballoon>
  </devices>
</domain>"#;

    #[test]
    fn the_domain_as_libvirt_9_0_keeps_it_gives_the_plan_of_the_elements_in_the_interface() {
        let i = parse(LIBVIRT_9_0_DUMPXML, "d.xml", None).unwrap();
        assert_eq!(i.kind, InterfaceType::Vhostuser);
        assert_eq!(i.metadata_line, Some(6));
        let inside = LIBVIRT_9_0_DUMPXML.replace(
            "<model type='virtio'/>",
            "<model type='virtio'/><ip family='ipv4' address='169.254.0.0' prefix='16'/>\
             <route family='ipv4' address='0.0.0.0' prefix='0' gateway='169.254.0.2'/>\
             <portForward proto='tcp'><range start='2222' to='22'/></portForward>",
        );
        let start = inside.find("<metadata>").unwrap();
        let end = inside.find("</metadata>").unwrap() + "</metadata>".len();
        let inside = format!("{}{}", &inside[..start], &inside[end..]);
        assert_eq!(
            plan(LIBVIRT_9_0_DUMPXML, None).unwrap(),
            plan(&inside, None).unwrap()
        );
        assert_ne!(
            plan(&inside, None).unwrap(),
            plan(&domain_with_metadata("", ""), None).unwrap()
        );
    }
}
