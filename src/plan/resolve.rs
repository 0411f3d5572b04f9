//! Writes an apply sent but never recorded, resolved against what the API holds.
//!
//! Before each group of writes goes out, an apply records its operations as `sent`
//! rows of `writeback_results` (what the issue calls "unknown": sent, answer not on
//! record), and replaces them with the group's results in one commit when the answers
//! are in. A process killed in between leaves the `sent` rows. The next `apply` of the
//! source, or the next `sync` of the account, resolves each against the lake it has
//! just brought up to date with the API: a write the API holds becomes an `ok` row; one
//! it does not hold was not applied and its row goes, so the next apply sends it again.
//! A row the resolution cannot interpret (edited by hand: no contact id, no etag it was
//! sent against, an op it does not know) becomes `unknown`, named in the output, and the
//! command exits 1; it is never counted applied. `sent` rows of accounts the run did not
//! sync (a failed sync, an API that is down, an account outside `--account`) stay `sent`
//! and are said to be pending; `status` shows both kinds.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray};

use super::record::{ResultRow, result_batch, write_rows};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::lake::{Lake, LandedPhoto, TableKind};
use crate::model::photo::{PhotoAction, PhotoOp};
use crate::model::write::Outcome;

pub use crate::model::write::{SENT, UNKNOWN};

/// A `sent` row the resolution could not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub source: String,
    pub account: String,
    /// The contact's id, if the row names one.
    pub id: Option<String>,
    /// The operation as the row names it.
    pub op: String,
    /// What is wrong with the row.
    pub why: String,
}

/// What a resolution found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Writes the API holds: their rows are `ok` now.
    pub applied: usize,
    /// Writes the API does not hold: their rows are gone (the next apply sends them).
    pub not_applied: usize,
    /// Rows that could not be interpreted: `unknown` now (or, when they cannot even be
    /// addressed, left `sent`); never counted applied.
    pub unknown: Vec<Unresolved>,
    /// `sent` rows of accounts this run did not sync, by account: left for later.
    pub pending: Vec<(String, usize)>,
}

impl Resolution {
    /// Whether there was nothing to resolve.
    pub fn is_empty(&self) -> bool {
        self.applied + self.not_applied == 0 && self.unknown.is_empty() && self.pending.is_empty()
    }

    /// `sent` rows left for a later run.
    pub fn pending_rows(&self) -> usize {
        self.pending.iter().map(|(_, n)| n).sum()
    }

    /// One line for a command's summary (empty when there was nothing to resolve): the
    /// writes earlier applies sent and never recorded, by what became of them.
    pub fn summary_line(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut parts = vec![
            format!("{} found applied (ok rows)", self.applied),
            format!(
                "{} not applied (sent again by the next apply)",
                self.not_applied
            ),
        ];
        if !self.unknown.is_empty() {
            parts.push(format!(
                "{} {UNKNOWN} (named above; check them at the API)",
                self.unknown.len()
            ));
        }
        if !self.pending.is_empty() {
            parts.push(format!(
                "{} still {SENT} (accounts this run did not sync)",
                self.pending_rows()
            ));
        }
        format!(
            "writes earlier applies sent and never recorded: {}\n",
            parts.join(", ")
        )
    }

    /// Logs what was found: a warning with the counts, an error per unknown row (the
    /// first 20), a warning naming the accounts left pending.
    pub fn log(&self, source: &str) {
        let (applied, not) = (self.applied, self.not_applied);
        if applied + not > 0 {
            tracing::warn!(
                source = %source,
                applied,
                not_applied = not,
                "an earlier apply was stopped before recording {} write(s): {applied} found applied at the API and recorded, {not} not applied",
                applied + not
            );
        }
        for u in self.unknown.iter().take(20) {
            tracing::error!(
                source = %u.source,
                account = %u.account,
                id = u.id.as_deref().unwrap_or(""),
                op = %u.op,
                "a write an earlier apply sent is {UNKNOWN}: {}/{}/{} ({}): {}; check the contact at the API, then rerun the apply if it is not as wanted",
                u.source,
                u.account,
                u.id.as_deref().unwrap_or("(no id)"),
                u.op,
                u.why
            );
        }
        if self.unknown.len() > 20 {
            tracing::error!(
                source = %source,
                "… and {} more {UNKNOWN} write(s): SELECT * FROM writeback_results WHERE result = '{UNKNOWN}'",
                self.unknown.len() - 20
            );
        }
        if !self.pending.is_empty() {
            let list: Vec<String> = self
                .pending
                .iter()
                .map(|(a, n)| format!("{source}/{a}: {n}"))
                .collect();
            tracing::warn!(
                source = %source,
                pending = self.pending_rows(),
                "write(s) earlier applies sent are not resolved yet ({}): their account was not synced by this run; the next apply or sync of the account resolves them",
                list.join(", ")
            );
        }
    }
}

