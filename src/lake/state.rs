//! One account's state as the lake holds it, and the two runs that change it without an
//! extract: a reset (the cursor is cleared, so the next sync is a full extract that
//! reconciles deletes) and a drop (the account's contacts leave `contacts`, each logged in
//! `contact_changes` as a delete).
//!
//! Both are runs like a sync's, with the same protocol (see the module docs of
//! [`crate::lake`]): one commit to `contact_changes` with the application transaction
//! `("<source>/<account>", seq)`, a null cursor and the run's figures, then `contacts`,
//! then the `sync_runs` row (mode `reset` or `drop`, no cursor). A process that dies
//! between the steps leaves a run that the next `recover` replays, as it does a sync's.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::writer::DeltaWriter;
use serde_json::json;

use super::{
    COMMIT_RETRIES, Lake, RunFigures, TableKind, app_id, commit, commit_files, keyed, retry,
};
use crate::error::{Context, Error, Kind, Result};
use crate::model::schema::{ContactRecord, records_to_batch};

/// Delete rows per batch written to `contact_changes` by a drop.
const DROP_BATCH: usize = 8192;

/// One `sync_runs` row, as `state show` and `status` read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRow {
    /// The run's id (shared by every account of one sync).
    pub run_id: String,
    /// The account's run number; none for a failed run.
    pub seq: Option<i64>,
    /// `full`, `incremental`, `resync`, `reset` or `drop`.
    pub mode: String,
    /// `ok` or `failed`.
    pub status: String,
    /// Microseconds since the epoch, UTC (in JSON: `started_at`, RFC 3339 as `status`).
    #[serde(rename = "started_at", serialize_with = "rfc3339")]
    pub started_at_us: i64,
    /// Microseconds since the epoch, UTC (in JSON: `finished_at`, RFC 3339).
    #[serde(rename = "finished_at", serialize_with = "rfc3339")]
    pub finished_at_us: i64,
    /// Contacts upserted.
    pub upserted: i64,
    /// Contacts deleted.
    pub deleted: i64,
    /// Response bytes read.
    pub bytes: i64,
    /// The failure, for a failed run.
    pub error: Option<String>,
    /// The cursor the run advanced to.
    pub cursor: Option<String>,
}

/// A time in microseconds as every JSON output of the tool writes times: RFC 3339 at the
/// second, UTC (`2026-12-01T23:10:05Z`).
fn rfc3339<S: serde::Serializer>(us: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    let text = chrono::DateTime::from_timestamp_micros(*us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| us.to_string());
    s.serialize_str(&text)
}

/// What the lake holds for one account: its completed state and its run history in short.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountRuns {
    /// The source's name.
    pub source: String,
    /// The account.
    pub account: String,
    /// The last completed run's number (0 if none).
    pub seq: i64,
    /// The cursor the next sync continues from (none: the next sync is a full extract).
    pub cursor: Option<String>,
    /// Live rows in `contacts`.
    pub held: i64,
    /// The last run that completed.
    pub last_ok: Option<RunRow>,
    /// The newest run, whatever its status.
    pub last: Option<RunRow>,
    /// Failed runs after the last completed one.
    pub failures_since: i64,
    /// The newest of those failures.
    pub last_failure: Option<RunRow>,
}

/// What a reset or a drop did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StateChange {
    /// The run id it is recorded under.
    pub run_id: String,
    /// Its run number for the account.
    pub seq: i64,
    /// `reset` or `drop`.
    pub mode: String,
    /// Contacts removed from `contacts` (a drop's), each logged as a delete.
    pub deleted: i64,
    /// Photos removed from `contact_photos` (a drop's).
    pub photos_removed: i64,
}

impl Lake {
    /// One account's completed state (last seq and cursor), after finishing its
    /// interrupted run if it has one: [`Lake::recover_runs`] for a single account.
    pub async fn recover(&self, source: &str, account: &str) -> Result<super::AccountState> {
        self.recover_runs(&[(source.to_string(), account.to_string())])
            .await?
            .state(source, account)
            .await
    }

