//! slirp's `smb=DIR`: Samba's smbd shares DIR with the guest as `\\SERVER\qemu`.
//!
//! As QEMU's `slirp_smb` does, the share gets a private directory of its own (smbd's state,
//! locks and log) holding an `smb.conf` that exports DIR read-write to guests, forcing every
//! access to the backend's own user (for a backend started as root, the unprivileged user it
//! becomes, who then owns the directory: see [`SmbServer::create`]). Each guest connection to port 139 or 445 of the share's
//! address then starts `smbd -l DIR -s DIR/smb.conf` on that connection, a guest forward like
//! any other (see [`crate::guestfwd`]): smbd serves the connection on its standard input and
//! exits when the guest closes it. Nothing listens on the host.
//!
//! The private directory is the caller's to remove at exit ([`SmbServer::dir`]).

use std::fs::DirBuilder;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use netplan::{GuestForward, SmbShare};

use crate::sys;

/// The smbd QEMU runs (its `CONFIG_SMBD_COMMAND` on Debian): Samba's, from the `samba` package.
pub const SMBD: &str = "/usr/sbin/smbd";

/// Why the share could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SmbError {
    #[error("smb=: could not find '{}', please install it (Debian: apt-get install samba)", smbd.display())]
    NoSmbd { smbd: PathBuf },
    #[error("smb={}: error accessing shared directory", export.display())]
    Export { export: PathBuf, source: io::Error },
    #[error("smb=: failed to retrieve the name of user {uid}")]
    User { uid: u32, source: io::Error },
    #[error("smb=: could not create samba server dir in {}", parent.display())]
    Dir { parent: PathBuf, source: io::Error },
    #[error("smb=: could not create samba server configuration file '{}'", path.display())]
    Config { path: PathBuf, source: io::Error },
}

/// A prepared share: smbd's private directory and the guest forwards that start it.
#[derive(Debug)]
pub struct SmbServer {
    dir: PathBuf,
    forwards: Vec<GuestForward>,
}

impl SmbServer {
    /// Prepares `share` for [`SMBD`] in the system's temporary directory (`TMPDIR`, as QEMU),
    /// for smbd to run as `owner` (user and group IDs; `None`: this process's effective user).
    pub fn create(share: &SmbShare, owner: Option<(u32, u32)>) -> Result<SmbServer, SmbError> {
        SmbServer::create_with(share, Path::new(SMBD), &std::env::temp_dir(), owner)
    }

    /// Prepares `share` for `smbd`, with the private directory made in `parent`. With an
    /// `owner`, the directory and its smb.conf are theirs, and so is `force user=`: a backend
    /// started as root drops to that user before smbd runs, and smbd writes its state there.
    pub fn create_with(
        share: &SmbShare,
        smbd: &Path,
        parent: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<SmbServer, SmbError> {
        if !smbd.exists() {
            return Err(SmbError::NoSmbd {
                smbd: smbd.to_owned(),
            });
        }
        sys::check_access(&share.export, libc::R_OK | libc::X_OK).map_err(|source| {
            SmbError::Export {
                export: share.export.clone(),
                source,
            }
        })?;
        let uid = owner.map_or_else(sys::effective_uid, |(uid, _)| uid);
        let user = sys::user_name(uid).map_err(|source| SmbError::User { uid, source })?;
        let dir = make_private_dir(parent).map_err(|source| SmbError::Dir {
            parent: parent.to_owned(),
            source,
        })?;
        let conf = dir.join("smb.conf");
        if let Err(source) = std::fs::write(&conf, config(&dir, &share.export, &user)) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(SmbError::Config { path: conf, source });
        }
        if let Some((uid, gid)) = owner {
            let chown = |path: &Path| std::os::unix::fs::lchown(path, Some(uid), Some(gid));
            if let Err(source) = chown(&dir).and_then(|()| chown(&conf)) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(SmbError::Dir {
                    parent: parent.to_owned(),
                    source,
                });
            }
        }
        let argv: Vec<String> = [
            smbd,
            Path::new("-l"),
            dir.as_path(),
            Path::new("-s"),
            conf.as_path(),
        ]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
        let forwards = SmbShare::PORTS
            .iter()
            .map(|&port| GuestForward {
                addr: share.addr,
                port,
                command: argv.join(" "),
                argv: argv.clone(),
            })
            .collect();
        Ok(SmbServer { dir, forwards })
    }

    /// smbd's private directory, with `smb.conf` and what smbd keeps there.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The guest forwards that start smbd: one per port of [`SmbShare::PORTS`], at the share's
    /// address.
    pub fn guest_forwards(&self) -> &[GuestForward] {
        &self.forwards
    }
}

/// A new directory only we can enter, `vnu-smb.XXXXXX` under `parent` (as GLib's
/// `g_dir_make_tmp`): created exclusively, so an existing name or link is never reused.
fn make_private_dir(parent: &Path) -> io::Result<PathBuf> {
    let random = RandomState::new();
    for attempt in 0u32..100 {
        let suffix = random.hash_one((std::process::id(), attempt)) & 0xff_ffff_ffff;
        let dir = parent.join(format!("vnu-smb.{suffix:010x}"));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no unused name after 100 attempts",
    ))
}

