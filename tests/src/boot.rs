//! Booting guests to their end within the slot limit, one or several at once, and the "as in
//! slirp" check that compares a guest behind the backend with one behind QEMU slirp.

use crate::slots::SlotGuard;
use crate::{Backend, Error, GuestOpts, GuestRun, Result, spawn, tail};

/// Boots the QEMU slirp guest of an "as in slirp" test: the reference, which must print
/// `expected` for the comparison to mean anything. QEMU's slirp has its own bad moments on a
/// loaded machine (one CI run's slirp guest timed out on a TFTP fetch over IPv6), so a
/// reference that prints otherwise boots once more; the second run is the reference either way.
pub fn boot_reference(opts: &GuestOpts, expected: &[String]) -> Result<GuestRun> {
    let run = boot(opts)?;
    if run.run == expected {
        return Ok(run);
    }
    eprintln!(
        "vnu-tests: the slirp reference `{}` printed otherwise than expected; booting it again. \
         It printed:\n{}",
        opts.name,
        run.run.join("\n")
    );
    boot(opts)
}

/// Boots `ours` (a guest behind `backend`) while `slirp_reference` boots or returns the same
/// script's run behind QEMU slirp (once per process), and asserts that slirp's guest printed
/// `expected` and ours printed the same: the check of every "as in slirp" test.
pub fn assert_runs_as_slirp(
    slirp_reference: fn() -> &'static GuestRun,
    expected: &[String],
    ours: &GuestOpts,
    backend: &Backend,
) {
    let (slirp, run) = std::thread::scope(|s| {
        let slirp = s.spawn(slirp_reference);
        let run = boot(ours);
        (slirp.join().expect("slirp reference thread"), run)
    });
    let context = format!("backend log:\n{}", tail(&backend.log(), 40));
    let run = run.unwrap_or_else(|e| panic!("{e}\n{context}"));
    assert_eq!(
        slirp.run,
        expected,
        "QEMU slirp's guest (the reference) did not print what the test expects:\n{}",
        slirp.report()
    );
    assert_eq!(
        run.run,
        slirp.run,
        "behind the backend the guest saw otherwise than behind slirp:\n{}\n{context}",
        run.report()
    );
}

/// Boots a guest and waits for it to power off: holds one of the `VNU_E2E_JOBS` slots while
/// QEMU runs (the timeout counts from when QEMU starts, not while queued).
pub fn boot(opts: &GuestOpts) -> Result<GuestRun> {
    let _slot = SlotGuard::acquire();
    let run = spawn(opts)?.wait()?;
    eprintln!(
        "vnu-tests: guest `{}` ran in {:.1?} (DHCP bound at {} s guest uptime)",
        run.name,
        run.elapsed,
        run.get("guest.uptime_bound").unwrap_or("-")
    );
    Ok(run)
}

/// Boots several guests at once (each through [`boot`], so within the slot limit); the results
/// are in the order of `opts`.
pub fn boot_all(opts: &[GuestOpts]) -> Vec<Result<GuestRun>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = opts.iter().map(|o| s.spawn(move || boot(o))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::new("boot thread panicked")))
            })
            .collect()
    })
}