    /// Every account the lake knows (from `sync_runs` and `contacts`), sorted, with its
    /// state and the short history `state show` and `status` print. Reads only.
    pub async fn account_runs(&self) -> Result<Vec<AccountRuns>> {
        let mut by_account: BTreeMap<(String, String), Vec<RunRow>> = BTreeMap::new();
        self.for_each_batch(TableKind::SyncRuns, None, |b| {
            for (key, row) in run_rows(&b)? {
                by_account.entry(key).or_default().push(row);
            }
            Ok(())
        })
        .await?;
        let held = self.held_contacts().await?;
        for key in held.keys() {
            by_account.entry(key.clone()).or_default();
        }
        Ok(by_account
            .into_iter()
            .map(|((source, account), runs)| {
                let n = held.get(&(source.clone(), account.clone())).copied();
                summarise(source, account, runs, n.unwrap_or(0))
            })
            .collect())
    }

    /// Live contacts per `(source, account)`.
    pub async fn held_contacts(&self) -> Result<BTreeMap<(String, String), i64>> {
        let Some(t) = self.open(TableKind::Contacts).await? else {
            return Ok(BTreeMap::new());
        };
        // Counted from the data (see `provider`), not from the log's statistics.
        let ctx = super::session_context();
        ctx.register_table("t", self.provider(TableKind::Contacts, &t).await?)?;
        let batches = ctx
            .sql("SELECT CAST(source AS VARCHAR), CAST(account AS VARCHAR), count(*) FROM t GROUP BY 1, 2")
            .await?
            .collect()
            .await
            .context(Kind::Lake, "counting the rows of contacts")?;
        let mut out = BTreeMap::new();
        for b in batches {
            let s = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let a = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)?;
            let (s, a) = (s.as_string::<i32>(), a.as_string::<i32>());
            let n = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Int64)?;
            let n = n.as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.insert((s.value(i).to_string(), a.value(i).to_string()), n.value(i));
            }
        }
        Ok(out)
    }

    /// Clears the account's cursor, as run `run_id`: the next sync of the account is a
    /// full extract, and contacts it no longer finds are deleted. Its contacts stay.
    pub async fn reset_account(
        &self,
        source: &str,
        account: &str,
        run_id: &str,
    ) -> Result<StateChange> {
        let state = self.recover(source, account).await?;
        let seq = state.seq + 1;
        let figures = state_figures(run_id, "reset", 0);
        self.commit_state_run(source, account, seq, &figures, &[])
            .await?;
        self.finish_state_run(source, account, seq, figures, 0)
            .await
    }

    /// Drops the account from the lake, as run `run_id`: its contacts leave `contacts`
    /// (each logged in `contact_changes` as a delete of this run), its photos leave
    /// `contact_photos`, and its cursor is cleared. A later sync of the account, if it is
    /// still configured, starts again with a full extract.
    pub async fn drop_account(
        &self,
        source: &str,
        account: &str,
        run_id: &str,
    ) -> Result<StateChange> {
        let state = self.recover(source, account).await?;
        let seq = state.seq + 1;
        let mut ids: Vec<String> = self
            .landed_etags(source, account)
            .await?
            .into_keys()
            .collect();
        ids.sort();
        let figures = state_figures(run_id, "drop", ids.len() as i64);
        // The deletes are written first and referenced by the run's one commit.
        let changes = self.open_or_create(TableKind::ContactChanges).await?;
        let mut writer = self.streaming_writer(&changes)?;
        for chunk in ids.chunks(DROP_BATCH) {
            let rows: Vec<ContactRecord> = chunk
                .iter()
                .map(|id| ContactRecord {
                    source: source.into(),
                    account: account.into(),
                    id: id.clone(),
                    deleted: true,
                    _run_id: run_id.into(),
                    _synced_at: figures.started_at_us,
                    ..Default::default()
                })
                .collect();
            writer.write(records_to_batch(&rows)?).await?;
        }
        let files = if ids.is_empty() {
            Vec::new()
        } else {
            super::checksum::sealed(writer.flush().await?)
        };
        self.commit_state_run(source, account, seq, &figures, &files)
            .await?;
        if !ids.is_empty() {
            let keys: HashSet<String> = ids.iter().cloned().collect();
            let step = keyed::Replace {
                keys: &keys,
                new: keyed::NewRows::Batch(None),
                located: None,
            };
            self.apply_keys(
                TableKind::Contacts,
                source,
                account,
                &step,
                Some(seq),
                run_id,
            )
            .await?;
        }
        let mut photos: Vec<String> = self
            .landed_photos(source, account)
            .await?
            .into_keys()
            .collect();
        photos.sort();
        self.commit_photos(source, account, &[], &photos, run_id)
            .await?;
        self.finish_state_run(source, account, seq, figures, photos.len() as i64)
            .await
    }

    /// A reset's or drop's last step: its `sync_runs` row (with its transaction), then
    /// what it did.
    async fn finish_state_run(
        &self,
        source: &str,
        account: &str,
        seq: i64,
        figures: RunFigures,
        photos_removed: i64,
    ) -> Result<StateChange> {
        let change = StateChange {
            run_id: figures.run_id.clone(),
            seq,
            mode: figures.mode.clone(),
            deleted: figures.deleted,
            photos_removed,
        };
        self.append_runs(&[commit::RunRow {
            source,
            account,
            seq: Some(seq),
            figures,
            cursor: None,
        }])
        .await?;
        Ok(change)
    }

    /// The run's commit to `contact_changes`: `files` (its delete rows, if any), the
    /// transaction `(app, seq)` and a null cursor. Fails, changing nothing, when another
    /// run of the account committed `seq` first.
    async fn commit_state_run(
        &self,
        source: &str,
        account: &str,
        seq: i64,
        figures: &RunFigures,
        files: &[deltalake::kernel::Add],
    ) -> Result<()> {
        let app = app_id(source, account);
        let props = CommitProperties::default()
            .with_metadata([
                ("app.id".to_string(), json!(app)),
                ("app.seq".to_string(), json!(seq)),
                ("app.cursor".to_string(), serde_json::Value::Null),
                (
                    "app.figures".to_string(),
                    serde_json::to_value(figures).unwrap_or_default(),
                ),
                ("app.run_id".to_string(), json!(figures.run_id)),
            ])
            .with_application_transaction(Transaction::new(&app, seq))
            .with_max_retries(COMMIT_RETRIES);
        let props = if files.is_empty() {
            props
        } else {
            props.with_application_transaction(Transaction::new(super::contacts_mark(&app), seq))
        };
        retry::retry(
            &app,
            |e: &Error| !matches!(e, Error::Concurrent { .. }),
            async |_| {
                let changes = self.open_or_create(TableKind::ContactChanges).await?;
                let txns = self
                    .indexes
                    .txns(TableKind::ContactChanges, &changes)
                    .await?;
                if txns.get(&app).copied().unwrap_or(0) != seq - 1 {
                    return Err(Error::concurrent(format!(
                        "{app}: another run of this account committed run {seq} first; nothing was changed. Try again"
                    )));
                }
                let t0 = std::time::Instant::now();
                let t = commit_files(&changes, files, props.clone())
                    .await
                    .map_err(Error::from)?;
                self.remember(TableKind::ContactChanges, t, t0, "committed to a table");
                Ok(())
            },
        )
        .await
        .map_err(|e| match e {
            Error::Concurrent { .. } => e,
            e => e.context(format!(
                "{app}: committing the {} run {seq} to contact_changes",
                figures.mode
            )),
        })
    }
}

