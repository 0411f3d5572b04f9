//! Saved plans: `plan --out FILE` writes a plan as Parquet, one row per operation (and per
//! invalid desired row), which `query` reads like any file (`FROM 'plan.parquet'`) and
//! `apply --plan FILE` applies exactly, after checking that nothing it touches moved.
//!
//! Each row holds what its operation needs (the desired contact as JSON, the key, the etag
//! the write is conditional on) and what the plan saw of the landed contact: its etag and
//! a fingerprint of its writable columns. The file's key-value metadata
//! (`contacts-etl.plan`) holds the plan's source, mode, lake and managed columns, and a
//! digest of all that and every row: a plan edited after it was written is refused, and
//! so is an insert key or an operation key the tool does not make.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;

use super::review::{changes, who};
use super::{Action, Invalid, Landed, Mode, Op, Plan, WRITABLE, as_json, field};
use crate::error::{Context as _, Error, Kind, Result};
use crate::model::schema::ContactRecord;

/// The key of the plan's description in the Parquet file's key-value metadata.
pub const META_KEY: &str = "contacts-etl.plan";

/// What a saved plan says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanMeta {
    /// The file layout's version.
    pub version: u32,
    pub source: String,
    /// `upsert`, `update` or `mirror`.
    pub mode: String,
    /// The lake the plan was computed against.
    pub lake: String,
    pub managed: Vec<String>,
    pub scope: Vec<String>,
    pub landed: usize,
    pub unchanged: usize,
    pub already_applied: usize,
    /// When the plan was made (RFC 3339).
    pub created: String,
    /// SHA-256 of the description (without this field) and every row, as [`read`] reads
    /// them back: an edited plan no longer matches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The columns of a saved plan.
pub fn plan_schema() -> SchemaRef {
    let s = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new("op_index", DataType::Int64, false),
        s("kind", false),
        s("source", false),
        s("account", false),
        s("id", true),
        s("key", true),
        s("etag", true),
        s("landed_etag", true),
        s("landed_fingerprint", true),
        s("who", true),
        Field::new(
            "changed",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        s("before", true),
        s("after", true),
        s("desired", true),
        Field::new("row", DataType::Int64, true),
        s("reason", true),
    ]))
}

