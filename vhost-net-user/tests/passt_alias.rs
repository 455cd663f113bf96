//! scripts/passt-alias.sh: installing as `passt` into a PREFIX and uninstalling, and leaving
//! alone a `passt` that is not ours.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A PREFIX of its own under the system's temporary directory, removed on drop.
struct Prefix(PathBuf);

impl Prefix {
    fn new(name: &str) -> Prefix {
        let dir =
            std::env::temp_dir().join(format!("vnu-passt-alias-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Prefix(dir)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.0.join("bin").join(name)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The program the tests install: this build of vhost-net-user.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vhost-net-user"))
}

fn alias(action: &str, prefix: &Prefix) -> Output {
    script(action, prefix)
        // Whether or not the Debian package is installed on this machine.
        .env("VNU_BINARY", binary())
        .output()
        .unwrap()
}

fn script(action: &str, prefix: &Prefix) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/passt-alias.sh");
    let mut command = Command::new("bash");
    command.arg(script).arg(action).arg(&prefix.0);
    command
}

fn assert_status(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn install_then_uninstall_leaves_the_prefix_as_it_was() {
    let prefix = Prefix::new("roundtrip");
    std::fs::create_dir_all(prefix.0.join("bin")).unwrap();
    std::fs::write(prefix.bin("other"), b"someone else's").unwrap();

    assert_status(&alias("install", &prefix), 0);
    let link = prefix.bin("passt");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "{} is a link",
        link.display()
    );
    let resolved = std::fs::canonicalize(&link).unwrap();
    assert_eq!(
        resolved,
        std::fs::canonicalize(prefix.bin("vhost-net-user")).unwrap()
    );
    assert!(
        std::fs::read(&resolved).unwrap() == std::fs::read(binary()).unwrap(),
        "the link resolves to a copy of the program"
    );

    // Again: still ours, so replaced, not refused.
    assert_status(&alias("install", &prefix), 0);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    assert_status(&alias("uninstall", &prefix), 0);
    let mut left: Vec<String> = std::fs::read_dir(prefix.0.join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["other"],
        "the link and the copy are gone, nothing else"
    );
    assert_eq!(
        std::fs::read(prefix.bin("other")).unwrap(),
        b"someone else's"
    );

    // Nothing left to remove is not an error.
    assert_status(&alias("uninstall", &prefix), 0);
}

#[test]
fn a_foreign_passt_is_refused_and_left_alone() {
    let prefix = Prefix::new("foreign");
    std::fs::create_dir_all(prefix.0.join("bin")).unwrap();
    let passt = prefix.bin("passt");

    std::fs::write(&passt, b"the real passt").unwrap();
    assert_status(&alias("install", &prefix), 1);
    assert_eq!(std::fs::read(&passt).unwrap(), b"the real passt");
    assert!(
        std::fs::symlink_metadata(prefix.bin("vhost-net-user")).is_err(),
        "nothing installed beside it"
    );
    assert_status(&alias("uninstall", &prefix), 1);
    assert_eq!(std::fs::read(&passt).unwrap(), b"the real passt");

    // A link, but to another program (e.g. Debian's passt).
    std::fs::remove_file(&passt).unwrap();
    std::os::unix::fs::symlink("/usr/bin/passt", &passt).unwrap();
    assert_status(&alias("install", &prefix), 1);
    assert_status(&alias("uninstall", &prefix), 1);
    assert_eq!(
        std::fs::read_link(&passt).unwrap(),
        Path::new("/usr/bin/passt")
    );
}

/// Installed from a build, then again once the package is there: the link moves to the
/// package's program and the earlier copy goes; uninstalling leaves the package's alone.
#[test]
fn a_later_install_with_the_package_replaces_the_copy() {
    let prefix = Prefix::new("package");
    assert_status(&alias("install", &prefix), 0);
    assert!(std::fs::symlink_metadata(prefix.bin("vhost-net-user")).is_ok());

    let packaged = prefix.0.join("usr-bin").join("vhost-net-user");
    std::fs::create_dir_all(packaged.parent().unwrap()).unwrap();
    std::fs::copy(binary(), &packaged).unwrap();
    let with_package = |action| {
        script(action, &prefix)
            .env_remove("VNU_BINARY")
            .env("VNU_PACKAGED", &packaged)
            .output()
            .unwrap()
    };
    assert_status(&with_package("install"), 0);
    assert_eq!(std::fs::read_link(prefix.bin("passt")).unwrap(), packaged);
    assert!(
        std::fs::symlink_metadata(prefix.bin("vhost-net-user")).is_err(),
        "the earlier copy is gone"
    );

    assert_status(&with_package("uninstall"), 0);
    assert!(std::fs::symlink_metadata(prefix.bin("passt")).is_err());
    assert!(packaged.is_file(), "the package's program stays");
}
