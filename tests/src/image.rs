//! The test guest itself: its kernel and initramfs (built by `scripts/build-guest.sh`), its
//! kernel command line, and the files a network boot serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::env::{env_nonempty, workspace_root};
use crate::{Error, Result};

/// The built guest: kernel and initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Where `scripts/build-guest.sh` keeps the guest: `VNU_GUEST_CACHE`, else /var/tmp/vnu-guest.
pub fn guest_cache() -> PathBuf {
    env_nonempty("VNU_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/vnu-guest"))
}

/// Builds the guest with `scripts/build-guest.sh` (the first call in a process; quick when the
/// cache is current) and returns it.
pub fn guest_image() -> Result<GuestImage> {
    static IMAGE: OnceLock<std::result::Result<GuestImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let cache = guest_cache();
            let script = workspace_root().join("scripts/build-guest.sh");
            let started = Instant::now();
            let out = Command::new("bash")
                .arg(&script)
                .env("VNU_GUEST_CACHE", &cache)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}):\n{}{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let took = started.elapsed();
            if took > Duration::from_secs(2) {
                eprintln!("vnu-tests: built the guest in {took:.1?}");
            }
            Ok(GuestImage {
                kernel: cache.join("vmlinuz"),
                initrd: cache.join("initrd.gz"),
            })
        })
        .clone()
        .map_err(Error::new)
}

/// The test guest's kernel command line.
pub(crate) fn kernel_cmdline(v6wait: u32) -> String {
    format!("console=ttyS0 quiet loglevel=1 panic=-1 vnu.v6wait={v6wait}")
}

/// Puts the test guest into `dir` for a network boot: `vmlinuz` and `initrd.gz` (copies of the
/// cached image: the backend serves nothing from outside its TFTP root, links included) and
/// `boot.ipxe`, an iPXE script that fetches both by TFTP from `server` and
/// boots them with the usual command line. Serve `dir` with `tftp=DIR,bootfile=boot.ipxe`.
pub fn network_boot_files(dir: &Path, server: &str, v6wait: u32) -> Result<()> {
    let image = guest_image()?;
    let io =
        |what: &str, e: std::io::Error| Error::new(format!("{what} in {}: {e}", dir.display()));
    for (name, target) in [("vmlinuz", &image.kernel), ("initrd.gz", &image.initrd)] {
        let copy = dir.join(name);
        let _ = std::fs::remove_file(&copy);
        std::fs::copy(target, &copy).map_err(|e| io(name, e))?;
    }
    let script = format!(
        "#!ipxe\nkernel tftp://{server}/vmlinuz {}\ninitrd tftp://{server}/initrd.gz\nboot\n",
        kernel_cmdline(v6wait)
    );
    std::fs::write(dir.join("boot.ipxe"), script).map_err(|e| io("boot.ipxe", e))
}
