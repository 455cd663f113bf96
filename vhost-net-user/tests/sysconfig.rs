//! The system configuration file as the built program reads it: named by
//! `VHOST_NET_USER_CONFIG` (as in passt mode, which has no option for it) or `--config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A file of its own under the system's temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    /// Tests run in parallel: each file has a name of its own.
    fn new(name: &str, text: &str) -> TempFile {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vnu-sysconfig-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The program run with `argv`, the environment naming `config` (or an empty file, so that a
/// file in /etc on the test machine cannot change the outcome).
fn run(config: Option<&Path>, argv: &[&str]) -> Output {
    let empty = TempFile::new("empty.toml", "");
    Command::new(env!("CARGO_BIN_EXE_vhost-net-user"))
        .env("VHOST_NET_USER_CONFIG", config.unwrap_or(&empty.0))
        .args(argv)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// libguestfs's address: slirp's profile reads it as the network, passt's as the guest's own.
const EXPLAIN: &[&str] = &["--address", "169.254.2.15", "--netmask", "16", "--explain"];

#[test]
fn the_files_profile_changes_what_the_guest_sees_unless_the_command_line_says() {
    let passt = TempFile::new("passt.toml", "# as passt\nprofile = \"passt\"\n");
    let slirp_view = stdout(&run(None, EXPLAIN));
    let passt_view = stdout(&run(None, &[EXPLAIN, &["--profile", "passt"]].concat()));
    assert_ne!(slirp_view, passt_view, "the profiles differ here");
    assert_eq!(stdout(&run(Some(&passt.0), EXPLAIN)), passt_view);
    // The command line wins over the file.
    assert_eq!(
        stdout(&run(
            Some(&passt.0),
            &[EXPLAIN, &["--profile", "slirp"]].concat()
        )),
        slirp_view
    );
    // --config wins over the environment.
    let slirp = TempFile::new("slirp.toml", "profile = \"slirp\"\n");
    let config = slirp.0.to_str().unwrap();
    assert_eq!(
        stdout(&run(
            Some(&passt.0),
            &[EXPLAIN, &["--config", config]].concat()
        )),
        slirp_view
    );
}

#[test]
fn a_bad_key_is_one_line_naming_file_line_and_key_and_exit_2() {
    let bad = TempFile::new("bad.toml", "profile = \"passt\"\nprofle = \"slirp\"\n");
    let out = run(Some(&bad.0), EXPLAIN);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let want = format!(
        "vhost-net-user: {}:2: key \"profle\": unknown key (known: ",
        bad.0.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let bad = TempFile::new("value.toml", "\n\nprofile = \"foo\"\n");
    let out = run(Some(&bad.0), EXPLAIN);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "vhost-net-user: {}:3: key \"profile\": expected \"slirp\" or \"passt\", found \"foo\"\n",
            bad.0.display()
        )
    );
}

#[test]
fn a_missing_named_file_is_an_error() {
    let missing =
        std::env::temp_dir().join(format!("vnu-sysconfig-{}-missing", std::process::id()));
    let out = run(Some(&missing), EXPLAIN);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "vhost-net-user: {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}
