//! The slots that bound how many QEMUs run at once (`VNU_E2E_JOBS`, default: the number of
//! CPUs), so parallel tests queue rather than starve each other's timeouts.

use std::sync::{Condvar, Mutex, OnceLock};

use crate::env::env_nonempty;

/// A counting semaphore limiting how many QEMUs [`boot`] runs at once.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let n = env_nonempty("VNU_E2E_JOBS")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    })
}

#[derive(Debug)]
pub(crate) struct SlotGuard;

impl SlotGuard {
    pub(crate) fn acquire() -> SlotGuard {
        let s = slots();
        let mut free = s.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = s.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let s = slots();
        *s.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        s.freed.notify_one();
    }
}
