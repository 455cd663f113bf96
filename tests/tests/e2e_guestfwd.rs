//! End-to-end guest forwards (`guestfwd=tcp:SERVER:PORT-cmd:COMMAND`): a real guest connects
//! to the forwards' addresses behind QEMU slirp and behind the backend (over both links) and
//! must see the same thing:
//!
//! - the command's standard output and error, and what it answers to the guest's input, on a
//!   new run of the command for each connection;
//! - an empty server address meaning slirp's default, 10.0.2.4;
//! - the forwards' addresses answering ARP with slirp's 52:55:IP MACs.
//!
//! The commands run on this machine, and the guest connects to nothing else: other ports of a
//! forward's address are routed as any address would be (out, in slirp), so none is tried.

use std::sync::OnceLock;

use vnu_tests::{Backend, GuestOpts, GuestRun, Link, Net, both_links, e2e_ready};

/// The `guestfwd=` rules, as QEMU and `--slirp` take them.
fn rules() -> [&'static str; 2] {
    [
        r#"guestfwd=tcp:10.0.2.100:1234-cmd:sh -c "echo out; echo err >&2; read line; echo got-$line""#,
        "guestfwd=tcp::1236-cmd:echo 'the default server'",
    ]
}

/// One line per check: what the guest read, or which MAC answered.
const SCRIPT: &str = r#"say() { echo "$1 $(tr '\n' '|')"; }
echo ping | nc -w 10 10.0.2.100 1234 2>&1 | say first
echo pong | nc -w 10 10.0.2.100 1234 2>&1 | say second
nc -w 10 10.0.2.4 1236 < /dev/null 2>&1 | say default
for a in 10.0.2.100 10.0.2.4; do echo "mac $a $(ip neigh show $a | awk '{ print $5 }')"; done
"#;

fn guest(name: &str, net: Net) -> GuestOpts {
    GuestOpts::new(name, net).script(SCRIPT)
}

/// The QEMU slirp guest, booted once per process.
fn slirp_reference() -> &'static GuestRun {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let opts = rules().join(",");
        vnu_tests::boot_reference(
            &guest("slirp-guestfwd", Net::slirp_with(&opts)),
            &expected_lines(),
        )
        .map_err(|e| e.to_string())
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("the QEMU slirp guestfwd guest failed (a harness problem):\n{e}"),
    }
}

/// What the script must print.
fn expected_lines() -> Vec<String> {
    vec![
        "first out|err|got-ping|".to_owned(),
        "second out|err|got-pong|".to_owned(),
        "default the default server|".to_owned(),
        "mac 10.0.2.100 52:55:0a:00:02:64".to_owned(),
        "mac 10.0.2.4 52:55:0a:00:02:04".to_owned(),
    ]
}

/// The guest sees the same behind the backend as behind QEMU slirp, and that is what the
/// rules say.
fn guest_forwards_answer_as_in_slirp(link: Link) {
    if !e2e_ready() {
        return;
    }
    let mut args = vec!["-v"];
    for rule in rules() {
        args.extend(["--slirp", rule]);
    }
    let backend = Backend::start_link(link, &args).expect("starting the backend");
    let name = format!("ours-{link}-guestfwd");
    let ours = guest(&name, backend.net());
    vnu_tests::assert_runs_as_slirp(slirp_reference, &expected_lines(), &ours, &backend);
}

both_links!(guest_forwards_answer_as_in_slirp);