/// The figures of a reset or drop run, started and finished now.
fn state_figures(run_id: &str, mode: &str, deleted: i64) -> RunFigures {
    let now = chrono::Utc::now().timestamp_micros();
    RunFigures {
        run_id: run_id.into(),
        mode: mode.into(),
        started_at_us: now,
        finished_at_us: now,
        deleted,
        status: "ok".into(),
        ..Default::default()
    }
}

/// The rows of a `sync_runs` batch (normalized to its schema), keyed by account.
fn run_rows(b: &RecordBatch) -> Result<Vec<((String, String), RunRow)>> {
    let col = |name: &str| {
        b.column_by_name(name)
            .ok_or_else(|| Error::lake(format!("sync_runs has no column {name}")))
    };
    let text = |name: &str| -> Result<arrow::array::ArrayRef> {
        Ok(arrow::compute::cast(
            col(name)?,
            &arrow::datatypes::DataType::Utf8,
        )?)
    };
    let (run_id, source, account, mode, status, error, cursor) = (
        text("run_id")?,
        text("source")?,
        text("account")?,
        text("mode")?,
        text("status")?,
        text("error")?,
        text("cursor")?,
    );
    let s = |a: &arrow::array::ArrayRef, i: usize| -> Option<String> {
        let a = a.as_string::<i32>();
        a.is_valid(i).then(|| a.value(i).to_string())
    };
    let int = |name: &str| -> Result<arrow::array::ArrayRef> {
        Ok(arrow::compute::cast(
            col(name)?,
            &arrow::datatypes::DataType::Int64,
        )?)
    };
    let (seq, upserted, deleted, bytes) = (
        int("seq")?,
        int("upserted")?,
        int("deleted")?,
        int("bytes")?,
    );
    let n = |a: &arrow::array::ArrayRef, i: usize| -> Option<i64> {
        let a = a.as_primitive::<Int64Type>();
        a.is_valid(i).then(|| a.value(i))
    };
    let time = |name: &str| {
        col(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| Error::lake(format!("sync_runs: {name} is not a timestamp (µs)")))
    };
    let (started, finished) = (time("started_at")?, time("finished_at")?);
    Ok((0..b.num_rows())
        .map(|i| {
            let key = (
                s(&source, i).unwrap_or_default(),
                s(&account, i).unwrap_or_default(),
            );
            let row = RunRow {
                run_id: s(&run_id, i).unwrap_or_default(),
                seq: n(&seq, i),
                mode: s(&mode, i).unwrap_or_default(),
                status: s(&status, i).unwrap_or_default(),
                started_at_us: started.value(i),
                finished_at_us: finished.value(i),
                upserted: n(&upserted, i).unwrap_or(0),
                deleted: n(&deleted, i).unwrap_or(0),
                bytes: n(&bytes, i).unwrap_or(0),
                error: s(&error, i),
                cursor: s(&cursor, i),
            };
            (key, row)
        })
        .collect())
}