/// A fingerprint of what a landed contact holds in its writable columns (the stamped
/// insert key left out): equal fingerprints, equal contacts for a write-back.
pub fn fingerprint(r: &ContactRecord) -> String {
    let v = as_json(r);
    let mut h = sha2::Sha256::new();
    for c in WRITABLE {
        h.update(field(&v, c).to_string().as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The name of a mode in a saved plan.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Upsert => "upsert",
        Mode::Update => "update",
        Mode::Mirror => "mirror",
    }
}

/// One row of a saved plan, as read back.
#[derive(Debug, Clone, Default, Serialize)]
struct Row {
    kind: String,
    source: String,
    account: String,
    id: Option<String>,
    key: Option<String>,
    etag: Option<String>,
    landed_etag: Option<String>,
    landed_fingerprint: Option<String>,
    who: Option<String>,
    changed: Vec<String>,
    before: Option<String>,
    after: Option<String>,
    desired: Option<String>,
    row: Option<i64>,
    reason: Option<String>,
}

/// The digest of a plan's description (its own digest left out) and rows, taken a row at
/// a time.
struct PlanDigest(sha2::Sha256);

impl PlanDigest {
    fn new(meta: &PlanMeta) -> Result<PlanDigest> {
        let mut h = sha2::Sha256::new();
        let meta = PlanMeta {
            digest: None,
            ..meta.clone()
        };
        h.update(
            serde_json::to_string(&meta)
                .map_err(as_json_error)?
                .as_bytes(),
        );
        Ok(PlanDigest(h))
    }

    fn row(&mut self, r: &Row) -> Result<()> {
        self.0.update(b"\n");
        self.0
            .update(serde_json::to_string(r).map_err(as_json_error)?.as_bytes());
        Ok(())
    }

    fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

fn as_json_error(e: serde_json::Error) -> Error {
    Error::with_source(Kind::Other, "a saved plan as JSON", e)
}

pub use crate::model::write::is_insert_key;

/// The plan as one record batch of [`plan_schema`].
pub fn to_batch(plan: &Plan) -> Result<RecordBatch> {
    let n = plan.ops.len() + plan.invalid.len();
    let mut kind = Vec::with_capacity(n);
    let mut account = Vec::with_capacity(n);
    let (mut id, mut key, mut etag, mut landed_etag, mut fp, mut whom) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut before, mut after, mut desired, mut row, mut reason) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut changed = ListBuilder::new(StringBuilder::new());
    for op in &plan.ops {
        kind.push(op.kind().as_str().to_string());
        account.push(op.account.clone());
        id.push(op.id().map(str::to_string));
        key.push(Some(op.key.clone()));
        let (cond, landed) = match &op.action {
            Action::Insert { .. } => (None, None),
            Action::Update { etag, landed, .. } | Action::Delete { etag, landed, .. } => {
                (etag.clone(), Some(landed))
            }
        };
        etag.push(cond);
        landed_etag.push(landed.and_then(|l| l.etag.clone()));
        fp.push(landed.map(fingerprint));
        whom.push(
            match op.kind() {
                super::OpKind::Insert => op.desired(),
                _ => op.landed(),
            }
            .map(who)
            .filter(|w| !w.is_empty()),
        );
        let ch = changes(op, &plan.managed);
        let (b, a): (
            serde_json::Map<String, Value>,
            serde_json::Map<String, Value>,
        ) = (
            ch.iter()
                .map(|c| (c.field.clone(), c.before.clone()))
                .collect(),
            ch.iter()
                .map(|c| (c.field.clone(), c.after.clone()))
                .collect(),
        );
        let is_update = matches!(op.action, Action::Update { .. });
        for c in op.changed() {
            changed.values().append_value(c);
        }
        changed.append(is_update);
        before.push(is_update.then(|| Value::Object(b).to_string()));
        after.push((!a.is_empty()).then(|| Value::Object(a).to_string()));
        desired.push(
            op.desired()
                .map(serde_json::to_string)
                .transpose()
                .context(Kind::Other, "a desired row as JSON")?,
        );
        row.push(None);
        reason.push(None);
    }
    for inv in &plan.invalid {
        kind.push("invalid".to_string());
        account.push(inv.account.clone());
        id.push(inv.id.clone());
        key.push(None);
        etag.push(None);
        landed_etag.push(None);
        fp.push(None);
        whom.push(None);
        changed.append(false);
        before.push(None);
        after.push(None);
        desired.push(None);
        row.push(Some(inv.row as i64 + 1));
        reason.push(Some(inv.reason.clone()));
    }
    let strings = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    Ok(RecordBatch::try_new(
        plan_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(StringArray::from(kind)),
            Arc::new(StringArray::from(vec![plan.source.as_str(); n])),
            Arc::new(StringArray::from(account)),
            strings(id),
            strings(key),
            strings(etag),
            strings(landed_etag),
            strings(fp),
            strings(whom),
            Arc::new(changed.finish()),
            strings(before),
            strings(after),
            strings(desired),
            Arc::new(Int64Array::from(row)),
            strings(reason),
        ],
    )?)
}