/// The `sent` rows of a group of photo writes: what each is, and (in `reason`) the photo
/// etag it is conditional on and, for an upload, the SHA-256 of the bytes sent, which
/// tells afterwards whether the API holds them.
pub(crate) fn photo_sent_rows(group: &[PhotoOp]) -> Vec<ResultRow> {
    group
        .iter()
        .map(|op| {
            let sha256 = match &op.action {
                PhotoAction::Put { bytes, .. } => Some(bytes.sha256()),
                PhotoAction::Delete => None,
            };
            ResultRow {
                op_index: op.index as i64,
                account: op.account.clone(),
                op: op.kind().as_str().into(),
                key: Some(format!("{}/{}", op.account, op.id)),
                id: Some(op.id.clone()),
                http_status: None,
                result: SENT.into(),
                reason: Some(
                    serde_json::json!({ "etag_before": op.etag, "sha256": sha256 }).to_string(),
                ),
                new_etag: None,
                error: None,
            }
        })
        .collect()
}

/// What one `sent` row asks to check.
enum Check {
    Insert { key: String },
    Update { id: String, before: String },
    Delete { id: String },
    PhotoPut { id: String, sha256: String },
    PhotoDelete { id: String },
}

impl Check {
    /// Reads a `sent` row as its apply wrote it; the error says what is missing.
    fn of(r: &ResultRow) -> std::result::Result<Check, String> {
        if r.account.is_empty() {
            return Err("it names no account".into());
        }
        if r.op_index < 0 {
            return Err("its op_index is missing or negative".into());
        }
        let reason: Option<serde_json::Value> = match r.reason.as_deref() {
            Some(text) => Some(serde_json::from_str(text).map_err(|_| {
                "its reason is not the JSON the apply wrote (it holds what the write was sent against)".to_string()
            })?),
            None => None,
        };
        let field = |name: &str| {
            reason
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let id = || {
            r.id.clone()
                .filter(|i| !i.is_empty())
                .ok_or_else(|| "it names no contact id".to_string())
        };
        Ok(match r.op.as_str() {
            "insert" => Check::Insert {
                key: r
                    .key
                    .clone()
                    .filter(|k| !k.is_empty())
                    .ok_or("it has no insert key")?,
            },
            "update" => Check::Update {
                id: id()?,
                before: field("etag_before").ok_or(
                    "its reason holds no etag_before (the contact's etag when the update was sent)",
                )?,
            },
            "delete" => Check::Delete { id: id()? },
            "photo_put" => Check::PhotoPut {
                id: id()?,
                sha256: field("sha256")
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or("its reason holds no sha256 of the photo that was sent")?,
            },
            "photo_delete" => Check::PhotoDelete { id: id()? },
            other => return Err(format!("its op {other:?} is no write operation")),
        })
    }
}

/// What the API holds of one account, as the lake landed it just now: only what the
/// `sent` rows ask about, so memory holds those and one batch of contacts, never the
/// account.
#[derive(Default)]
struct Held {
    /// Etag by contact id, for the ids asked (an id absent: no such contact).
    etags: HashMap<String, Option<String>>,
    /// (Contact id, etag) by insert key, for the keys asked.
    keys: HashMap<String, (String, Option<String>)>,
    /// Photos by contact id (the etag and hash of each landed photo, no bytes).
    photos: HashMap<String, LandedPhoto>,
}

/// What the `sent` rows of one account ask about.
#[derive(Default)]
struct Asked {
    ids: HashSet<String>,
    keys: HashSet<String>,
    photos: bool,
}

impl Asked {
    fn add(&mut self, check: &Check) {
        match check {
            Check::Insert { key } => {
                self.keys.insert(key.clone());
            }
            Check::Update { id, .. } | Check::Delete { id } => {
                self.ids.insert(id.clone());
            }
            Check::PhotoPut { .. } | Check::PhotoDelete { .. } => self.photos = true,
        }
    }
}

impl Held {
    /// Streams the account's landed contacts, keeping what `asked` names.
    async fn read(lake: &Lake, source: &str, account: &str, asked: &Asked) -> Result<Held> {
        let mut held = Held::default();
        let q = |v: &str| v.replace('\'', "''");
        let filter = format!("source = '{}' AND account = '{}'", q(source), q(account));
        lake.for_each_batch(TableKind::Contacts, Some(&filter), |batch| {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>().cloned())
                    .ok_or_else(|| Error::lake(format!("contacts has no string column {name}")))
            };
            let (ids, etags) = (column("id")?, column("etag")?);
            for i in 0..batch.num_rows() {
                if asked.ids.contains(ids.value(i)) {
                    let etag = etags.is_valid(i).then(|| etags.value(i).to_string());
                    held.etags.insert(ids.value(i).to_string(), etag);
                }
            }
            // Insert keys live in nested columns: one batch at a time as records.
            if !asked.keys.is_empty() {
                for c in crate::model::schema::batches_to_records(&[batch])? {
                    if let Some(key) = super::landed_key(&c).filter(|k| asked.keys.contains(k)) {
                        held.keys.insert(key, (c.id, c.etag));
                    }
                }
            }
            Ok(())
        })
        .await?;
        if asked.photos {
            held.photos = lake.landed_photos(source, account).await?;
        }
        Ok(held)
    }

    /// Whether the write was applied: `Some((id, new etag))` if the API holds it.
    fn applied(&self, check: &Check) -> Option<(Option<String>, Option<String>)> {
        match check {
            Check::Insert { key } => self
                .keys
                .get(key)
                .map(|(id, etag)| (Some(id.clone()), etag.clone())),
            Check::Update { id, before } => match self.etags.get(id) {
                Some(Some(now)) if now != before => Some((Some(id.clone()), Some(now.clone()))),
                _ => None,
            },
            Check::Delete { id } => {
                (!self.etags.contains_key(id)).then(|| (Some(id.clone()), None))
            }
            Check::PhotoPut { id, sha256 } => self
                .photos
                .get(id)
                .filter(|p| p.sha256 == *sha256)
                .map(|p| (Some(id.clone()), p.etag.clone())),
            Check::PhotoDelete { id } => {
                (!self.photos.contains_key(id)).then(|| (Some(id.clone()), None))
            }
        }
    }
}

