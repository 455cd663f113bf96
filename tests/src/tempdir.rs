//! Temp dirs for backends and guests (sockets, consoles, logs), removed on drop unless
//! `VNU_KEEP_TMP=1`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

/// A directory under the system temp dir, removed on drop (kept with `VNU_KEEP_TMP=1`).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Result<TempDir> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Short: the vhost-user socket inside must fit in sockaddr_un (108 bytes).
        let path = std::env::temp_dir().join(format!("vnu-{label}.{}.{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::new(format!("creating {}: {e}", path.display())))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var("VNU_KEEP_TMP").as_deref() == Ok("1") {
            eprintln!("vnu-tests: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