/// Writes `plan` (of `mode`, against `lake`) to a Parquet file at `path`, creating its
/// folder. The file is written whole, then renamed into place.
pub fn write(plan: &Plan, mode: Mode, lake: &str, path: &Path) -> Result<()> {
    let meta = PlanMeta {
        version: 1,
        source: plan.source.clone(),
        mode: mode_name(mode).into(),
        lake: lake.into(),
        managed: plan.managed.clone(),
        scope: plan.scope.clone(),
        landed: plan.landed,
        unchanged: plan.unchanged,
        already_applied: plan.already_applied,
        created: chrono::Utc::now().to_rfc3339(),
        digest: None,
    };
    let batch = to_batch(plan)?;
    let mut meta = meta;
    // The digest reads the rows back as `read` will, a slice at a time (not a second
    // copy of the whole plan).
    let mut d = PlanDigest::new(&meta)?;
    let step = super::desired::BATCH_ROWS;
    for start in (0..batch.num_rows()).step_by(step) {
        let len = step.min(batch.num_rows() - start);
        for r in rows_of(&batch.slice(start, len), &Error::other)? {
            d.row(&r)?;
        }
    }
    meta.digest = Some(d.finish());
    let props = parquet::file::properties::WriterProperties::builder()
        // The desired rows' JSON repeats itself: compressed, a plan of 10,000 updates
        // shrinks several times over.
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            META_KEY.to_string(),
            serde_json::to_string(&meta)
                .context(Kind::Other, "a saved plan's description as JSON")?,
        )]))
        .build();
    let mut buf = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
        w.write(&batch)?;
        w.close()?;
    }
    let bad = |e: std::io::Error| {
        Error::with_source(Kind::Config, format!("--out {}", path.display()), e)
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bad)?;
    }
    let tmp = path.with_extension("parquet.tmp");
    std::fs::write(&tmp, buf).map_err(bad)?;
    std::fs::rename(&tmp, path).map_err(bad)
}

/// A saved plan as read back: its description and rows.
pub struct Saved {
    pub meta: PlanMeta,
    rows: Vec<Row>,
}

/// Reads a plan written by [`write`]. A file that is not one is a configuration error.
pub fn read(path: &Path) -> Result<Saved> {
    let what = |m: String| Error::config(format!("--plan {}: {m}", path.display()));
    let shown = path.display();
    let file =
        std::fs::File::open(path).with_context(Kind::Config, || format!("--plan {shown}"))?;
    let builder = crate::arrow_util::caught(
        || parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file),
        parquet::errors::ParquetError::General,
    )
    .with_context(Kind::Config, || {
        format!("--plan {shown}: not a Parquet file")
    })?;
    let meta = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == META_KEY))
        .and_then(|k| k.value.clone())
        .ok_or_else(|| what("not a plan (write one with `plan --out FILE`)".into()))?;
    let meta: PlanMeta = serde_json::from_str(&meta)
        .with_context(Kind::Config, || format!("--plan {shown}: unreadable plan"))?;
    if meta.version != 1 {
        return Err(what(format!(
            "plan layout version {} is not one this contacts-etl reads (1)",
            meta.version
        )));
    }
    let Some(expected) = meta.digest.clone() else {
        return Err(what(
            "the plan carries no digest, so it cannot be checked; make and review a new plan with `plan --out`".into(),
        ));
    };
    // A plan is held whole to be applied: one past the bound is refused before its rows
    // are read (the count its footer claims), and as they are read (what they hold).
    // Compressed, a million rows fit in a hundred kilobytes.
    let max = super::max_plan_rows()?;
    let too_many = || {
        super::too_many_rows("the plan holds", &meta.source, max).context(format!("--plan {shown}"))
    };
    if builder.metadata().file_metadata().num_rows() > max as i64 {
        return Err(too_many());
    }
    let mut rows = Vec::new();
    let mut d = PlanDigest::new(&meta)?;
    let batches = crate::arrow_util::caught(
        || builder.with_batch_size(super::desired::BATCH_ROWS).build(),
        parquet::errors::ParquetError::General,
    )
    .with_context(Kind::Config, || format!("--plan {shown}: unreadable rows"))?;
    for b in crate::arrow_util::CaughtBatches::new(batches) {
        let b = b.with_context(Kind::Config, || format!("--plan {shown}: unreadable rows"))?;
        for r in rows_of(&b, &what)? {
            if rows.len() == max {
                return Err(too_many());
            }
            d.row(&r)?;
            rows.push(r);
        }
    }
    if expected != d.finish() {
        return Err(what(
            "the plan was changed after `plan --out` wrote it (its digest does not match its contents), so it is not what was reviewed; nothing was written. Make and review a new plan".into(),
        ));
    }
    Ok(Saved { meta, rows })
}