/// The `op_index` of a row read without one: it cannot be addressed to be rewritten.
const NO_INDEX: i64 = i64::MIN;

/// The `sent` rows of `source`, each with its apply id (`None`: the row has none). One
/// filtered read of `writeback_results`, which a sync without such rows pays too.
async fn sent_rows_of(lake: &Lake, source: &str) -> Result<Vec<(Option<String>, ResultRow)>> {
    let filter = format!(
        "source = '{}' AND result = '{SENT}'",
        source.replace('\'', "''")
    );
    let mut sent = Vec::new();
    lake.for_each_batch(TableKind::WritebackResults, Some(&filter), |b| {
        let text = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok())
                .ok_or_else(|| {
                    Error::lake(format!("writeback_results has no readable {name} column"))
                })
        };
        let columns = [
            "apply_id", "op_index", "account", "op", "key", "id", "reason",
        ]
        .map(text)
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let get = |c: usize, i: usize| {
            let a = columns[c].as_string::<i32>();
            a.is_valid(i).then(|| a.value(i).to_string())
        };
        for i in 0..b.num_rows() {
            sent.push((
                get(0, i),
                ResultRow {
                    op_index: get(1, i).and_then(|v| v.parse().ok()).unwrap_or(NO_INDEX),
                    account: get(2, i).unwrap_or_default(),
                    op: get(3, i).unwrap_or_default(),
                    key: get(4, i),
                    id: get(5, i),
                    http_status: None,
                    result: SENT.into(),
                    reason: get(6, i),
                    new_etag: None,
                    error: None,
                },
            ));
        }
        Ok(())
    })
    .await?;
    Ok(sent)
}

