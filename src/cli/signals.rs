//! The stop on SIGINT or SIGTERM: an apply finishes and records the writes in flight
//! (bounded), temporary files are removed, and the process exits 128 + the signal.

use std::future::Future;

use contacts_etl::Result;

use super::say;

/// Longest wait, after SIGINT or SIGTERM, for the writes in flight to be answered and
/// recorded.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `work` to its end, or, when `stoppable` and a stop signal comes first, stops it:
/// the writes in flight are awaited and recorded, the live spills removed, and the
/// signal's exit code returned. The emulator is not `stoppable`: it waits for the
/// signal itself.
pub async fn run_until_stopped(
    work: impl Future<Output = Result<u8>>,
    stoppable: bool,
) -> Result<u8> {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        (name, code) = stop_signal(), if stoppable => {
            // Writes in flight are answered and recorded before the process ends:
            // an apply stops at the end of its group (bounded wait).
            if contacts_etl::plan::apply::request_stop() {
                finish_writes(name, &mut work).await;
            }
            // Dropping the work removes its temporary files; these are the ones still live.
            let removed = contacts_etl::spill::remove_live_spills();
            tracing::debug!(removed, "temporary folders removed");
            say(tracing::Level::ERROR, &format!(
                "stopped by {name}; temporary files removed. Accounts whose commit had finished are kept, the rest resume at the next run"
            ));
            Ok(code)
        }
    }
}

/// Awaits, at most [`STOP_WAIT`] and until a second signal, the apply's group in flight.
async fn finish_writes(
    name: &str,
    work: &mut std::pin::Pin<&mut impl Future<Output = Result<u8>>>,
) {
    say(
        tracing::Level::ERROR,
        &format!(
            "{name}: stopping after the writes in flight are answered and recorded (at most {} s)",
            STOP_WAIT.as_secs()
        ),
    );
    tokio::select! {
        r = tokio::time::timeout(STOP_WAIT, work) => match r {
            Ok(Err(e)) => say(tracing::Level::ERROR, &e.to_string()),
            Ok(Ok(_)) => {}
            Err(_) => say(tracing::Level::ERROR, &format!(
                "the writes in flight were not answered within {} s; their results are not recorded", STOP_WAIT.as_secs()
            )),
        },
        (again, _) = stop_signal() => say(tracing::Level::ERROR, &format!(
            "{again} again: exiting without waiting; the results of the writes in flight are not recorded"
        )),
    }
}

/// Waits for SIGINT or SIGTERM; returns its name and the exit code that reports it.
pub async fn stop_signal() -> (&'static str, u8) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => ("SIGINT", 130),
                _ = term.recv() => ("SIGTERM", 143),
            },
            // No handler could be installed: the default action (exit) stays.
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        ("Ctrl-C", 130)
    }
}