/// The rows of one batch of a saved plan; a column missing or of another type is an error
/// naming it (through `what`).
fn rows_of(b: &RecordBatch, what: &dyn Fn(String) -> Error) -> Result<Vec<Row>> {
    let found = |n: &str| {
        b.column_by_name(n)
            .map(|c| format!("{}", c.data_type()))
            .unwrap_or_else(|| "no such column".into())
    };
    let col = |n: &str| -> Result<StringArray> {
        b.column_by_name(n)
            .and_then(|c| c.as_string_opt::<i32>().cloned())
            .ok_or_else(|| what(format!("column {n}: wanted text, found {}", found(n))))
    };
    let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let (kind, source, account) = (col("kind")?, col("source")?, col("account")?);
    let (id, key, who) = (col("id")?, col("key")?, col("who")?);
    let (etag, le, fp) = (
        col("etag")?,
        col("landed_etag")?,
        col("landed_fingerprint")?,
    );
    let (before, after) = (col("before")?, col("after")?);
    let (desired, reason) = (col("desired")?, col("reason")?);
    let changed = b
        .column_by_name("changed")
        .and_then(|c| c.as_list_opt::<i32>().cloned())
        .ok_or_else(|| {
            what(format!(
                "column changed: wanted a list of text, found {}",
                found("changed")
            ))
        })?;
    if changed.value_type() != DataType::Utf8 {
        return Err(what(format!(
            "column changed: wanted a list of text, found {}",
            found("changed")
        )));
    }
    let row = b
        .column_by_name("row")
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>().cloned())
        .ok_or_else(|| {
            what(format!(
                "column row: wanted a 64-bit integer, found {}",
                found("row")
            ))
        })?;
    let mut rows = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let ch = if changed.is_valid(i) {
            let v = changed.value(i);
            let s = v.as_string_opt::<i32>().ok_or_else(|| {
                what(format!(
                    "column changed: wanted a list of text, found {}",
                    v.data_type()
                ))
            })?;
            s.iter().flatten().map(str::to_string).collect()
        } else {
            Vec::new()
        };
        rows.push(Row {
            kind: kind.value(i).to_string(),
            source: source.value(i).to_string(),
            account: account.value(i).to_string(),
            id: opt(&id, i),
            key: opt(&key, i),
            etag: opt(&etag, i),
            landed_etag: opt(&le, i),
            landed_fingerprint: opt(&fp, i),
            who: opt(&who, i),
            changed: ch,
            before: opt(&before, i),
            after: opt(&after, i),
            desired: opt(&desired, i),
            row: row.is_valid(i).then(|| row.value(i)),
            reason: opt(&reason, i),
        });
    }
    Ok(rows)
}

impl Saved {
    /// The mode the plan was made in.
    pub fn mode(&self) -> Result<Mode> {
        self.meta.mode.parse()
    }

    /// The (account, id) of every update and delete: the landed contacts to re-read.
    pub fn touched(&self) -> HashMap<String, std::collections::HashSet<String>> {
        let mut w: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        for r in &self.rows {
            if let Some(id) = &r.id
                && (r.kind == "update" || r.kind == "delete")
            {
                w.entry(r.account.clone()).or_default().insert(id.clone());
            }
        }
        w
    }