/// Resolves the writes earlier applies of `source` sent but never recorded, for the
/// accounts in `synced` (`None`: every account), against what the lake holds now (the
/// caller has just synced those accounts): see the module's text. Rows of other
/// accounts are left `sent` and counted pending.
pub async fn resolve_unrecorded(
    lake: &Lake,
    source: &str,
    synced: Option<&HashSet<String>>,
) -> Result<Resolution> {
    let mut out = Resolution::default();
    let mut pending: HashMap<String, usize> = HashMap::new();
    // Per apply: the op_index values replaced, and the rows that replace them.
    let mut by_apply: HashMap<String, (Vec<i64>, Vec<ResultRow>)> = HashMap::new();
    // The rows to check, and per account what they ask about.
    let mut checks: Vec<(String, Check, ResultRow)> = Vec::new();
    let mut asked: HashMap<String, Asked> = HashMap::new();
    for (apply_id, r) in sent_rows_of(lake, source).await? {
        if synced.is_some_and(|s| !s.contains(&r.account)) {
            *pending.entry(r.account.clone()).or_default() += 1;
            continue;
        }
        let unresolved = |why: String| Unresolved {
            source: source.to_string(),
            account: r.account.clone(),
            id: r.id.clone(),
            op: r.op.clone(),
            why,
        };
        match (Check::of(&r), apply_id) {
            (Ok(check), Some(aid)) => {
                asked.entry(r.account.clone()).or_default().add(&check);
                checks.push((aid, check, r));
            }
            (Ok(_), None) => out.unknown.push(unresolved("it has no apply_id".into())),
            (Err(why), aid) => {
                out.unknown.push(unresolved(why.clone()));
                // A row without its apply id or op_index cannot be rewritten: it stays
                // `sent`, and is named again by every resolution until someone fixes it.
                if let Some(aid) = aid.filter(|_| r.op_index != NO_INDEX) {
                    let entry = by_apply.entry(aid).or_default();
                    entry.0.push(r.op_index);
                    entry.1.push(ResultRow {
                        result: UNKNOWN.into(),
                        error: Some(format!(
                            "this write was sent and its answer never recorded, and whether the API applied it cannot be told: {why}. Check the contact at the API"
                        )),
                        ..r
                    });
                }
            }
        }
    }
    let mut held: HashMap<String, Held> = HashMap::new();
    for (account, asked) in &asked {
        held.insert(
            account.clone(),
            Held::read(lake, source, account, asked).await?,
        );
    }
    for (aid, check, r) in checks {
        let entry = by_apply.entry(aid).or_default();
        entry.0.push(r.op_index);
        match held[&r.account].applied(&check) {
            Some((id, new_etag)) => {
                out.applied += 1;
                entry.1.push(ResultRow {
                    id: id.or(r.id.clone()),
                    new_etag,
                    result: Outcome::Ok.as_str().into(),
                    reason: Some(
                        "recorded by a later run: this apply was stopped after sending the write and before recording its answer, and the API holds the change"
                            .into(),
                    ),
                    ..r
                });
            }
            None => out.not_applied += 1,
        }
    }
    for (aid, (indexes, rows)) in by_apply {
        replace_still_sent(lake, source, &aid, &indexes, &rows).await?;
    }
    out.pending = pending.into_iter().collect();
    out.pending.sort();
    Ok(out)
}

