//! Where things are: the workspace, Cargo's target directory, the backend and QEMU binaries,
//! programs on `PATH`, and the `VNU_*` variables that override them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{Error, Result};

pub(crate) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The backend binary: `VNU_BIN`, else `target/release/vhost-net-user`, else
/// `target/debug/vhost-net-user`.
pub fn backend_bin() -> Result<PathBuf> {
    static ANNOUNCED: OnceLock<()> = OnceLock::new();
    let path = if let Some(bin) = env_nonempty("VNU_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            return Err(Error::new(format!(
                "VNU_BIN={} is not a file",
                bin.display()
            )));
        }
        bin
    } else {
        let target = target_dir();
        let candidates = [
            target.join("release/vhost-net-user"),
            target.join("debug/vhost-net-user"),
        ];
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => p.clone(),
            None => {
                return Err(Error::new(format!(
                    "no backend binary at {} or {}: run `cargo build --release -p vhost-net-user` \
                     (or set VNU_BIN)",
                    candidates[0].display(),
                    candidates[1].display()
                )));
            }
        }
    };
    ANNOUNCED.get_or_init(|| eprintln!("vnu-tests: backend binary {}", path.display()));
    Ok(path)
}

/// The QEMU binary: `VNU_QEMU`, else `qemu-system-x86_64`.
pub fn qemu_bin() -> String {
    env_nonempty("VNU_QEMU").unwrap_or_else(|| "qemu-system-x86_64".to_owned())
}

/// Finds `name` (or a path) as an executable, like `command -v`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}