    /// The plan again, its updates and deletes on the contacts as `landed` holds them now,
    /// or an error (exit 2) naming every operation whose contact moved since the plan was
    /// made: gone, another etag, other values, or (an insert) its key already landed.
    pub fn replan(&self, landed: &Landed) -> Result<Plan> {
        let by_id: HashMap<(&str, &str), &ContactRecord> = landed
            .rows
            .iter()
            .map(|r| ((r.account.as_str(), r.id.as_str()), r))
            .collect();
        let mut plan = Plan {
            source: self.meta.source.clone(),
            managed: self.meta.managed.clone(),
            scope: self.meta.scope.clone(),
            // The base of `--max-delete P%` is what the plan counted when it was reviewed.
            landed: self.meta.landed,
            unchanged: self.meta.unchanged,
            already_applied: self.meta.already_applied,
            ..Default::default()
        };
        let mut moved: Vec<String> = Vec::new();
        for r in &self.rows {
            match replan_row(r, plan.ops.len(), landed, &by_id)? {
                Replanned::Invalid(inv) => plan.invalid.push(inv),
                Replanned::Op(op) => plan.ops.push(*op),
                Replanned::Moved(what) => moved.push(what),
            }
        }
        if !moved.is_empty() {
            return Err(refuse_moved(moved));
        }
        Ok(plan)
    }
}

/// What a saved plan's row is against the landed contacts now.
enum Replanned {
    /// An invalid desired row, as the plan showed it.
    Invalid(Invalid),
    /// An operation, still what was reviewed (boxed: an operation holds two contacts).
    Op(Box<Op>),
    /// The contact it touches moved since the plan was made: why.
    Moved(String),
}

/// An error for a saved plan whose file does not hold what `plan --out` writes.
fn damaged(what: String) -> Error {
    Error::config(format!("the saved plan is damaged: {what}"))
}

/// Row `r` of a saved plan checked against the landed contacts (`by_id`, and the insert
/// keys of `landed`), as operation `index` if it is one.
fn replan_row(
    r: &Row,
    index: usize,
    landed: &Landed,
    by_id: &HashMap<(&str, &str), &ContactRecord>,
) -> Result<Replanned> {
    let account = r.account.clone();
    if r.kind == "invalid" {
        return Ok(Replanned::Invalid(Invalid {
            row: r.row.unwrap_or(1).max(1) as usize - 1,
            account,
            id: r.id.clone(),
            reason: r.reason.clone().unwrap_or_default(),
        }));
    }
    let key = r
        .key
        .clone()
        .ok_or_else(|| damaged(format!("{} {account} has no key", r.kind)))?;
    if r.kind == "insert" {
        if !is_insert_key(&key) {
            return Err(damaged(format!(
                "insert {account}: key {key:?} is not one contacts-etl makes (cetl- and 20 hex digits)"
            )));
        }
        if landed.keys.contains(&key) {
            return Ok(Replanned::Moved(format!(
                "insert {account}/(new) {key}: a contact with its key exists now (was this plan applied already?)"
            )));
        }
        let desired = desired_of(r)?;
        return Ok(Replanned::Op(Box::new(Op {
            index,
            account,
            key,
            action: Action::Insert { desired },
        })));
    }
    let id =
        r.id.clone()
            .ok_or_else(|| damaged(format!("{} {account} has no id", r.kind)))?;
    if key != format!("{account}/{id}") {
        return Err(damaged(format!(
            "{} {account}/{id}: key {key:?} is not the operation's (account/id)",
            r.kind
        )));
    }
    let Some(now) = by_id.get(&(account.as_str(), id.as_str())).copied() else {
        return Ok(Replanned::Moved(format!(
            "{} {account}/{id}: deleted since the plan",
            r.kind
        )));
    };
    if let Some(why) = moved_since(r, now) {
        return Ok(Replanned::Moved(format!(
            "{} {account}/{id}: {why}",
            r.kind
        )));
    }
    let action = match r.kind.as_str() {
        "update" => Action::Update {
            id,
            etag: r.etag.clone(),
            desired: desired_of(r)?,
            landed: now.clone(),
            changed: r.changed.clone(),
        },
        "delete" => Action::Delete {
            id,
            etag: r.etag.clone(),
            landed: now.clone(),
        },
        k => return Err(damaged(format!("unknown kind {k:?}"))),
    };
    Ok(Replanned::Op(Box::new(Op {
        index,
        account,
        key,
        action,
    })))
}