/// Replaces the rows `indexes` of apply `aid` with `rows` (the resolution's), but only
/// those still `sent` in the table version the commit is made on: the apply that sent
/// them may be alive in another process and have recorded its own answers meanwhile,
/// which no resolution overwrites. A commit that loses a race checks again.
async fn replace_still_sent(
    lake: &Lake,
    source: &str,
    aid: &str,
    indexes: &[i64],
    rows: &[ResultRow],
) -> Result<()> {
    let quoted = aid.replace('\'', "''");
    crate::lake::retry::retry(
        "writeback_results",
        |_: &Error| true,
        async |_| {
            let t = lake.open_or_create(TableKind::WritebackResults).await?;
            let mut still: HashSet<i64> = HashSet::new();
            let filter = format!("apply_id = '{quoted}' AND result = '{SENT}'");
            lake.for_each_batch_in(TableKind::WritebackResults, &t, Some(&filter), |b| {
                let column = b
                    .column_by_name("op_index")
                    .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                    .ok_or_else(|| {
                        Error::corrupt(
                            "writeback_results: its op_index column is not whole numbers",
                        )
                    })?;
                still.extend(column.iter().flatten());
                Ok(())
            })
            .await?;
            let indexes: Vec<String> = indexes
                .iter()
                .filter(|i| still.contains(i))
                .map(i64::to_string)
                .collect();
            if indexes.is_empty() {
                return Ok(());
            }
            let rows: Vec<ResultRow> = rows
                .iter()
                .filter(|r| still.contains(&r.op_index))
                .cloned()
                .collect();
            let predicate = format!(
                "apply_id = '{quoted}' AND op_index IN ({})",
                indexes.join(", ")
            );
            let batch = result_batch(aid, source, &rows)?;
            write_rows(t, aid, batch, Some(&predicate)).await
        },
    )
    .await
    .map_err(|e| e.context("recording resolved writes in writeback_results"))
}