/// One account's runs in short: the completed state is the `ok` run with the highest seq
/// (the one whose cursor the next sync reads); failures count after its end.
fn summarise(source: String, account: String, mut runs: Vec<RunRow>, held: i64) -> AccountRuns {
    runs.sort_by(|a, b| {
        (a.finished_at_us, a.seq, &a.run_id).cmp(&(b.finished_at_us, b.seq, &b.run_id))
    });
    let last_ok = runs
        .iter()
        .filter(|r| r.status == "ok" && r.seq.is_some())
        .max_by_key(|r| r.seq)
        .cloned();
    let after = last_ok.as_ref().map_or(i64::MIN, |r| r.finished_at_us);
    let failures: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.status != "ok" && r.finished_at_us > after)
        .collect();
    AccountRuns {
        seq: last_ok.as_ref().and_then(|r| r.seq).unwrap_or(0),
        cursor: last_ok.as_ref().and_then(|r| r.cursor.clone()),
        held,
        failures_since: failures.len() as i64,
        last_failure: failures.last().map(|r| (*r).clone()),
        last: runs.last().cloned(),
        last_ok,
        source,
        account,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: Option<i64>, status: &str, at: i64) -> RunRow {
        RunRow {
            run_id: format!("r{at}"),
            seq,
            mode: "incremental".into(),
            status: status.into(),
            started_at_us: at - 1,
            finished_at_us: at,
            upserted: 0,
            deleted: 0,
            bytes: 0,
            error: (status != "ok").then(|| format!("e{at}")),
            cursor: seq.map(|s| format!("c{s}")),
        }
    }

    #[test]
    fn the_state_is_the_highest_ok_seq_and_failures_count_after_it() {
        let runs = vec![
            row(Some(1), "ok", 10),
            row(None, "failed", 15),
            row(Some(2), "ok", 20),
            row(None, "failed", 30),
            row(None, "failed", 40),
        ];
        let a = summarise("s".into(), "a".into(), runs, 7);
        assert_eq!(a.seq, 2);
        assert_eq!(a.cursor.as_deref(), Some("c2"));
        assert_eq!(a.failures_since, 2);
        assert_eq!(a.last_failure.unwrap().error.as_deref(), Some("e40"));
        assert_eq!(a.last.unwrap().finished_at_us, 40);
        assert_eq!(a.held, 7);
    }

    #[test]
    fn an_account_that_never_completed_has_seq_0_and_every_failure() {
        let a = summarise(
            "s".into(),
            "a".into(),
            vec![row(None, "failed", 1), row(None, "failed", 2)],
            0,
        );
        assert_eq!((a.seq, a.cursor, a.failures_since), (0, None, 2));
        assert!(a.last_ok.is_none());
    }
}
