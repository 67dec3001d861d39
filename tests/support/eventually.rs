//! Waiting on a condition itself instead of a fixed time, shared by the test crates
//! (`tests/api`, and `tests/binary.rs` through a small runtime). A condition that never holds
//! fails the test loudly, with what it waited for and the last state it saw.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(20);

/// Checks `condition` until it gives `Ok`, and returns that value. Past `timeout`, panics
/// naming `what` and the last `Err` (the state seen instead).
pub async fn eventually<T, E: Debug>(
    what: &str,
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match condition().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}; last saw {seen:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}
