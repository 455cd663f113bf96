//! The front ends, and how their inputs combine.
//!
//! The binary parses its command line and hands the result over as [`Inputs`] (plain data:
//! the policy layer has no command-line parser), then calls [`Inputs::build`]. Three front
//! ends can describe the guest's network:
//!
//! * `--libvirt-xml FILE` (a domain or a bare `<interface>`; `-` reads standard input),
//! * `--slirp OPTS` (QEMU `-netdev user` options),
//! * the passt-style options (`--address`, `--netmask`, `--gateway`, `--mac-addr`, `--dns`,
//!   `--search`, `--mtu`, `--hostname`, `-t`, `-u`, `--no-map-gw`), and passt's switches `-4`, `-6`,
//!   `--no-dhcp`, `--no-dhcpv6`, `--no-ndp`, `--no-ra`, `--no-tcp`, `--no-udp`, `--no-icmp`.
//!
//! Precedence: `--libvirt-xml` and `--slirp` each describe a whole interface, so they exclude
//! each other. The passt-style options may be added to either and win, setting by setting;
//! every override of a different value is reported as a warning (so a vhostuser domain whose
//! libvirt refuses `<ip>` can take its address from `--address`). `--slirp` keeps QEMU's
//! meaning and so is refused with `--profile passt`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::profile::{self, Profile, Resolved};
use crate::request::Request;

mod libvirt;
mod passt;
mod ports;
pub(crate) mod slirp;

pub use passt::PasstOptions;

/// Everything the user said about the guest's network, as typed.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `--profile`.
    pub profile: Profile,
    /// `--libvirt-xml FILE` (`-`: standard input).
    pub libvirt_xml: Option<PathBuf>,
    /// `--interface SEL`: which `<interface>` of the XML.
    pub interface: Option<String>,
    /// Each `--slirp OPTS`; they read as one option string joined by commas.
    pub slirp: Vec<String>,
    /// The passt-style options, laid over either of the above.
    pub passt: PasstOptions,
}

/// What the front ends made of the inputs, before a profile gives it meaning.
struct FrontEnd {
    req: Request,
    /// The guest's own MAC from `<mac>`.
    guest_mac: Option<crate::MacAddr>,
    /// Where the configuration came from, one line per front end, for `--explain`.
    inputs: Vec<String>,
}

impl Inputs {
    /// Read the configuration and resolve it into the plan.
    pub fn build(&self) -> Result<Resolved, ConfigError> {
        let xml = match &self.libvirt_xml {
            None => None,
            Some(path) => Some(read_file(path)?),
        };
        self.build_with_xml(xml.as_deref())
    }

    /// [`build`](Self::build) with the text of `--libvirt-xml` already at hand.
    pub fn build_with_xml(&self, xml: Option<&str>) -> Result<Resolved, ConfigError> {
        self.check_combination(xml)?;
        let FrontEnd {
            mut req,
            guest_mac,
            mut inputs,
        } = self.read_front_end(xml)?;
        let passt = self.passt.summary();
        if !passt.is_empty() {
            inputs.push(passt);
        }
        if inputs.is_empty() {
            inputs.push("no configuration: QEMU slirp's defaults".into());
        }
        passt::apply(&self.passt, &mut req)?;
        let (plan, warnings) = profile::resolve(self.profile, req)?;
        Ok(Resolved {
            plan,
            warnings,
            guest_mac,
            profile: self.profile,
            inputs,
        })
    }

    /// Refuse front ends that cannot be combined, before reading any of them.
    fn check_combination(&self, xml: Option<&str>) -> Result<(), ConfigError> {
        if !self.slirp.is_empty() && (xml.is_some() || self.libvirt_xml.is_some()) {
            return Err(ConfigError::Conflict(
                "--slirp and --libvirt-xml both describe the whole interface: give one \
                 (passt-style options may be added to either)"
                    .into(),
            ));
        }
        if !self.slirp.is_empty() && self.profile == Profile::Passt {
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
        Ok(())
    }

    /// The request of the one whole-interface front end given (libvirt XML or `--slirp`), or
    /// an empty one.
    fn read_front_end(&self, xml: Option<&str>) -> Result<FrontEnd, ConfigError> {
        if let Some(text) = xml {
            let origin = match &self.libvirt_xml {
                Some(p) if p.as_os_str() == "-" => "<stdin>".to_string(),
                Some(p) => p.display().to_string(),
                None => "<libvirt-xml>".to_string(),
            };
            let iface = libvirt::parse(text, &origin, self.interface.as_deref())?;
            return Ok(FrontEnd {
                inputs: vec![iface.describe(&origin)],
                guest_mac: iface.mac,
                req: iface.request,
            });
        }
        if !self.slirp.is_empty() {
            let slirp = self.slirp.join(",");
            return Ok(FrontEnd {
                req: slirp::parse(&slirp)?,
                guest_mac: None,
                inputs: vec![format!("--slirp {slirp}")],
            });
        }
        Ok(FrontEnd {
            req: Request::default(),
            guest_mac: None,
            inputs: Vec::new(),
        })
    }
}

/// The text of `--libvirt-xml PATH` (`-`: standard input).
fn read_file(path: &Path) -> Result<String, ConfigError> {
    let mut text = String::new();
    let res = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    res.map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text)
}
