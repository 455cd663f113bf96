//! The policy options of the daemon's command line, and how they combine.
//!
//! The binary flattens [`PolicyArgs`] into its own parser and calls [`PolicyArgs::build`].
//! Three front ends can describe the guest's network:
//!
//! * `--libvirt-xml FILE` (a domain or a bare `<interface>`; `-` reads standard input),
//! * `--slirp OPTS` (QEMU `-netdev user` options),
//! * the passt-style options (`--address`, `--netmask`, `--gateway`, `--mac-addr`, `--dns`,
//!   `--search`, `--mtu`, `-t`, `-u`, `--no-map-gw`), and passt's switches `-4`, `-6`,
//!   `--no-dhcp`, `--no-dhcpv6`, `--no-ndp`, `--no-ra`, `--no-tcp`, `--no-udp`, `--no-icmp`.
//!
//! Precedence: `--libvirt-xml` and `--slirp` each describe a whole interface, so they exclude
//! each other. The passt-style options may be added to either and win, setting by setting;
//! every override of a different value is reported as a warning (so a vhostuser domain whose
//! libvirt refuses `<ip>` can take its address from `--address`). `--slirp` keeps QEMU's
//! meaning and so is refused with `--profile passt`.

use std::io::Read;
use std::path::PathBuf;

use crate::error::ConfigError;
use crate::libvirt;
use crate::passt_opts;
use crate::profile::{self, Profile, Resolved};
use crate::request::Request;
use crate::slirp_opts;

/// Output format of `--explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExplainFormat {
    #[default]
    Text,
    Json,
}

/// The guest-network options. Flatten into the binary's parser with `#[command(flatten)]`.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Guest network")]
pub struct PolicyArgs {
    /// How addresses become the guest's view: slirp (QEMU's derivation; default) or passt
    /// (the address as given)
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub profile: Option<Profile>,

    /// libvirt domain XML or <interface> element to take the guest's network from ('-': stdin)
    #[arg(long, value_name = "FILE", conflicts_with = "slirp")]
    pub libvirt_xml: Option<PathBuf>,

    /// Which <interface> of the XML: alias name, MAC address or index (0-based)
    #[arg(long, value_name = "SEL", requires = "libvirt_xml")]
    pub interface: Option<String>,

    /// QEMU -netdev user options (net=, host=, dhcpstart=, dns=, hostfwd=, guestfwd=, smb=, ...);
    /// repeatable
    #[arg(long, value_name = "OPTS")]
    pub slirp: Vec<String>,

    /// IPv4 or IPv6 address, optionally ADDR/PREFIX (once per family)
    #[arg(long, value_name = "ADDR[/LEN]")]
    pub address: Vec<String>,

    /// IPv4 netmask: a prefix length or a dotted mask
    #[arg(long, value_name = "MASK")]
    pub netmask: Option<String>,

    /// Gateway address the guest is given (once per family)
    #[arg(long, value_name = "ADDR")]
    pub gateway: Vec<String>,

    /// The gateway's MAC address as the guest sees it (not the guest's own)
    #[arg(long = "mac-addr", value_name = "MAC")]
    pub mac_addr: Option<String>,

    /// DNS address offered to the guest and relayed to the host's resolver (once per family)
    #[arg(long, value_name = "ADDR")]
    pub dns: Vec<String>,

    /// DNS search domains (space-separated or repeated; 'none' for none)
    #[arg(long, value_name = "LIST")]
    pub search: Vec<String>,

    /// Link MTU, also sent in DHCP (68-65520; 0: do not advertise)
    #[arg(long, value_name = "MTU")]
    pub mtu: Option<String>,

    /// Forward host TCP ports to the guest, passt syntax: 8080, 1000-1010:2000-2010,
    /// 127.0.0.1/22, ~25, all
    #[arg(short = 't', long = "tcp-ports", value_name = "SPEC")]
    pub tcp_ports: Vec<String>,

    /// Forward host UDP ports to the guest (syntax as -t)
    #[arg(short = 'u', long = "udp-ports", value_name = "SPEC")]
    pub udp_ports: Vec<String>,

    /// Do not map the gateway address to the host's loopback
    #[arg(long = "no-map-gw")]
    pub no_map_gw: bool,

    /// IPv4 only: the guest gets no IPv6 (as --slirp ipv6=off)
    #[arg(short = '4', long = "ipv4-only")]
    pub ipv4_only: bool,

    /// IPv6 only: the guest gets no IPv4 (as --slirp ipv4=off)
    #[arg(short = '6', long = "ipv6-only")]
    pub ipv6_only: bool,

    /// Do not answer DHCP
    #[arg(long = "no-dhcp")]
    pub no_dhcp: bool,

    /// Do not answer DHCPv6
    #[arg(long = "no-dhcpv6")]
    pub no_dhcpv6: bool,

    /// Ignore NDP: no neighbour or router advertisements
    #[arg(long = "no-ndp")]
    pub no_ndp: bool,

    /// Send no router advertisements (neighbour advertisements still answered)
    #[arg(long = "no-ra")]
    pub no_ra: bool,

    /// Drop the guest's TCP (no TCP forwards then)
    #[arg(long = "no-tcp")]
    pub no_tcp: bool,