/// QEMU 7.2's smb.conf, line for line: smbd keeps everything in `dir`, listens nowhere of its
/// own, and lets guests (anyone, as "Bad User" maps to guest) read and write `export` as `user`.
fn config(dir: &Path, export: &Path, user: &str) -> String {
    let d = dir.display();
    format!(
        "[global]\n\
         private dir={d}\n\
         interfaces=127.0.0.1\n\
         bind interfaces only=yes\n\
         pid directory={d}\n\
         lock directory={d}\n\
         state directory={d}\n\
         cache directory={d}\n\
         ncalrpc dir={d}/ncalrpc\n\
         log file={d}/log.smbd\n\
         smb passwd file={d}/smbpasswd\n\
         security = user\n\
         map to guest = Bad User\n\
         load printers = no\n\
         printing = bsd\n\
         disable spoolss = yes\n\
         usershare max shares = 0\n\
         [qemu]\n\
         path={}\n\
         read only=no\n\
         guest ok=yes\n\
         force user={user}\n",
        export.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("vnu-smb-test-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("export")).unwrap();
            Scratch(dir)
        }

        fn share(&self) -> SmbShare {
            SmbShare {
                addr: Ipv4Addr::new(10, 0, 2, 4),
                export: self.0.join("export"),
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Any existing file will do for smbd: these tests do not run it.
    fn fake_smbd() -> &'static Path {
        Path::new("/bin/sh")
    }

    #[test]
    fn the_share_becomes_smbd_on_ports_139_and_445_with_a_private_config() {
        let scratch = Scratch::new("create");
        let server =
            SmbServer::create_with(&scratch.share(), fake_smbd(), &scratch.0, None).unwrap();
        let dir = server.dir().to_owned();
        assert!(dir.starts_with(&scratch.0));
        assert!(
            dir.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("vnu-smb.")
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "only we may enter smbd's directory");

        let conf = dir.join("smb.conf");
        let forwards = server.guest_forwards();
        assert_eq!(forwards.len(), 2);
        for (fwd, port) in forwards.iter().zip([139, 445]) {
            assert_eq!(fwd.addr, Ipv4Addr::new(10, 0, 2, 4));
            assert_eq!(fwd.port, port);
            let want = [
                "/bin/sh",
                "-l",
                dir.to_str().unwrap(),
                "-s",
                conf.to_str().unwrap(),
            ];
            assert_eq!(fwd.argv, want);
            assert_eq!(fwd.command, want.join(" "));
        }

        let text = std::fs::read_to_string(&conf).unwrap();
        let d = dir.display();
        let user = sys::user_name(sys::effective_uid()).unwrap();
        for line in [
            format!("private dir={d}"),
            format!("lock directory={d}"),
            format!("log file={d}/log.smbd"),
            "interfaces=127.0.0.1".to_owned(),
            "bind interfaces only=yes".to_owned(),
            "map to guest = Bad User".to_owned(),
            "[qemu]".to_owned(),
            format!("path={}", scratch.0.join("export").display()),
            "read only=no".to_owned(),
            "guest ok=yes".to_owned(),
            format!("force user={user}"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert_eq!(text.lines().count(), 22, "QEMU's 22 lines:\n{text}");
    }

    /// A backend started as root drops to its `--runas` user before smbd runs: the directory
    /// and smb.conf are that user's, and so is `force user=`. (Needs root to hand files over.)
    #[test]
    fn an_owner_gets_the_directory_and_is_the_forced_user() {
        use std::os::unix::fs::MetadataExt;
        if sys::effective_uid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let scratch = Scratch::new("owner");
        let (uid, gid) = (65534, 65533);
        let server =
            SmbServer::create_with(&scratch.share(), fake_smbd(), &scratch.0, Some((uid, gid)))
                .unwrap();
        let conf = server.dir().join("smb.conf");
        for path in [server.dir(), conf.as_path()] {
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", path.display());
        }
        let user = sys::user_name(uid).unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(
            text.lines().any(|l| l == format!("force user={user}")),
            "{text}"
        );
    }

    #[test]
    fn each_server_gets_a_directory_of_its_own() {
        let scratch = Scratch::new("two");
        let a = SmbServer::create_with(&scratch.share(), fake_smbd(), &scratch.0, None).unwrap();
        let b = SmbServer::create_with(&scratch.share(), fake_smbd(), &scratch.0, None).unwrap();
        assert_ne!(a.dir(), b.dir());
    }

    #[test]
    fn a_missing_smbd_or_export_is_reported_as_qemu_does() {
        let scratch = Scratch::new("missing");
        let err = SmbServer::create_with(
            &scratch.share(),
            Path::new("/nonexistent/smbd"),
            &scratch.0,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "smb=: could not find '/nonexistent/smbd', please install it (Debian: apt-get install samba)"
        );
        let mut share = scratch.share();
        share.export = scratch.0.join("no-such-dir");
        let err = SmbServer::create_with(&share, fake_smbd(), &scratch.0, None).unwrap_err();
        assert!(
            matches!(&err, SmbError::Export { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        // Nothing was left behind by the failures.
        let entries: Vec<_> = std::fs::read_dir(&scratch.0).unwrap().collect();
        assert_eq!(entries.len(), 1, "only the export directory");
    }
}