/// How the landed contact `now` moved since the plan saw it (its etag, or its values),
/// if it did.
fn moved_since(r: &Row, now: &ContactRecord) -> Option<String> {
    if now.etag != r.landed_etag {
        return Some(format!(
            "etag {} → {}",
            r.landed_etag.as_deref().unwrap_or("(none)"),
            now.etag.as_deref().unwrap_or("(none)")
        ));
    }
    if r.landed_fingerprint.as_deref() != Some(fingerprint(now).as_str()) {
        return Some("its values changed".into());
    }
    None
}

/// The desired contact of an insert or update row.
fn desired_of(r: &Row) -> Result<ContactRecord> {
    let text = r
        .desired
        .as_deref()
        .ok_or_else(|| damaged(format!("{} {} has no desired row", r.kind, r.account)))?;
    serde_json::from_str(text).with_context(Kind::Config, || {
        format!(
            "the saved plan is damaged: the desired row of {} {}",
            r.kind, r.account
        )
    })
}

/// The refusal of a saved plan whose contacts moved, naming the first 20.
fn refuse_moved(moved: Vec<String>) -> Error {
    let n = moved.len();
    let mut list: Vec<String> = moved.into_iter().take(20).collect();
    if n > 20 {
        list.push(format!("… and {} more", n - 20));
    }
    Error::config(format!(
        "refusing to start: {n} contact(s) of the saved plan changed since it was made, so it is not what was reviewed; nothing was written. Make and review a new plan.\n  {}",
        list.join("\n  ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::Email;
    use crate::plan::{Desired, OpKind, diff};
    use crate::providers::google::rules::GoogleRules;

    fn rec(id: &str, name: &str) -> ContactRecord {
        ContactRecord {
            source: "s".into(),
            account: "example.com".into(),
            id: id.into(),
            etag: Some(format!("\"{id}-1\"")),
            display_name: Some(name.into()),
            emails: vec![Email {
                address: Some(format!("{id}@x.org")),
                kind: Some("work".into()),
                primary: Some(false),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn landed() -> Vec<ContactRecord> {
        vec![rec("a", "Ann"), rec("b", "Bob"), rec("c", "Cy")]
    }

    fn a_plan() -> Plan {
        let mut bad = rec("", "Bad");
        bad.emails[0].address = Some("nope".into());
        let desired = Desired {
            rows: vec![rec("a", "Ann"), rec("b", "Robert"), rec("", "Neu"), bad],
            columns: ["id", "account", "display_name", "emails"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        diff(
            "s",
            &GoogleRules,
            Some("example.com"),
            desired,
            &Landed::from_rows(landed()),
            Mode::Mirror,
        )
    }

    #[test]
    fn a_saved_plan_reads_back_as_the_same_operations() {
        let plan = a_plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/plan.parquet");
        write(&plan, Mode::Mirror, "file:///lake", &path).unwrap();
        let saved = read(&path).unwrap();
        assert_eq!(saved.meta.mode, "mirror");
        assert_eq!(saved.meta.lake, "file:///lake");
        assert_eq!(saved.meta.managed, plan.managed);
        let again = saved.replan(&Landed::from_rows(landed())).unwrap();
        let kinds = |p: &Plan| {
            p.ops
                .iter()
                .map(|o| {
                    (
                        o.kind(),
                        o.account.clone(),
                        o.id().map(str::to_string),
                        o.key.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&again), kinds(&plan));
        assert_eq!(again.invalid.len(), 1);
        assert_eq!(again.invalid[0].row, plan.invalid[0].row);
        let upd = again
            .ops
            .iter()
            .find(|o| o.kind() == OpKind::Update)
            .unwrap();
        assert_eq!(
            upd.desired().unwrap().display_name.as_deref(),
            Some("Robert")
        );
        assert_eq!(upd.changed(), ["display_name".to_string()]);
        let ins = again
            .ops
            .iter()
            .find(|o| o.kind() == OpKind::Insert)
            .unwrap();
        assert_eq!(
            ins.desired(),
            plan.ops
                .iter()
                .find(|o| o.kind() == OpKind::Insert)
                .unwrap()
                .desired()
        );
        // A file that is no plan is refused with exit 2.
        let other = dir.path().join("x.parquet");
        std::fs::write(&other, b"PAR1 no").unwrap();
        assert_eq!(read(&other).err().unwrap().exit_code(), 2);
    }

    #[test]
    fn a_saved_plan_whose_contacts_moved_is_refused_naming_them() {
        let plan = a_plan();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.parquet");
        write(&plan, Mode::Mirror, "file:///lake", &path).unwrap();
        let saved = read(&path).unwrap();
        // b (updated) has a new etag, c (deleted) has other values under the same etag.
        let mut now = landed();
        now[1].etag = Some("\"b-2\"".into());
        now[2].notes = Some("changed".into());
        let e = saved.replan(&Landed::from_rows(now)).unwrap_err();
        let m = e.to_string();
        assert_eq!(e.exit_code(), 2);
        assert!(m.contains("2 contact(s)"), "{m}");
        assert!(
            m.contains("update example.com/b: etag \"b-1\" → \"b-2\""),
            "{m}"
        );
        assert!(
            m.contains("delete example.com/c: its values changed"),
            "{m}"
        );
        // Gone, and an insert whose key landed meanwhile.
        let mut now = landed();
        now.remove(1);
        let ins = plan
            .ops
            .iter()
            .find(|o| o.kind() == OpKind::Insert)
            .unwrap();
        let mut created = rec("n", "Neu");
        created
            .extended_properties
            .push(crate::plan::key_property(&ins.key));
        now.push(created);
        let m = saved
            .replan(&Landed::from_rows(now))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("update example.com/b: deleted since the plan"),
            "{m}"
        );
        assert!(m.contains("insert example.com/(new)"), "{m}");
    }

    /// A plan whose insert key is not one the tool makes, or whose update key is not its
    /// account and id, is refused even with a digest that matches (written so).
    #[test]
    fn keys_the_tool_does_not_make_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for forged in [
            "../../../victim/contacts/owned",
            "cetl-0123456789abcdef012/",
            "cetl-%2e%2e",
            "cetl-0123456789ABCDEF0123",
            "cetl-0123456789abcdef01234",
        ] {
            let mut plan = a_plan();
            let ins = plan
                .ops
                .iter_mut()
                .find(|o| o.kind() == OpKind::Insert)
                .unwrap();
            ins.key = forged.into();
            let path = dir.path().join("forged.parquet");
            write(&plan, Mode::Mirror, "file:///lake", &path).unwrap();
            let e = read(&path)
                .unwrap()
                .replan(&Landed::from_rows(landed()))
                .unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("not one contacts-etl makes"), "{e}");
        }
        assert!(is_insert_key("cetl-0123456789abcdef0123"));
        let mut plan = a_plan();
        let upd = plan
            .ops
            .iter_mut()
            .find(|o| o.kind() == OpKind::Update)
            .unwrap();
        upd.key = "example.com/a".into();
        let path = dir.path().join("forged-update.parquet");
        write(&plan, Mode::Mirror, "file:///lake", &path).unwrap();
        let e = read(&path)
            .unwrap()
            .replan(&Landed::from_rows(landed()))
            .unwrap_err();
        assert!(e.to_string().contains("is not the operation's"), "{e}");
    }
}
