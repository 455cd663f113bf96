//! `vnu-dist [OUT]`: writes the man page and shell completions of `vhost-net-user`, generated
//! from its command line (clap's description of `vhost_net_user::cli::Args`), under OUT
//! (default `target/dist`): `man/vhost-net-user.1` and `completions/` (bash, zsh, fish).
//! `scripts/build-deb.sh` runs it before `cargo deb`, which packages what it wrote.
//!
//! A program of its own rather than a build script of the product crate: the pages are made
//! only when packaging, and the product's build stays free of generator dependencies.

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// The name the program is installed under (`/usr/bin/vhost-net-user`).
const BIN: &str = "vhost-net-user";

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/dist"));
    if let Err(e) = generate(&out) {
        eprintln!("vnu-dist: writing under {}: {e}", out.display());
        std::process::exit(1);
    }
}

fn generate(out: &Path) -> io::Result<()> {
    let man_dir = out.join("man");
    let completions_dir = out.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completions_dir)?;

    let cmd = vhost_net_user::cli::Args::command().name(BIN);
    write_man_page(&cmd, MAIN_PAGE_EXTRA, &man_dir.join(format!("{BIN}.1")))?;

    // Passt mode's options have a page of their own, under a name of ours: Debian's passt
    // package owns passt.1. The header names the file, the synopsis says `passt`. No
    // completions for it: `passt` is completed by what Debian's passt package ships, or not.
    let passt = vhost_net_user::passt_mode::PasstArgs::command().name("passt");
    write_man_page_titled(
        &passt,
        "vhost-net-user-passt",
        PASST_PAGE_EXTRA,
        &man_dir.join("vhost-net-user-passt.1"),
    )?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        let path = clap_complete::generate_to(shell, &mut cmd, BIN, &completions_dir)?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Sections the command line cannot say, in roff, after the generated ones: what the
/// package installs besides the binary, and where to read on.
const MAIN_PAGE_EXTRA: &str = r#".SH FILES
.TP
\fI/usr/lib/systemd/system/vhost\-net\-user@.service\fR
Template unit: one backend per guest interface, for libvirt's type='vhostuser' (libvirt 9.0).
Instance \fINAME\fR listens on \fI/run/vhost\-net\-user/NAME.sock\fR, owned by libvirt\-qemu,
with the arguments ARGS=... of \fI/etc/vhost\-net\-user/NAME.args\fR.
.TP
\fI/usr/share/doc/vhost\-net\-user/\fR
README.md (the guest's view, security, performance) and libvirt.md (libvirt 11's passt
backend, libvirt 9.0 with the unit, AppArmor).
.SH SEE ALSO
\fBqemu\-system\-x86_64\fR(1), \fBvirsh\fR(1), \fBpasst\fR(1)
"#;

/// What the passt page cannot say from the options: how the program comes to run as passt.
const PASST_PAGE_EXTRA: &str = r#".SH HOW IT RUNS AS PASST
Run under the name \fBpasst\fR (a symbolic link to \fBvhost\-net\-user\fR, made by
\fIscripts/passt\-alias.sh install\fR), the program takes passt's command line, so that
libvirt, libguestfs and QEMU's \-netdev passt start it where they start passt. The guest still
gets QEMU slirp's view by default. Options passt has and this program does not are refused in
one line naming them, exit status 1.
.SH SEE ALSO
\fBvhost\-net\-user\fR(1), \fBpasst\fR(1)
"#;

fn write_man_page(cmd: &clap::Command, extra: &str, path: &Path) -> io::Result<()> {
    write_man_page_titled(cmd, cmd.get_name(), extra, path)
}

fn write_man_page_titled(
    cmd: &clap::Command,
    title: &str,
    extra: &str,
    path: &Path,
) -> io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(title.to_string())
        .render(&mut page)?;
    page.extend_from_slice(extra.as_bytes());
    std::fs::write(path, page)?;
    println!("{}", path.display());
    Ok(())
}
