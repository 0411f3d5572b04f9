//! Leases: one sync of an account at a time, said before anything is extracted.
//!
//! Two syncs of one account never corrupt the lake (the run's Delta transaction fences
//! them), but without a lease the second extracts everything only to find, at its commit,
//! that the first landed before it. A lease is a small JSON file in the lake,
//! `_leases/<source>/<account>.json`, made with a create-only put (`If-None-Match: *` on
//! S3, a hard link on local disk), so of two syncs that start together exactly one gets
//! it; the other skips the account at once, naming the holder.
//!
//! A lease is renewed every [`RENEW_EVERY`] while its run goes on and removed when the run
//! ends. One whose holder is gone expires: a holder on this host whose process is dead
//! (`kill -9`, a crash) at once, any other once it has not been renewed for [`STALE_AFTER`]
//! (a machine that died). The lease saves work; it is not what keeps the lake exact (in
//! the rare race where two syncs both take over one expired lease, the Delta transaction
//! still lets only one of them land).

use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::Lake;
use crate::error::{Context, Error, Kind, Result};

/// How often a held lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(30);
/// A lease not renewed for this long is expired, whoever holds it.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// Who holds a lease, as its file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The holding sync's run id.
    pub run_id: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id on that host.
    pub pid: u32,
    /// When the lease was last renewed, in milliseconds since the epoch.
    pub renewed_at_ms: i64,
}

impl Holder {
    fn ours(run_id: &str) -> Holder {
        Holder {
            run_id: run_id.to_string(),
            host: host_name(),
            pid: std::process::id(),
            renewed_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// Whether the holder of the lease at `path` is surely gone: a dead process on this
    /// host, this process without the lease among its live ones (a run whose work was
    /// dropped), or no renewal for [`STALE_AFTER`].
    fn is_gone(&self, path: &Path, now_ms: i64) -> bool {
        let here = self.host == host_name();
        now_ms - self.renewed_at_ms > STALE_AFTER.as_millis() as i64
            || (here && !process_alive(self.pid))
            || (here && self.pid == std::process::id() && !live().contains(path.as_ref()))
    }

    /// The holder for people: `run R (pid P on host H, renewed 12s ago)`.
    pub fn describe(&self) -> String {
        let age_s = (chrono::Utc::now().timestamp_millis() - self.renewed_at_ms).max(0) / 1000;
        format!(
            "run {} (pid {} on {}, renewed {age_s}s ago)",
            self.run_id, self.pid, self.host
        )
    }
}

/// The lease files this process holds now.
fn live() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static LIVE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A held lease: renewed in the background until [`Lease::release`], or its drop (a run
/// whose work was dropped), which stops the renewal and removes the file in the
/// background.
pub struct Lease {
    store: std::sync::Arc<dyn ObjectStore>,
    path: Path,
    run_id: String,
    /// The renewal; none where the store cannot make a file only if it is absent (no
    /// lease file was made: such a store gets no leases, only the commit's fencing).
    renew: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(r) = self.renew.take() else {
            return;
        };
        r.abort();
        live().remove(self.path.as_ref());
        // Still ours (its run ends here); a process that exits first leaves the file to
        // the next run, which finds its holder dead.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, path, run_id) =
                (self.store.clone(), self.path.clone(), self.run_id.clone());
            rt.spawn(async move {
                if let Ok(Some(h)) = read_holder(store.as_ref(), &path).await
                    && h.run_id == run_id
                {
                    let _ = store.delete(&path).await;
                }
            });
        }
    }
}

impl Lease {
    /// Gives the lease up: stops renewing it and removes its file if it is still ours.
    pub async fn release(mut self) {
        let Some(renew) = self.renew.take() else {
            return;
        };
        renew.abort();
        live().remove(self.path.as_ref());
        if let Ok(Some(h)) = read_holder(self.store.as_ref(), &self.path).await
            && h.run_id == self.run_id
            && let Err(e) = self.store.delete(&self.path).await
        {
            tracing::debug!(error = %e, path = %self.path, "the lease could not be removed; it expires");
        }
    }
}

/// What asking for a lease found.
pub enum Leased {
    /// It is ours until released.
    Held(Lease),
    /// Another sync holds it.
    Busy(Holder),
}

impl Lake {
    /// Takes the lease of `source`/`account` for `run_id`, unless a live sync holds it.
    pub async fn take_lease(&self, source: &str, account: &str, run_id: &str) -> Result<Leased> {
        let (store, base) = self.root_store()?;
        let path = Path::from_iter(
            base.parts()
                .chain(Path::from("_leases").parts())
                .chain(Path::from(source).parts())
                .chain(Path::from(format!("{account}.json")).parts()),
        );
        // Twice at most: once as it is, once after removing a lease whose holder is gone.
        for _ in 0..2 {
            match create(store.as_ref(), &path, &Holder::ours(run_id)).await {
                Ok(()) => {
                    live().insert(path.to_string());
                    let renew =
                        tokio::spawn(renew(store.clone(), path.clone(), run_id.to_string()));
                    return Ok(Leased::Held(Lease {
                        store,
                        path,
                        run_id: run_id.to_string(),
                        renew: Some(renew),
                    }));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(
                    e @ (object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. }),
                ) => {
                    tracing::debug!(error = %e, "the store makes no create-only files: no sync lease");
                    return Ok(Leased::Held(Lease {
                        store,
                        path,
                        run_id: run_id.to_string(),
                        renew: None,
                    }));
                }
                Err(e) => return Err(lease_error(&path, e)),
            }
            match read_holder(store.as_ref(), &path).await {
                // Gone between the create and the read: ask again.
                Ok(None) => continue,
                Ok(Some(h)) if !h.is_gone(&path, chrono::Utc::now().timestamp_millis()) => {
                    return Ok(Leased::Busy(h));
                }
                // Expired, or unreadable (no sync writes that): taken over.
                Ok(Some(h)) => {
                    tracing::info!(source, account, holder = %h.describe(), "taking over an expired sync lease");
                }
                Err(e) => {
                    tracing::warn!(source, account, error = %e, "an unreadable sync lease is taken over");
                }
            }
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(lease_error(&path, e)),
            }
        }
        // Someone else took it over in between: theirs.
        match read_holder(store.as_ref(), &path).await {
            Ok(Some(h)) => Ok(Leased::Busy(h)),
            Ok(None) | Err(_) => Err(Error::lake(format!(
                "{path}: the sync lease changed hands twice while it was asked for; rerun"
            ))),
        }
    }
}

