//! QEMU command lines: the guest's network ([`Net`]), how to boot it ([`GuestOpts`]), and the
//! arguments both make.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::env_nonempty;
use crate::image::kernel_cmdline;
use crate::{Error, GuestImage, Result};

/// The MAC the test guest gets unless told otherwise (the one the slirp measurements used).
pub const GUEST_MAC: &str = "52:54:00:41:2c:49";

/// The kernel command line holds 2048 bytes; base64 scripts longer than this go through fw_cfg.
const MAX_CMDLINE_SCRIPT: usize = 1500;

/// The guest's network: which `-netdev` (always `id=n0`) the virtio-net device uses.
#[derive(Debug, Clone)]
pub enum Net {
    /// QEMU slirp: `-netdev user,id=n0[,OPTS]`.
    User(String),
    /// A vhost-user backend: shared memfd guest memory, `-chardev socket` (with `reconnect=1`
    /// if asked), `-netdev vhost-user`, and `vectors=0` on the device (QEMU 7.2 under TCG
    /// crashes when a vhost-user net device uses MSI-X).
    VhostUser { socket: PathBuf, reconnect: bool },
    /// Any other netdev: `args` must define `id=n0`.
    Raw {
        args: Vec<String>,
        shared_memory: bool,
        vectors: Option<u32>,
    },
}

impl Net {
    /// QEMU slirp with its defaults.
    pub fn slirp() -> Net {
        Net::User(String::new())
    }

    /// QEMU slirp with `-netdev user` options (e.g. `net=169.254.0.0/16`).
    pub fn slirp_with(opts: &str) -> Net {
        Net::User(opts.to_owned())
    }
}

/// How to boot one guest.
#[derive(Debug, Clone)]
pub struct GuestOpts {
    pub net: Net,
    /// Shell script run in the guest after the network checks; its output comes back as
    /// [`GuestRun::run`](crate::GuestRun::run) lines.
    pub script: Option<String>,
    pub mac: String,
    /// Seconds the guest waits for a SLAAC address (0: don't wait).
    pub v6wait: u32,
    pub timeout: Duration,
    /// A name for messages (`slirp`, `ours`, ...).
    pub name: String,
    /// Extra `-device virtio-net-pci` properties, e.g. `csum=off,guest_tso4=off`.
    pub device_opts: String,
    /// Boot from the network (QEMU's iPXE ROM, `-boot n`) rather than from `-kernel`: the
    /// kernel, initrd and command line come from the boot file the DHCP server names (see
    /// [`network_boot_files`](crate::network_boot_files)).
    pub network_boot: bool,
    /// vCPUs (`-smp`).
    pub cpus: u32,
    /// Queue pairs the vhost-user netdev asks for (`queues=N`, and `mq=on` on the device
    /// when more than one); only the ring link has more than one.
    pub queues: u16,
}

impl GuestOpts {
    pub fn new(name: &str, net: Net) -> GuestOpts {
        let timeout = env_nonempty("VNU_BOOT_TIMEOUT")
            .and_then(|s| s.parse().ok())
            .unwrap_or(180);
        GuestOpts {
            net,
            script: None,
            mac: GUEST_MAC.to_owned(),
            v6wait: 0,
            timeout: Duration::from_secs(timeout),
            name: name.to_owned(),
            device_opts: String::new(),
            network_boot: false,
            cpus: 1,
            queues: 1,
        }
    }

    /// Boots through the virtio-net device's iPXE ROM instead of `-kernel`.
    pub fn network_boot(mut self) -> Self {
        self.network_boot = true;
        self
    }

    pub fn script(mut self, script: &str) -> Self {
        self.script = Some(script.to_owned());
        self
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = mac.to_owned();
        self
    }

    /// Extra properties for the virtio-net device (offloads off, ...).
    pub fn device_opts(mut self, opts: &str) -> Self {
        self.device_opts = opts.to_owned();
        self
    }

    /// Boots with `cpus` vCPUs (TCG runs each on a host thread of its own).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Asks the vhost-user backend for `queues` queue pairs (multiqueue when more than one).
    pub fn queues(mut self, queues: u16) -> Self {
        self.queues = queues;
        self
    }

