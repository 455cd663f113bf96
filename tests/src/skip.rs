//! What a test does when it cannot run here (no QEMU, a missing program): fail, unless
//! `VNU_E2E_ALLOW_SKIP=1` lets it pass.

use crate::env::{find_program, qemu_bin};

/// Reports a test that cannot run here. Fails the test (panics) unless `VNU_E2E_ALLOW_SKIP=1`,
/// so CI never passes without running the end-to-end tests; returns `false` when skipping is
/// allowed (the test then returns early).
pub fn skip(reason: &str) -> bool {
    eprintln!("SKIP: {reason}");
    if std::env::var("VNU_E2E_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIP allowed by VNU_E2E_ALLOW_SKIP=1: this test did not run");
        false
    } else {
        panic!(
            "cannot run end-to-end test: {reason} (set VNU_E2E_ALLOW_SKIP=1 to skip instead of \
             failing)"
        );
    }
}

/// Whether a QEMU-booting test can run: QEMU must be installed. Use as
/// `if !vnu_tests::e2e_ready() { return; }` (see [`skip`]).
pub fn e2e_ready() -> bool {
    let qemu = qemu_bin();
    if find_program(&qemu).is_none() {
        return skip(&format!(
            "{qemu} not found (apt-get install qemu-system-x86, or run scripts/test.sh)"
        ));
    }
    true
}

/// Whether `program` is installed; if not, reports the skip like [`e2e_ready`].
pub fn require_program(program: &str, package: &str) -> bool {
    if find_program(program).is_some() {
        return true;
    }
    skip(&format!(
        "{program} not found (apt-get install {package}, or run scripts/test.sh)"
    ))
}
