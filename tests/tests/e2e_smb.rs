//! End-to-end `smb=DIR`: a real guest mounts the share behind QEMU slirp and behind the
//! backend (over both links) with the kernel's SMB client, reads a file the host put there and
//! writes one back, and must see the same thing on both:
//!
//! - `//10.0.2.4/qemu` (slirp's default server address) mounts as a guest, SMB 2.1;
//! - the host's file reads back, the guest's file lands in the host directory;
//! - port 139 answers an SMB2 negotiation as port 445 does;
//! - 10.0.2.4 answers ARP with slirp's 52:55:IP MAC.
//!
//! Both run Samba's smbd (`/usr/sbin/smbd`, Debian's `samba`) on each guest connection; no
//! server listens on the host. Each guest shares a directory of its own under the target
//! directory. The backend removes smbd's private directory when it exits.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vnu_tests::{Backend, GuestOpts, GuestRun, Link, Net, both_links, e2e_ready};

const GREETING: &str = "hello from the host";
const WRITTEN: &str = "written by the guest";

/// One line per check. The SMB2 NEGOTIATE request (NetBIOS length 104, a 64-byte SMB2 header,
/// dialects 2.0.2 and 2.1) is written in octal for busybox's printf; from the answer it prints
/// the protocol ID, the status and the dialect chosen, which do not vary between runs.
const SCRIPT: &str = r#"for m in $(cat /etc/cifs-modules); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
mkdir -p /mnt/share
if mount -t cifs //10.0.2.4/qemu /mnt/share -o vers=2.1,username=guest,password=,ip=10.0.2.4 2>/tmp/mount.err
then echo mounted; else echo "mount failed: $(cat /tmp/mount.err)"; fi
echo "read: $(cat /mnt/share/greeting.txt)"
echo "written by the guest" > /mnt/share/from-guest.txt && echo wrote
echo "listing: $(ls /mnt/share | xargs)"
umount /mnt/share && echo unmounted
negotiate() {
  printf '\000\000\000\150\376SMB\100\000\000\000\000\000\000\000\000\000\001\000'
  printf '\000%.0s' $(seq 48)
  printf '\044\000\002\000\001\000\000\000'
  printf '\000%.0s' $(seq 28)
  printf '\002\002\020\002'
}
(negotiate; sleep 2) | nc -w 5 10.0.2.4 139 > /tmp/r139
echo 139: $(od -An -tx1 -j 4 -N 4 /tmp/r139) status $(od -An -tx1 -j 12 -N 4 /tmp/r139) dialect $(od -An -tx1 -j 72 -N 2 /tmp/r139)
echo "mac 10.0.2.4 $(ip neigh show 10.0.2.4 | awk '{ print $5 }')"
"#;

/// What the script must print.
fn expected_lines() -> Vec<String> {
    [
        "mounted",
        "read: hello from the host",
        "wrote",
        "listing: from-guest.txt greeting.txt",
        "unmounted",
        "139: fe 53 4d 42 status 00 00 00 00 dialect 10 02",
        "mac 10.0.2.4 52:55:0a:00:02:04",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A fresh shared directory for guest `name`, holding only the host's greeting.
fn export(name: &str) -> PathBuf {
    let dir = vnu_tests::target_dir().join(format!("e2e-smb-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the shared directory");
    // The backend, started as root, runs smbd as nobody, who must be able to write here.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("opening the shared directory to nobody");
    std::fs::write(dir.join("greeting.txt"), format!("{GREETING}\n")).expect("greeting.txt");
    dir
}

/// Whether the guest's file arrived in the host's directory, whole.
fn guest_wrote(dir: &Path) -> Result<(), String> {
    let file = dir.join("from-guest.txt");
    match std::fs::read_to_string(&file) {
        Ok(got) if got == format!("{WRITTEN}\n") => Ok(()),
        Ok(got) => Err(format!("{} holds {got:?}", file.display())),
        Err(e) => Err(format!("the guest's file is not in {}: {e}", dir.display())),
    }
}

fn guest(name: &str, net: Net) -> GuestOpts {
    GuestOpts::new(name, net).script(SCRIPT)
}

/// The QEMU slirp guest, booted once per process.
fn slirp_reference() -> &'static GuestRun {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let dir = export("slirp");
        let opts = guest(
            "slirp-smb",
            Net::slirp_with(&format!("smb={}", dir.display())),
        );
        let run = vnu_tests::boot_reference(&opts, &expected_lines()).map_err(|e| e.to_string())?;
        guest_wrote(&dir).map_err(|e| format!("behind QEMU slirp, {e}"))?;
        Ok(run)
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("the QEMU slirp smb guest failed (a harness problem):\n{e}"),
    }
}

/// Waits (10 s at most) until no process has `dir` in its command line: the smbd the backend
/// started with `-l DIR -s DIR/smb.conf`, and its children, are gone.
fn wait_no_process_names(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let names_dir = |pid: &std::fs::DirEntry| {
        std::fs::read(pid.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<_> = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|p| {
                p.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(names_dir)
            .map(|p| p.file_name())
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "smbd of {} still running after 10 s: pids {running:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The guest sees the same share behind the backend as behind QEMU slirp, and that is what
/// the host put there; what it writes reaches the host; smbd's files go when the backend does.
fn the_share_mounts_as_in_slirp(link: Link) {
    if !e2e_ready() {
        return;
    }
    assert!(
        Path::new("/usr/sbin/smbd").exists(),
        "smbd is missing (apt-get install samba; scripts/test.sh installs it)"
    );
    let name = format!("ours-{link}-smb");
    let dir = export(&name);
    let share = format!("smb={}", dir.display());
    let mut backend =
        Backend::start_link(link, &["-v", "--slirp", &share]).expect("starting the backend");
    let ours = guest(&name, backend.net());
    vnu_tests::assert_runs_as_slirp(slirp_reference, &expected_lines(), &ours, &backend);
    if let Err(e) = guest_wrote(&dir) {
        panic!("behind the backend, {e}");
    }

    let log = backend.log();
    let private = log
        .lines()
        .find_map(|l| l.split_once("smbd's files in ").map(|(_, rest)| rest))
        .and_then(|rest| rest.strip_suffix(')'))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the backend did not log smbd's directory:\n{log}"));
    assert!(
        private.join("smb.conf").is_file(),
        "{} has no smb.conf",
        private.display()
    );
    assert!(backend.stop().success());
    // Only once no smbd of this share runs can nothing recreate its files.
    wait_no_process_names(&private);
    assert!(
        !private.exists(),
        "{} outlived the backend",
        private.display()
    );
}

both_links!(the_share_mounts_as_in_slirp);