async fn create(store: &dyn ObjectStore, path: &Path, h: &Holder) -> object_store::Result<()> {
    let body = serde_json::to_vec(h).expect("a holder serializes");
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(path, PutPayload::from(body), opts)
        .await
        .map(|_| ())
}

/// The lease's holder; `None` when there is no lease, an error when its file is no lease.
async fn read_holder(store: &dyn ObjectStore, path: &Path) -> Result<Option<Holder>> {
    let bytes = match store.get(path).await {
        Ok(g) => g.bytes().await.map_err(|e| lease_error(path, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(lease_error(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .with_context(Kind::Lake, || format!("{path}: not a sync lease"))
}

/// Renews the lease every [`RENEW_EVERY`] until aborted; stops once it is no longer ours.
async fn renew(store: std::sync::Arc<dyn ObjectStore>, path: Path, run_id: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match read_holder(store.as_ref(), &path).await {
            Ok(Some(h)) if h.run_id == run_id => {}
            _ => {
                tracing::warn!(%path, "the sync lease is no longer this run's; not renewed");
                return;
            }
        }
        let body = serde_json::to_vec(&Holder::ours(&run_id)).expect("a holder serializes");
        if let Err(e) = store.put(&path, PutPayload::from(body)).await {
            tracing::debug!(error = %e, %path, "renewing the sync lease failed; trying again");
        }
    }
}

fn lease_error(path: &Path, e: object_store::Error) -> Error {
    Error::with_source(Kind::Lake, format!("the sync lease {path}"), e)
}

/// This machine's host name (empty if it has none).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and the last byte stays 0 either way.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether a process with this id runs on this host.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(dir: &std::path::Path) -> Lake {
        Lake::new(
            url::Url::from_directory_path(dir).unwrap(),
            Default::default(),
        )
    }

    async fn write_holder(dir: &std::path::Path, h: &Holder) {
        let f = dir.join("_leases/src/acct.json");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, serde_json::to_vec(h).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_released_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        let Leased::Held(first) = lake.take_lease("src", "acct", "run-1").await.unwrap() else {
            panic!("the first asker gets the lease");
        };
        match lake.take_lease("src", "acct", "run-2").await.unwrap() {
            Leased::Busy(h) => {
                assert_eq!(h.run_id, "run-1");
                assert_eq!(h.pid, std::process::id());
            }
            Leased::Held(_) => panic!("a held lease was given twice"),
        }
        // Another account is free.
        assert!(matches!(
            lake.take_lease("src", "other", "run-2").await.unwrap(),
            Leased::Held(_)
        ));
        first.release().await;
        assert!(!dir.path().join("_leases/src/acct.json").exists());

        assert!(matches!(
            lake.take_lease("src", "acct", "run-2").await.unwrap(),
            Leased::Held(_)
        ));
    }

    #[tokio::test]
    async fn a_dead_holder_here_or_a_silent_one_anywhere_loses_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        let now = chrono::Utc::now().timestamp_millis();
        // A process of this host that no longer runs (a child that has exited).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let cases = [
            Holder {
                run_id: "dead".into(),
                host: host_name(),
                pid: dead,
                renewed_at_ms: now,
            },
            Holder {
                run_id: "silent".into(),
                host: "another-host".into(),
                pid: 1,
                renewed_at_ms: now - STALE_AFTER.as_millis() as i64 - 1000,
            },
        ];
        for h in cases {
            write_holder(dir.path(), &h).await;
            match lake.take_lease("src", "acct", "next").await.unwrap() {
                Leased::Held(l) => l.release().await,
                Leased::Busy(b) => panic!("{} kept its lease", b.describe()),
            }
        }
        // A live one elsewhere keeps it.
        let live = Holder {
            run_id: "live".into(),
            host: "another-host".into(),
            pid: 1,
            renewed_at_ms: now,
        };
        write_holder(dir.path(), &live).await;
        assert!(matches!(
            lake.take_lease("src", "acct", "next").await.unwrap(),
            Leased::Busy(h) if h == live
        ));
    }

    #[tokio::test]
    async fn a_run_of_this_process_that_was_dropped_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        // Dropped without release (its future cancelled): the file goes in the background.
        let Leased::Held(l) = lake.take_lease("src", "acct", "run-1").await.unwrap() else {
            panic!("free");
        };
        drop(l);
        assert!(matches!(
            lake.take_lease("src", "acct", "run-2").await.unwrap(),
            Leased::Held(_)
        ));
        // A file of this process that no live run holds (the removal never ran).
        let ours = Holder::ours("run-3");
        std::fs::create_dir_all(dir.path().join("_leases/src")).unwrap();
        std::fs::write(
            dir.path().join("_leases/src/other.json"),
            serde_json::to_vec(&ours).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            lake.take_lease("src", "other", "run-4").await.unwrap(),
            Leased::Held(_)
        ));
    }
}