    /// Drop the guest's UDP, DNS relay included (DHCP, DHCPv6, TFTP still answer)
    #[arg(long = "no-udp")]
    pub no_udp: bool,

    /// Drop echo requests (ICMP and ICMPv6), to the gateway too
    #[arg(long = "no-icmp")]
    pub no_icmp: bool,

    /// Print what the guest will see, then exit
    #[arg(long)]
    pub explain: bool,

    /// Format of --explain
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t,
        requires = "explain"
    )]
    pub format: ExplainFormat,
}

impl PolicyArgs {
    /// Read the configuration and resolve it into the plan.
    pub fn build(&self) -> Result<Resolved, ConfigError> {
        let xml = match &self.libvirt_xml {
            None => None,
            Some(path) => {
                let mut text = String::new();
                let res = if path.as_os_str() == "-" {
                    std::io::stdin().read_to_string(&mut text)
                } else {
                    std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
                };
                res.map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(text)
            }
        };
        self.build_with_xml(xml.as_deref())
    }

    /// [`build`](Self::build) with the text of `--libvirt-xml` already at hand.
    pub fn build_with_xml(&self, xml: Option<&str>) -> Result<Resolved, ConfigError> {
        let profile = self.profile.unwrap_or_default();
        let slirp = self.slirp.join(",");
        if !self.slirp.is_empty() && (xml.is_some() || self.libvirt_xml.is_some()) {
            return Err(ConfigError::Conflict(
                "--slirp and --libvirt-xml both describe the whole interface: give one \
                 (passt-style options may be added to either)"
                    .into(),
            ));
        }
        if !self.slirp.is_empty() && profile == Profile::Passt {
            return Err(ConfigError::Conflict(
                "--slirp keeps QEMU's meaning (--profile slirp); with --profile passt give \
                 --address/--netmask/--gateway instead"
                    .into(),
            ));
        }
        if self.interface.is_some() && xml.is_none() {
            return Err(ConfigError::Conflict(
                "--interface picks an <interface> of --libvirt-xml, which is not given".into(),
            ));
        }

        let mut inputs = Vec::new();
        let mut guest_mac = None;
        let mut req = Request::default();
        if let Some(text) = xml {
            let origin = match &self.libvirt_xml {
                Some(p) if p.as_os_str() == "-" => "<stdin>".to_string(),
                Some(p) => p.display().to_string(),
                None => "<libvirt-xml>".to_string(),
            };
            let iface = libvirt::parse(text, &origin, self.interface.as_deref())?;
            let mut d = format!(
                "--libvirt-xml {origin}: <interface type='{}'> #{}",
                iface.kind, iface.index
            );
            if let Some(a) = &iface.alias {
                d.push_str(&format!(", alias {a}"));
            }
            if let Some(b) = &iface.backend {
                d.push_str(&format!(", backend {b}"));
            }
            if let Some(m) = &iface.model {
                d.push_str(&format!(", model {m}"));
            }
            if let Some(s) = &iface.source {
                d.push_str(&format!(", source {s}"));
            }
            inputs.push(d);
            guest_mac = iface.mac;
            req = iface.request;
        } else if !self.slirp.is_empty() {
            req = slirp_opts::parse(&slirp)?;
            inputs.push(format!("--slirp {slirp}"));
        }
        let passt = self.passt_summary();
        if !passt.is_empty() {
            inputs.push(passt);
        }
        if inputs.is_empty() {
            inputs.push("no configuration: QEMU slirp's defaults".into());
        }
        passt_opts::apply(self, &mut req)?;
        let (plan, warnings) = profile::resolve(profile, req)?;
        Ok(Resolved {
            plan,
            warnings,
            guest_mac,
            profile,
            inputs,
        })
    }

    /// The `--explain` text in the chosen format, or `None` without `--explain`.
    pub fn explain_output(&self, resolved: &Resolved) -> Option<String> {
        self.explain.then(|| match self.format {
            ExplainFormat::Text => crate::explain::render_text(resolved),
            ExplainFormat::Json => crate::explain::render_json(resolved),
        })
    }

    /// The passt-style options given, as typed.
    fn passt_summary(&self) -> String {
        let mut v = Vec::new();
        let mut push = |opt: &str, vals: &[String]| {
            for x in vals {
                v.push(format!("{opt} {x}"));
            }
        };
        push("--address", &self.address);
        push("--netmask", self.netmask.as_slice());
        push("--gateway", &self.gateway);
        push("--mac-addr", self.mac_addr.as_slice());
        push("--dns", &self.dns);
        push("--search", &self.search);
        push("--mtu", self.mtu.as_slice());
        push("-t", &self.tcp_ports);
        push("-u", &self.udp_ports);
        for (given, opt) in [
            (self.no_map_gw, "--no-map-gw"),
            (self.ipv4_only, passt_opts::IPV4_ONLY),
            (self.ipv6_only, passt_opts::IPV6_ONLY),
            (self.no_dhcp, "--no-dhcp"),
            (self.no_dhcpv6, "--no-dhcpv6"),
            (self.no_ndp, "--no-ndp"),
            (self.no_ra, "--no-ra"),
            (self.no_tcp, "--no-tcp"),
            (self.no_udp, "--no-udp"),
            (self.no_icmp, "--no-icmp"),
        ] {
            if given {
                v.push(opt.into());
            }
        }
        v.join(" ")
    }
}
