//! Waiting on a condition itself instead of a fixed time, shared by the test crates
//! (`tests/api`, `tests/binary.rs`). A condition that never holds fails the test loudly, with
//! what it waited for and the last state it saw.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(20);

/// Checks `condition` until it gives `Ok`, and returns that value. Past `timeout`, panics
/// naming `what` and the last `Err` (the state seen instead).
#[allow(dead_code, reason = "tests/binary.rs waits without a runtime")]
pub async fn eventually<T, E: Debug>(
    what: &str,
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match condition().await {
            Ok(value) => return value,
            Err(seen) => give_up_after(deadline, timeout, what, &seen),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a test without a runtime: the thread sleeps between checks.
#[allow(dead_code, reason = "tests/api waits on its runtime")]
pub fn eventually_blocking<T, E: Debug>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match condition() {
            Ok(value) => return value,
            Err(seen) => give_up_after(deadline, timeout, what, &seen),
        }
        std::thread::sleep(POLL);
    }
}

fn give_up_after(deadline: Instant, timeout: Duration, what: &str, seen: &impl Debug) {
    assert!(
        Instant::now() < deadline,
        "waited {timeout:?} for {what}; last saw {seen:?}"
    );
}