    pub fn v6wait(mut self, seconds: u32) -> Self {
        self.v6wait = seconds;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The QEMU command line (without the binary) for this guest; `dir` holds the console log
    /// and a long script. `scripts/boot-guest.sh` builds the same command line: keep them alike.
    pub fn qemu_args(&self, image: &GuestImage, dir: &Path) -> Result<Vec<String>> {
        let mut args: Vec<String> = ["-accel", "tcg", "-m", "512", "-smp"]
            .map(String::from)
            .to_vec();
        args.push(self.cpus.to_string());
        if self.queues != 1 && !matches!(self.net, Net::VhostUser { .. }) {
            return Err(Error::new(format!(
                "guest `{}`: queues={} needs the vhost-user ring link",
                self.name, self.queues
            )));
        }
        let (shared_memory, vectors) = match &self.net {
            Net::User(_) => (false, None),
            Net::VhostUser { .. } => (true, Some(0)),
            Net::Raw {
                shared_memory,
                vectors,
                ..
            } => (*shared_memory, *vectors),
        };
        if shared_memory {
            args.extend(
                [
                    "-object",
                    "memory-backend-memfd,id=mem0,size=512M,share=on",
                    "-machine",
                    "memory-backend=mem0",
                ]
                .map(String::from),
            );
        }
        let console = dir.join("console.log");
        args.extend(["-nodefaults", "-no-reboot", "-display", "none", "-serial"].map(String::from));
        args.push(format!("file:{}", console.display()));
        if self.network_boot {
            args.extend(["-boot", "n"].map(String::from));
        } else {
            args.push("-kernel".into());
            args.push(image.kernel.display().to_string());
            args.push("-initrd".into());
            args.push(image.initrd.display().to_string());
        }
        let mut append = kernel_cmdline(self.v6wait);
        if let Some(script) = &self.script {
            let encoded = base64(script.as_bytes());
            // A network-booted kernel's command line is the boot file's: fw_cfg it is.
            if encoded.len() <= MAX_CMDLINE_SCRIPT && !self.network_boot {
                append.push_str(" vnu.run=");
                append.push_str(&encoded);
            } else {
                let file = dir.join("run.b64");
                std::fs::write(&file, encoded)
                    .map_err(|e| Error::new(format!("writing {}: {e}", file.display())))?;
                args.push("-fw_cfg".into());
                args.push(format!("name=opt/vnu/run,file={}", file.display()));
            }
        }
        if !self.network_boot {
            args.push("-append".into());
            args.push(append);
        }
        match &self.net {
            Net::User(opts) => {
                args.push("-netdev".into());
                args.push(if opts.is_empty() {
                    "user,id=n0".to_owned()
                } else {
                    format!("user,id=n0,{opts}")
                });
            }
            Net::VhostUser { socket, reconnect } => {
                args.push("-chardev".into());
                args.push(format!(
                    "socket,id=c0,path={}{}",
                    socket.display(),
                    if *reconnect { ",reconnect=1" } else { "" }
                ));
                args.push("-netdev".into());
                args.push(if self.queues == 1 {
                    "vhost-user,id=n0,chardev=c0".to_owned()
                } else {
                    format!("vhost-user,id=n0,chardev=c0,queues={}", self.queues)
                });
            }
            Net::Raw { args: raw, .. } => args.extend(raw.iter().cloned()),
        }
        args.push("-device".into());
        // No option ROM (it only slows the boot) unless the guest boots through it.
        let mut device = format!("virtio-net-pci,netdev=n0,mac={}", self.mac);
        if !self.network_boot {
            device.push_str(",romfile=");
        }
        if self.queues > 1 {
            device.push_str(",mq=on");
        }
        if let Some(v) = vectors {
            device.push_str(&format!(",vectors={v}"));
        }
        if !self.device_opts.is_empty() {
            device.push(',');
            device.push_str(&self.device_opts);
        }
        args.push(device);
        Ok(args)
    }
}

/// Standard base64 with padding (for `vnu.run=`).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;

    fn test_image() -> GuestImage {
        GuestImage {
            kernel: "/k".into(),
            initrd: "/i".into(),
        }
    }

    fn ring(reconnect: bool) -> Net {
        Net::VhostUser {
            socket: "/tmp/s".into(),
            reconnect,
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn vhost_user_guests_get_shared_memory_and_no_msix() {
        let image = test_image();
        let args = GuestOpts::new("t", ring(true))
            .script("echo hi")
            .qemu_args(&image, Path::new("/tmp"))
            .unwrap()
            .join(" ");
        assert!(args.contains("-accel tcg"), "{args}");
        assert!(
            args.contains("memory-backend-memfd,id=mem0,size=512M,share=on"),
            "{args}"
        );
        assert!(args.contains("-machine memory-backend=mem0"), "{args}");
        assert!(
            args.contains("socket,id=c0,path=/tmp/s,reconnect=1"),
            "{args}"
        );
        assert!(args.contains("vhost-user,id=n0,chardev=c0"), "{args}");
        assert!(args.contains(",romfile=,vectors=0"), "{args}");
        assert!(args.contains("-smp 1 "), "{args}");
        assert!(!args.contains("queues="), "{args}");
        assert!(!args.contains("mq=on"), "{args}");
        assert!(
            args.contains(&format!("vnu.run={}", base64(b"echo hi"))),
            "{args}"
        );

        let slirp = GuestOpts::new("t", Net::slirp_with("net=169.254.0.0/16"))
            .qemu_args(&image, Path::new("/tmp"))
            .unwrap()
            .join(" ");
        assert!(
            slirp.contains("-netdev user,id=n0,net=169.254.0.0/16"),
            "{slirp}"
        );
        assert!(!slirp.contains("vectors"), "{slirp}");
        assert!(!slirp.contains("memory-backend"), "{slirp}");
    }

    #[test]
    fn multiqueue_guests_ask_for_queue_pairs_on_the_ring_link_only() {
        let image = test_image();
        let args = GuestOpts::new("t", ring(false))
            .cpus(2)
            .queues(2)
            .qemu_args(&image, Path::new("/tmp"))
            .unwrap()
            .join(" ");
        assert!(args.contains("-smp 2 "), "{args}");
        assert!(
            args.contains("-netdev vhost-user,id=n0,chardev=c0,queues=2 "),
            "{args}"
        );
        assert!(args.contains(",mq=on,vectors=0"), "{args}");
        let slirp = GuestOpts::new("t", Net::slirp())
            .queues(2)
            .qemu_args(&image, Path::new("/tmp"));
        assert!(slirp.is_err(), "{slirp:?}");
    }

    #[test]
    fn long_scripts_go_through_fw_cfg() {
        let dir = TempDir::new("unit").unwrap();
        let image = test_image();
        let script = "echo 0123456789\n".repeat(200);
        let args = GuestOpts::new("t", Net::slirp())
            .script(&script)
            .qemu_args(&image, dir.path())
            .unwrap()
            .join(" ");
        assert!(!args.contains("vnu.run="), "{args}");
        assert!(args.contains("name=opt/vnu/run,file="), "{args}");
        let stored = std::fs::read_to_string(dir.join("run.b64")).unwrap();
        assert_eq!(stored, base64(script.as_bytes()));
    }
}