/// After a `sync`: resolves, per source the run synced, the writes earlier applies sent
/// and never recorded, for the accounts that synced without error (the others keep
/// their `sent` rows, pending). `report` is what the sync returned.
pub async fn resolve_after_sync(
    p: &Pipeline,
    report: &crate::sync::SyncReport,
) -> Result<Vec<(String, Resolution)>> {
    let lake = crate::sync::lake_of(p)?;
    let mut synced: std::collections::BTreeMap<&str, HashSet<String>> = Default::default();
    for a in &report.accounts {
        let ok = synced.entry(a.source.as_str()).or_default();
        if a.error.is_none() {
            ok.insert(a.account.clone());
        }
    }
    let mut out = Vec::new();
    for (source, ok) in synced {
        let r = resolve_unrecorded(&lake, source, Some(&ok)).await?;
        if !r.is_empty() {
            r.log(source);
            out.push((source.to_string(), r));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(op: &str, id: Option<&str>, reason: Option<&str>) -> ResultRow {
        ResultRow {
            op_index: 7,
            account: "example.com".into(),
            op: op.into(),
            key: Some("k1".into()),
            id: id.map(str::to_string),
            http_status: None,
            result: SENT.into(),
            reason: reason.map(str::to_string),
            new_etag: None,
            error: None,
        }
    }

    fn held() -> Held {
        let photo = |sha: &str| LandedPhoto {
            etag: Some("p2".into()),
            sha256: sha.into(),
        };
        Held {
            etags: HashMap::from([
                ("moved".into(), Some("e2".into())),
                ("still".into(), Some("e1".into())),
            ]),
            keys: HashMap::from([("k1".into(), ("new".into(), Some("e9".into())))]),
            photos: HashMap::from([("moved".into(), photo(&"a".repeat(64)))]),
        }
    }

    /// The (op_index, result) rows of `writeback_results`.
    async fn results(lake: &Lake) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        lake.for_each_batch(TableKind::WritebackResults, None, |b| {
            let idx = b
                .column_by_name("op_index")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone();
            let res = b
                .column_by_name("result")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for i in 0..b.num_rows() {
                out.push((idx.value(i), res.value(i).to_string()));
            }
            Ok(())
        })
        .await
        .unwrap();
        out.sort();
        out
    }

    /// A resolution never overwrites what the apply that sent the writes recorded itself
    /// meanwhile (it was alive in another process): only rows still `sent` are replaced.
    #[tokio::test]
    async fn a_resolution_replaces_only_rows_still_sent() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let lake = Lake::new(url, HashMap::new());
        let row = |i: i64, result: &str| ResultRow {
            op_index: i,
            result: result.into(),
            ..sent("delete", Some("gone"), None)
        };
        let aid = "20261207T000000Z-live";
        let sent_rows = [row(0, SENT), row(1, SENT), row(2, SENT)];
        super::super::record::record_rows(&lake, aid, "s", &sent_rows)
            .await
            .unwrap();
        // The live apply records its answers to 0 and 1 after the resolution read them.
        let answers = [row(0, "conflict"), row(1, "ok")];
        crate::plan::record::replace_group(&lake, aid, "s", &answers, 0, 2)
            .await
            .unwrap();
        // The resolution, from what it read before: 0 and 2 applied, 1 not.
        replace_still_sent(&lake, "s", aid, &[0, 1, 2], &[row(0, "ok"), row(2, "ok")])
            .await
            .unwrap();
        assert_eq!(
            results(&lake).await,
            [(0, "conflict".into()), (1, "ok".into()), (2, "ok".into())]
        );
    }

    fn applied(r: &ResultRow) -> std::result::Result<bool, String> {
        Check::of(r).map(|c| held().applied(&c).is_some())
    }

    #[test]
    fn a_write_is_applied_only_when_the_api_holds_it() {
        let update = |id, before| sent("update", Some(id), Some(before));
        assert_eq!(
            applied(&update("moved", r#"{"etag_before":"e1"}"#)),
            Ok(true)
        );
        assert_eq!(
            applied(&update("still", r#"{"etag_before":"e1"}"#)),
            Ok(false)
        );
        assert_eq!(
            applied(&update("gone", r#"{"etag_before":"e1"}"#)),
            Ok(false)
        );
        assert_eq!(applied(&sent("insert", None, None)), Ok(true));
        assert_eq!(applied(&sent("delete", Some("gone"), None)), Ok(true));
        assert_eq!(applied(&sent("delete", Some("still"), None)), Ok(false));
        let put = |sha: &str| format!(r#"{{"etag_before":"p1","sha256":"{sha}"}}"#);
        let photo = |id, reason: &str| sent("photo_put", Some(id), Some(reason));
        assert_eq!(applied(&photo("moved", &put(&"a".repeat(64)))), Ok(true));
        assert_eq!(applied(&photo("moved", &put(&"b".repeat(64)))), Ok(false));
        assert_eq!(applied(&photo("still", &put(&"a".repeat(64)))), Ok(false));
        assert_eq!(
            applied(&sent("photo_delete", Some("still"), None)),
            Ok(true)
        );
        assert_eq!(
            applied(&sent("photo_delete", Some("moved"), None)),
            Ok(false)
        );
    }

    /// Rows edited by hand are never counted applied: each is refused with what is
    /// wrong. (A lost `etag_before` once made every update look applied.)
    #[test]
    fn rows_it_cannot_interpret_are_refused_with_the_reason() {
        let refused = |r: ResultRow, words: &str| match Check::of(&r) {
            Err(why) => assert!(why.contains(words), "{why}"),
            Ok(_) => panic!("accepted {:?} {:?}", r.op, r.reason),
        };
        refused(sent("update", Some("moved"), Some("{}")), "etag_before");
        refused(sent("update", Some("moved"), None), "etag_before");
        refused(
            sent("update", Some("moved"), Some(r#"{"etag_before":null}"#)),
            "etag_before",
        );
        refused(sent("update", Some("moved"), Some("not json")), "JSON");
        refused(sent("update", None, Some(r#"{"etag_before":"e1"}"#)), "id");
        refused(sent("delete", Some(""), None), "id");
        refused(sent("rename", Some("moved"), None), "\"rename\"");
        refused(
            sent("photo_put", Some("moved"), Some(r#"{"sha256":"xyz"}"#)),
            "sha256",
        );
        let mut no_key = sent("insert", None, None);
        no_key.key = None;
        refused(no_key, "insert key");
        let mut no_index = sent("delete", Some("gone"), None);
        no_index.op_index = -1;
        refused(no_index, "op_index");
        let mut no_account = sent("delete", Some("gone"), None);
        no_account.account = String::new();
        refused(no_account, "account");
    }
}
