//! The one way the lake retries a commit: one budget, one backoff. Every commit of the
//! crate goes through [`retry`]; what is worth another attempt is the caller's choice
//! (a conflict only, matched by type with [`crate::Error::is_commit_conflict`], or any
//! error of a step that is checked again before it commits).

use std::time::Duration;

/// Attempts at one step before its error stands. With the backoff below, the last
/// attempt starts about 6 s after the first: long enough for a few concurrent writers of
/// one table (shards, accounts) to take their turns, short enough for a scheduler to see
/// a stuck lake.
pub const ATTEMPTS: u32 = 8;

/// The pause before retry `n` (0-based): 50 ms doubled each time, at most 3.2 s, with
/// jitter so that writers that collided do not collide again.
fn backoff(n: u32) -> Duration {
    use rand::Rng;
    let ms = 50u64 << n.min(6);
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

/// Runs `step` (given the attempt number, from 0) until it succeeds, retrying the errors
/// `retriable` accepts, at most [`ATTEMPTS`] times; the last error stands.
pub async fn retry<T, E: std::fmt::Display>(
    what: &str,
    retriable: impl Fn(&E) -> bool,
    mut step: impl AsyncFnMut(u32) -> Result<T, E>,
) -> Result<T, E> {
    let mut attempt = 0;
    loop {
        match step(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 < ATTEMPTS && retriable(&e) => {
                tracing::info!(what, attempt, error = %e, "another writer got there first; trying again");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
