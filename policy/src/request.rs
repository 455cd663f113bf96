//! What the user asked for, before a profile gives it meaning.
//!
//! Each front end fills a [`Request`]: raw settings, each with the words it came from, so that
//! an error or warning can quote them. Nothing here is derived: whether an address is a network
//! (slirp) or the guest's own address (passt) is the profile's decision, made once in
//! `profile/` for every front end alike.

use std::fmt::Display;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::warning::Warning;
use crate::{MacAddr, PortForward, Services};

/// A value and where it came from (`<ip address='…'/>`, `net=…`, `--address …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Setting<T> {
    pub value: T,
    pub origin: String,
}

impl<T> Setting<T> {
    pub fn new(value: T, origin: impl Into<String>) -> Self {
        Setting {
            value,
            origin: origin.into(),
        }
    }
}

/// The words a setting came from, if given.
pub(crate) fn origin<T>(s: &Option<Setting<T>>) -> Option<&str> {
    s.as_ref().map(|s| s.origin.as_str())
}

/// Who to blame for a derived value: its own setting when given, else the network it came from.
pub(crate) fn blame<T>(s: &Option<Setting<T>>, derived_from: &str) -> String {
    match s {
        Some(s) => s.origin.clone(),
        None => derived_from.to_string(),
    }
}

/// How an IPv4 address was given: slirp's `net=` is a network by definition, while an `<ip>`
/// element or `--address` names an address the user may expect the guest to get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum AddrKind {
    #[default]
    Address,
    Network,
}

/// A guest forward as written: its address stays open until the profile knows the network,
/// because slirp's default for an empty SERVER is derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawGuestForward {
    /// `None`: SERVER was empty (or 0.0.0.0, which libslirp reads the same way).
    pub addr: Option<Ipv4Addr>,
    pub port: u16,
    /// Everything after `cmd:`, as written.
    pub command: String,
    /// `command` split into words (never empty).
    pub argv: Vec<String>,
}

/// slirp's `smb=DIR` with its `smbserver=ADDR`: like a guest forward's, the address waits for
/// the network, because its default is derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSmbShare {
    /// `smb=`, already absolute and checked for what smb.conf cannot hold.
    pub export: Setting<PathBuf>,
    /// `smbserver=`; `None` (or 0.0.0.0, libslirp's "not given"): the network's `.2.4`.
    pub server: Option<Setting<Ipv4Addr>>,
}

/// The union of everything the front ends can express.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// Set when IPv4 was turned off, to the words that did it.
    pub ipv4_off: Option<String>,
    pub ipv6_off: Option<String>,
    pub v4_addr: Option<Setting<Ipv4Addr>>,
    pub v4_addr_kind: AddrKind,
    pub v4_prefix: Option<Setting<u8>>,
    pub v4_gateway: Option<Setting<Ipv4Addr>>,
    pub v4_dns: Option<Setting<Ipv4Addr>>,
    pub v4_dhcp_start: Option<Setting<Ipv4Addr>>,
    /// slirp: `ipv6-prefix`; passt: the guest's IPv6 address.
    pub v6_addr: Option<Setting<Ipv6Addr>>,
    pub v6_addr_kind: AddrKind,
    pub v6_prefix: Option<Setting<u8>>,
    pub v6_gateway: Option<Setting<Ipv6Addr>>,
    pub v6_dns: Option<Setting<Ipv6Addr>>,
    pub restrict: bool,
    pub hostname: Option<String>,
    pub domain_name: Option<String>,
    /// `None`: not configured; `Some(empty)`: explicitly none (passt `--search none`).
    pub search: Option<Vec<String>>,
    pub bootfile: Option<String>,
    pub tftp_root: Option<PathBuf>,
    pub tftp_server_name: Option<String>,
    /// 0 means "do not advertise" (passt `--mtu 0`).
    pub mtu: Option<Setting<u16>>,
    pub gateway_mac: Option<Setting<MacAddr>>,
    pub guest_mac: Option<Setting<MacAddr>>,
    pub forwards: Vec<Setting<PortForward>>,
    /// slirp's `guestfwd=…-cmd:…`, in the order given.
    pub guest_forwards: Vec<Setting<RawGuestForward>>,
    /// slirp's `smb=` (the last one given).
    pub smb: Option<RawSmbShare>,
    pub map_gateway_to_loopback: bool,
    /// passt's `--no-*` switches: the services left on.
    pub services: Services,
    /// Warnings raised while reading the input.
    pub notes: Vec<Warning>,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            ipv4_off: None,
            ipv6_off: None,
            v4_addr: None,
            v4_addr_kind: AddrKind::Address,
            v4_prefix: None,
            v4_gateway: None,
            v4_dns: None,
            v4_dhcp_start: None,
            v6_addr: None,
            v6_addr_kind: AddrKind::Address,
            v6_prefix: None,
            v6_gateway: None,
            v6_dns: None,
            restrict: false,
            hostname: None,
            domain_name: None,
            search: None,
            bootfile: None,
            tftp_root: None,
            tftp_server_name: None,
            mtu: None,
            gateway_mac: None,
            guest_mac: None,
            forwards: Vec::new(),
            guest_forwards: Vec::new(),
            smb: None,
            map_gateway_to_loopback: true,
            services: Services::ALL,
            notes: Vec::new(),
        }
    }
}

/// Put `new` into `slot`; a command-line option overriding a different value from the file
/// is allowed but said out loud, since the guest then differs from what the file shows.
pub(crate) fn overlay<T: PartialEq + Display>(
    slot: &mut Option<Setting<T>>,
    new: Setting<T>,
    notes: &mut Vec<Warning>,
) {
    if let Some(old) = slot.as_ref()
        && old.value != new.value
    {
        notes.push(Warning::Overrides {
            by: new.origin.clone(),
            replaced: old.origin.clone(),
            new: new.value.to_string(),
            old: old.value.to_string(),
        });
    }
    *slot = Some(new);
}
