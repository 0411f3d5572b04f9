//! The lake: Delta tables under one URL (`file://`, `s3://`, or a path), partitioned by
//! `source` and `account`.
//!
//! | table | what |
//! |---|---|
//! | `contacts` | current state: one row per live contact |
//! | `contact_changes` | append-only log of every upsert and delete observed, per run |
//! | `sync_runs` | one row per source/account per run, with the cursor it advanced to |
//! | `writeback_results` | one row per reverse-sink operation |
//! | `contact_photos` | the photo bytes of contacts that have one (`photos = true`) |
//!
//! ## How a run commits, and how recovery works
//!
//! Per account, a run is numbered `seq` (1, 2, …). Its changed rows are written to files
//! first ([`Lake::prepare_run`]); runs of many accounts then land together
//! ([`Lake::commit_runs`], driven by the [`committer`]): **one** Delta commit to
//! `contact_changes` holds every account's files, its application transaction
//! `("<source>/<account>", seq)` (Delta's own fencing: a second writer with the same seq
//! fails) and, in the commit metadata (`app.runs`), its cursor, run id and figures. That
//! commit is the moment the runs happen: each account's data and cursor land together or
//! not at all.
//!
//! Then `contacts` is brought up to date (one commit for the group: first loads append,
//! later runs replace their changed and deleted ids, see [`keyed`]) and the group's
//! `sync_runs` rows are appended with the same transactions and cursors. If the process
//! dies between these steps, the next run finds `sync_runs` behind `contact_changes` and
//! replays every such run in one pass first ([`Lake::recover_runs`]): that step is
//! idempotent, so replaying it twice is harmless. `contacts` records the runs it holds as
//! its own application transactions, so a `contacts` that lost a commit is found behind
//! `contact_changes` the same way and brought up to date. The cursor for the next extract is read
//! from `sync_runs` (data, kept forever).

pub(crate) mod checksum;
mod commit;
pub mod committer;
mod compact;
pub mod dv;
mod imds;
mod index;
mod keyed;
pub mod lease;
mod photos;
mod provider;
pub mod retry;
mod run_files;
pub mod state;
mod tables;

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;
use deltalake::protocol::SaveMode;
use deltalake::writer::RecordBatchWriter;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Context, Error, Kind, Result};
use crate::model::schema::ContactRecord;
pub use commit::{CommitMetrics, CommitRuns, FailedRun, PreparedRun, RunFailure, RunStates};
pub use keyed::KeyedOutcome;
pub use photos::{FetchedPhoto, LandedPhoto, PhotoWant, PhotoWork, photo_sha256};
pub use provider::session_context;
pub use tables::{TableKind, contact_photos_schema, sync_runs_schema, writeback_results_schema};

/// Figures of one account's run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunFigures {
    pub run_id: String,
    pub mode: String,
    pub started_at_us: i64,
    pub finished_at_us: i64,
    pub upserted: i64,
    pub deleted: i64,
    pub pages: i64,
    pub requests: i64,
    pub retries: i64,
    pub bytes: i64,
    pub status: String,
    pub error: Option<String>,
}

/// What a committed run did.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    /// The run's number for this account.
    pub seq: i64,
    /// Rows upserted into `contacts`.
    pub upserted: i64,
    /// Rows deleted from `contacts`.
    pub deleted: i64,
}

/// The state of one account as the lake records it.
#[derive(Debug, Clone, Default)]
pub struct AccountState {
    /// The last completed run's seq (0 if none).
    pub seq: i64,
    /// The cursor to continue from.
    pub cursor: Option<String>,
}

/// A lake at a URL.
#[derive(Debug, Clone)]
pub struct Lake {
    url: url::Url,
    options: HashMap<String, String>,
    /// `lake.deletion_vectors`: `None` = on for new tables, as the table is for old ones.
    deletion_vectors: Option<bool>,
    /// The newest state of each table this process has seen. Opening a table again brings
    /// that state up to date (a listing of the log past it) instead of loading it anew:
    /// a run opens its tables about ten times, and a load costs several times an update.
    opened: std::sync::Arc<std::sync::Mutex<HashMap<TableKind, DeltaTable>>>,
    /// Transactions and partition files of the tables, read once per version.
    indexes: std::sync::Arc<index::Indexes>,
    /// The store at the lake's root (for copies between tables), made when first needed.
    root: std::sync::Arc<
        std::sync::OnceLock<(
            std::sync::Arc<dyn object_store::ObjectStore>,
            object_store::path::Path,
        )>,
    >,
}

/// Rows per Parquet row group of streamed writes.
const ROW_GROUP_ROWS: usize = 8192;

/// Leaf columns (dotted paths) written without a dictionary: a value per contact that
/// repeats rarely or never (ids, etags, times, whole texts, the list items that are one
/// contact's own: addresses, links, blobs). A dictionary is tried on each row group and
/// given up only once full, so hashing and interning those values was spent for nothing
/// (3 % of a dense full sync's CPU).
const NO_DICTIONARY: &[&str] = &[
    "id",
    "etag",
    "updated",
    "raw",
    "native",
    "notes",
    "photo.href",
    "emails.list.element.address",
    "phones.list.element.number",
    "phones.list.element.uri",
    "addresses.list.element.street",
    "addresses.list.element.postcode",
    "addresses.list.element.formatted",
    "ims.list.element.address",
    "websites.list.element.href",
    "extended_properties.list.element.value",
    "extended_properties.list.element.xml",
];

/// A Parquet column path from its dotted form.
fn leaf_path(dotted: &str) -> deltalake::parquet::schema::types::ColumnPath {
    deltalake::parquet::schema::types::ColumnPath::new(
        dotted.split('.').map(str::to_string).collect(),
    )
}

/// Bytes (as encoded) at most per Parquet row group of streamed writes: rows as large as
/// photos fill one long before [`ROW_GROUP_ROWS`], and a reader holds a row group whole.
const ROW_GROUP_BYTES: usize = 32 << 20;
/// Bytes of encoded values at which the Parquet encoder closes a data page (see
/// `streaming_writer`).
const DATA_PAGE_BYTES: usize = 512 << 10;
/// Streamed writes roll to a new file past this size.
const TARGET_FILE_BYTES: u64 = 64 << 20;

/// Commits data files written by a [`RecordBatchWriter`] as one append (a commit with no
/// files still records the transaction and metadata). Returns the table as of the commit.
async fn commit_files(
    table: &DeltaTable,
    files: &[deltalake::kernel::Add],
    props: CommitProperties,
) -> std::result::Result<DeltaTable, deltalake::DeltaTableError> {
    let snapshot = table.snapshot()?;
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(snapshot.metadata().partition_columns().to_vec()),
        predicate: None,
    };
    let done = CommitBuilder::from(props)
        .with_actions(files.iter().cloned().map(Action::Add).collect())
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    Ok(after_commit(table, done))
}

/// `table` as of a commit it made: the state delta-rs brought up to date after the commit
/// (already paid for), so that the next open does not replay the table's files again.
fn after_commit(
    table: &DeltaTable,
    done: deltalake::kernel::transaction::FinalizedCommit,
) -> DeltaTable {
    let mut t = table.clone();
    t.state = Some(done.snapshot);
    t
}

/// Commits between checkpoints of the tables this tool creates.
const CHECKPOINT_INTERVAL: &str = "10";

/// Version retries delta-rs makes per commit (its default is 15; shards append at once).
const COMMIT_RETRIES: usize = 100;

/// The partition values of one account's files (`source`, `account`), as delta-rs's
/// `RecordBatchWriter::write_partition` takes them.
fn partition_values(
    source: &str,
    account: &str,
) -> indexmap::IndexMap<String, delta_kernel::expressions::Scalar> {
    use delta_kernel::expressions::Scalar;
    indexmap::IndexMap::from([
        ("source".to_string(), Scalar::String(source.to_string())),
        ("account".to_string(), Scalar::String(account.to_string())),
    ])
}

fn app_id(source: &str, account: &str) -> String {
    format!("{source}/{account}")
}

/// The application transaction of `contact_changes` that holds the newest run of `app`
/// with change rows: `contacts` records that same run as `app` once it has the rows, so a
/// `contacts` behind it lost a commit. (Source names and accounts have no `:`.)
fn contacts_mark(app: &str) -> String {
    format!("contacts:{app}")
}

/// The photo etags of `b`'s rows (`None` where a row has no photo), read in place.
struct PhotoEtags(Option<(arrow::array::StructArray, ArrayRef)>);

impl PhotoEtags {
    fn of(b: &RecordBatch) -> Result<PhotoEtags> {
        let Some(photo) = b.column_by_name("photo") else {
            return Ok(PhotoEtags(None));
        };
        let Some(photo) = photo.as_struct_opt() else {
            return Err(Error::lake("the photo column is not a struct"));
        };
        let Some(etag) = photo.column_by_name("etag") else {
            return Ok(PhotoEtags(None));
        };
        let etag = arrow::compute::cast(etag, &arrow::datatypes::DataType::Utf8)?;
        Ok(PhotoEtags(Some((photo.clone(), etag))))
    }

    fn get(&self, i: usize) -> Option<&str> {
        let (photo, etag) = self.0.as_ref()?;
        let etag = etag.as_string::<i32>();
        (photo.is_valid(i) && etag.is_valid(i)).then(|| etag.value(i))
    }
}

/// Column `name` of `b` (rows of `what`: a table or an extract) as plain UTF-8 strings;
/// a missing column, or one that is not text, is an error naming both.
fn text_column(b: &RecordBatch, name: &str, what: &str) -> Result<arrow::array::StringArray> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::lake(format!("{what}: no {name} column")))?;
    as_text(c, &format!("{what}: column {name}"))
}

/// Column `c` (named by `what`) as plain UTF-8 strings, or an error when it is not text.
fn as_text(c: &ArrayRef, what: &str) -> Result<arrow::array::StringArray> {
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
        .with_context(Kind::Lake, || format!("{what} is not text"))?;
    // The cast made it UTF-8 text of 32-bit offsets.
    Ok(c.as_string::<i32>().clone())
}

fn sql_str(s: &str) -> String {
    s.replace('\'', "''")
}

/// Checks, before anything is opened, that an `s3://` lake has some way to get
/// credentials: static keys (environment or `storage_options`), a profile, web identity,
/// container credentials, `AWS_SKIP_SIGNATURE`, or an instance metadata service that
/// gives credentials ([`imds::gives_credentials`]: one that only answers, 403 or
/// anything else, is none). Without one, the S3 client would ask the metadata service
/// again and again and fail after a dozen warnings; this says at once which settings to
/// provide (a configuration error, exit 2). Each request to the metadata service waits a
/// second at most.
pub fn check_storage_credentials(url: &url::Url, options: &HashMap<String, String>) -> Result<()> {
    if !matches!(url.scheme(), "s3" | "s3a") {
        return Ok(());
    }
    // Keys as object_store and the AWS SDK spell them: `AWS_X`, `aws_x` or `x`.
    let get = |name: &str| {
        options.iter().find_map(|(k, v)| {
            let k = k.to_ascii_uppercase();
            (k == name || k.strip_prefix("AWS_") == Some(name))
                .then_some(v.as_str())
                .filter(|v| !v.trim().is_empty())
        })
    };
    let set = |name: &str| {
        get(name).is_some() || std::env::var(format!("AWS_{name}")).is_ok_and(|v| !v.is_empty())
    };
    let truthy = |name: &str| get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let home_file = |rel: &str| {
        std::env::var_os("HOME").is_some_and(|h| std::path::Path::new(&h).join(rel).is_file())
    };
    let has = (set("ACCESS_KEY_ID") && set("SECRET_ACCESS_KEY"))
        || truthy("SKIP_SIGNATURE")
        || set("PROFILE")
        || set("WEB_IDENTITY_TOKEN_FILE")
        || set("CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("CONTAINER_CREDENTIALS_FULL_URI")
        || set("SHARED_CREDENTIALS_FILE")
        || home_file(".aws/credentials")
        || home_file(".aws/config");
    if has {
        return Ok(());
    }
    let endpoint = get("METADATA_ENDPOINT")
        .or_else(|| get("EC2_METADATA_SERVICE_ENDPOINT"))
        .unwrap_or("http://169.254.169.254")
        .to_string();
    if !truthy("EC2_METADATA_DISABLED") && imds::gives_credentials(&endpoint) {
        return Ok(());
    }
    Err(Error::config(format!(
        "lake.url {url}: no S3 credentials. Export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_REGION; AWS_ENDPOINT_URL for an S3-compatible store), or AWS_PROFILE, or AWS_WEB_IDENTITY_TOKEN_FILE; or set them in [lake] storage_options (secrets by ${{VAR}}); or run where the instance metadata service gives credentials (it gives none at {endpoint}); AWS_SKIP_SIGNATURE=true reads a public bucket"
    )))
}

/// The S3 client settings an `s3://` lake gets unless the pipeline's `storage_options`
/// or the `AWS_*` environment give them (in any spelling object_store reads: `timeout`,
/// `aws_timeout`, `AWS_TIMEOUT`). object_store's own defaults (30 s a request, ten retries
/// within three minutes) make an endpoint that accepts and never answers take about
/// 180 s to fail; with these, a request that gets no answer in 12 s is tried once more
/// and the command fails after about 25 s, naming the endpoint. A request is one
/// object or one part of a multipart upload (at most about 8 MB, a few seconds on a slow
/// link); a slower store sets `timeout` (and `retry_timeout`) higher.
pub const S3_DEFAULTS: [(&str, &str); 3] = [
    ("connect_timeout", "5s"),
    ("timeout", "12s"),
    ("retry_timeout", "15s"),
];

/// Adds each of [`S3_DEFAULTS`] that `opts` does not already set.
fn add_s3_defaults(opts: &mut HashMap<String, String>) {
    let given: std::collections::HashSet<String> = opts
        .keys()
        .map(|k| {
            let k = k.to_ascii_lowercase();
            k.strip_prefix("aws_").map(str::to_string).unwrap_or(k)
        })
        .collect();
    for (k, v) in S3_DEFAULTS {
        if !given.contains(k) {
            opts.insert(k.to_string(), v.to_string());
        }
    }
}

impl Lake {
    /// A lake at `url`; `options` are object-store settings added to the `AWS_*` environment.
    pub fn new(url: url::Url, options: HashMap<String, String>) -> Lake {
        let mut opts: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        // object_store reads AWS_ENDPOINT_URL; the S3 test notes export AWS_ENDPOINT.
        if let Some(e) = opts.get("AWS_ENDPOINT").cloned() {
            opts.entry("AWS_ENDPOINT_URL".into()).or_insert(e);
        }
        opts.extend(options);
        // The store's keys are secrets of this process: an error that echoes one shows `***`.
        for (k, v) in &opts {
            let k = k.to_ascii_lowercase();
            if (k.contains("secret") || k.contains("token") || k.contains("password"))
                && !v.is_empty()
            {
                crate::secret::Secret::new(v.clone());
            }
        }
        checksum::install();
        if matches!(url.scheme(), "s3" | "s3a") {
            add_s3_defaults(&mut opts);
        }
        Lake {
            url,
            options: opts,
            deletion_vectors: None,
            opened: Default::default(),
            indexes: Default::default(),
            root: Default::default(),
        }
    }

    /// Whether changes to `contacts` mark replaced rows in deletion vectors instead of
    /// rewriting their files (see [`LakeConfig::deletion_vectors`](crate::config::LakeConfig)):
    /// `None` creates new tables with them and leaves existing ones as they are; `Some(true)`
    /// upgrades the table's protocol at the next change; `Some(false)` writes none.
    pub fn with_deletion_vectors(mut self, on: Option<bool>) -> Lake {
        self.deletion_vectors = on;
        self
    }

    /// The lake's URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The storage options used for every table.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The URL of one table.
    pub fn table_url(&self, kind: TableKind) -> Result<url::Url> {
        let mut base = self.url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(&format!("{}/", kind.name()))
            .with_context(Kind::Config, || format!("bad lake URL {}", self.url))
    }

    /// The newest state of a table this process has seen, without looking for newer commits.
    fn seen(&self, kind: TableKind) -> Option<DeltaTable> {
        self.opened.lock().unwrap().get(&kind).cloned()
    }

    /// Opens a table, or `None` when it does not exist yet.
    pub async fn open(&self, kind: TableKind) -> Result<Option<DeltaTable>> {
        let t0 = std::time::Instant::now();
        let seen = self.opened.lock().unwrap().get(&kind).cloned();
        if let Some(mut t) = seen {
            match t.update_state().await {
                Ok(()) => {
                    return Ok(Some(self.remember(
                        kind,
                        t,
                        t0,
                        "brought a table up to date",
                    )));
                }
                // Gone or replaced under us: load it as if for the first time.
                Err(e) => {
                    tracing::debug!(table = kind.name(), error = %e, "reloading a table");
                    self.opened.lock().unwrap().remove(&kind);
                }
            }
        }
        let url = self.table_url(kind)?;
        let builder = DeltaTableBuilder::from_url(url.clone())
            .with_context(Kind::Lake, || format!("{}", url))?
            .with_storage_options(self.options.clone());
        match builder.load().await {
            Ok(t) => Ok(Some(self.remember(kind, t, t0, "opened a table"))),
            // A folder with no log, or no folder yet (the kernel's word for a local path
            // that does not exist), is a table not created yet.
            Err(deltalake::DeltaTableError::NotATable(_))
            | Err(deltalake::DeltaTableError::KernelError(
                delta_kernel::Error::InvalidTableLocation(_),
            )) => Ok(None),
            Err(e) => {
                // A store that did not answer would not answer the log's listing either.
                if crate::error::store_unanswered(&e.to_string()) {
                    return Err(Error::with_source(Kind::Lake, format!("opening {url}"), e));
                }
                Err(match self.bad_log_entry(&url).await {
                    // delta-rs's own words do not say which file it could not read.
                    Some(bad) => bad.context(format!("opening {url}")),
                    None => Error::with_source(Kind::Lake, format!("opening {url}"), FirstLine(e)),
                })
            }
        }
    }

    /// The first line of the table at `url`'s log (newest commit first) that is not JSON,
    /// to name the file when delta-rs cannot read the log (its error does not say where).
    async fn bad_log_entry(&self, url: &url::Url) -> Option<Error> {
        use object_store::ObjectStoreExt;
        let store = DeltaTableBuilder::from_url(url.clone())
            .ok()?
            .with_storage_options(self.options.clone())
            .build_storage()
            .ok()?
            .object_store(None);
        let prefix = object_store::path::Path::from("_delta_log");
        let mut entries: Vec<object_store::path::Path> = store
            .list(Some(&prefix))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".json")))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .ok()?;
        entries.sort();
        for path in entries.iter().rev().take(1000) {
            let bytes = store.get(path).await.ok()?.bytes().await.ok()?;
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(line) {
                    let what = format!("{path} line {} is not JSON", i + 1);
                    return Some(Error::with_source(Kind::CorruptLake, what, e));
                }
            }
        }
        None
    }

    /// Copies data files (added to `from`, not yet to `to`) to the same relative paths
    /// under `to`. The store copies them itself (a hard link on local disk, CopyObject on
    /// S3), so no byte passes through this process; where that fails, they are streamed
    /// one at a time, a few parts in flight (memory stays flat however large the files).
    async fn copy_files(
        &self,
        from: TableKind,
        to: TableKind,
        files: &[deltalake::kernel::Add],
    ) -> Result<()> {
        use object_store::path::Path;
        use object_store::{ObjectStoreExt, WriteMultipart};
        let failed = |e: object_store::Error| {
            Error::with_source(
                Kind::Lake,
                format!("copying files from {} to {}", from.name(), to.name()),
                e,
            )
        };
        let (root, base) = self.root_store()?;
        for a in files {
            let rel = Path::from_url_path(&a.path).map_err(|e| failed(e.into()))?;
            let under = |kind: TableKind| {
                Path::from_iter(
                    base.parts()
                        .chain(Path::from(kind.name()).parts())
                        .chain(rel.parts()),
                )
            };
            let (src, dst) = (under(from), under(to));
            match root.copy(&src, &dst).await {
                Ok(()) => continue,
                Err(e) => tracing::debug!(error = %e, "the store cannot copy by itself; streaming"),
            }
            let mut body = root.get(&src).await.map_err(failed)?.into_stream();
            let mut upload = WriteMultipart::new(root.put_multipart(&dst).await.map_err(failed)?);
            while let Some(chunk) = body.try_next().await.map_err(failed)? {
                upload.wait_for_capacity(2).await.map_err(failed)?;
                upload.write(&chunk);
            }
            upload.finish().await.map_err(failed)?;
        }
        Ok(())
    }

    /// The store at the lake's root, and the lake's path in it.
    fn root_store(
        &self,
    ) -> Result<(
        std::sync::Arc<dyn object_store::ObjectStore>,
        object_store::path::Path,
    )> {
        if let Some(r) = self.root.get() {
            return Ok(r.clone());
        }
        let (store, path) = object_store::parse_url_opts(
            &self.url,
            self.options
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        )
        .with_context(Kind::Lake, || format!("opening the store of {}", self.url))?;
        Ok(self.root.get_or_init(|| (store.into(), path)).clone())
    }

    /// Keeps `t` as the newest state of `kind` seen, unless a newer one is kept already,
    /// and logs how long getting it (`what`, since `t0`) took.
    fn remember(
        &self,
        kind: TableKind,
        t: DeltaTable,
        t0: std::time::Instant,
        what: &str,
    ) -> DeltaTable {
        tracing::debug!(
            table = kind.name(),
            version = t.version(),
            us = t0.elapsed().as_micros() as u64,
            "{what}"
        );
        let mut opened = self.opened.lock().unwrap();
        let newer = opened
            .get(&kind)
            .is_some_and(|old| old.version() > t.version());
        if !newer {
            opened.insert(kind, t.clone());
        }
        t
    }

    /// Opens a table, creating it when missing.
    pub async fn open_or_create(&self, kind: TableKind) -> Result<DeltaTable> {
        if let Some(t) = self.open(kind).await? {
            return Ok(t);
        }
        let url = self.table_url(kind)?;
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path)
                .with_context(Kind::Lake, || format!("cannot create {}", path.display()))?;
        }
        let t = DeltaTable::try_from_url_with_storage_options(url.clone(), self.options.clone())
            .await
            .with_context(Kind::Lake, || format!("{url}"))?;
        let fields = tables::delta_fields(&kind.schema())?;
        let mut create = t
            .create()
            .with_table_name(kind.name())
            .with_columns(fields)
            .with_partition_columns(kind.partitions().to_vec())
            .with_save_mode(SaveMode::Ignore)
            // Every run commits to three tables, and each run starts by loading them: from
            // the last checkpoint, then commit by commit. At delta-rs's default of one
            // checkpoint per 100 commits, run 60 spent 50 ms on that alone.
            .with_configuration_property(
                deltalake::TableProperty::CheckpointInterval,
                Some(CHECKPOINT_INTERVAL),
            );
        if let Some(cols) = kind.stats_columns() {
            create = create.with_configuration_property(
                deltalake::TableProperty::DataSkippingStatsColumns,
                Some(cols),
            );
        }
        if kind == TableKind::Contacts && self.deletion_vectors != Some(false) {
            create = create.with_configuration_property(
                deltalake::TableProperty::EnableDeletionVectors,
                Some("true"),
            );
        }
        match create.await {
            Ok(t) => Ok(t),
            // Another process created it meanwhile: that table is the one.
            Err(e) => match self.open(kind).await? {
                Some(t) => Ok(t),
                None => Err(Error::with_source(Kind::Lake, format!("creating {url}"), e)),
            },
        }
    }

    /// Creates every table that is missing. The tables a sync writes are opened (and
    /// kept for the run); the others are only looked for, which is a listing of their log.
    pub async fn ensure_tables(&self) -> Result<()> {
        futures::future::try_join_all(TableKind::ALL.map(|k| async move {
            let synced = matches!(
                k,
                TableKind::Contacts | TableKind::ContactChanges | TableKind::SyncRuns
            );
            if synced || !self.exists(k).await? {
                self.open_or_create(k).await?;
            }
            Ok::<_, Error>(())
        }))
        .await?;
        Ok(())
    }

    /// Whether a table has a log, without reading it.
    async fn exists(&self, kind: TableKind) -> Result<bool> {
        let url = self.table_url(kind)?;
        let store = DeltaTableBuilder::from_url(url.clone())
            .with_context(Kind::Lake, || format!("{url}"))?
            .with_storage_options(self.options.clone())
            .build_storage()
            .with_context(Kind::Lake, || format!("{url}"))?;
        store
            .is_delta_table_location()
            .await
            .with_context(Kind::Lake, || format!("looking for {url}"))
    }

    /// Runs SQL over one table registered as `t`.
    async fn query_table(&self, table: DeltaTable, sql: &str) -> Result<Vec<RecordBatch>> {
        let ctx = provider::session_context();
        checksum::expect_table(&table);
        ctx.register_table("t", table.table_provider().await?)?;
        Ok(ctx.sql(sql).await?.collect().await?)
    }

    /// `(id → (etag, photo etag))` of the account's landed contacts.
    pub async fn landed_etags(
        &self,
        source: &str,
        account: &str,
    ) -> Result<HashMap<String, (Option<String>, Option<String>)>> {
        match self.open(TableKind::Contacts).await? {
            Some(t) => self.landed_in(t, source, account).await,
            None => Ok(HashMap::new()),
        }
    }

    async fn landed_in(
        &self,
        t: DeltaTable,
        source: &str,
        account: &str,
    ) -> Result<HashMap<String, (Option<String>, Option<String>)>> {
        let batches = self
            .query_table(
                t,
                &format!(
                    "SELECT id, etag, get_field(photo, 'etag') FROM t WHERE source = '{}' AND account = '{}'",
                    sql_str(source),
                    sql_str(account)
                ),
            )
            .await?;
        let mut out = HashMap::new();
        for b in batches {
            let (ids, etags, photos) = (
                photos::strings(&b, 0)?,
                photos::strings(&b, 1)?,
                photos::strings(&b, 2)?,
            );
            for i in 0..b.num_rows() {
                out.insert(
                    ids.value(i).to_string(),
                    (
                        (!etags.is_null(i)).then(|| etags.value(i).to_string()),
                        (!photos.is_null(i)).then(|| photos.value(i).to_string()),
                    ),
                );
            }
        }
        Ok(out)
    }

    /// A writer that streams batches into Parquet files of `table` (not yet committed).
    fn streaming_writer(&self, table: &DeltaTable) -> Result<RecordBatchWriter> {
        use deltalake::parquet::file::properties::EnabledStatistics;
        use deltalake::parquet::schema::types::ColumnPath;
        let mut props = deltalake::parquet::file::properties::WriterProperties::builder()
            .set_compression(deltalake::parquet::basic::Compression::SNAPPY)
            // Small row groups bound what the encoder holds before it streams to storage.
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            // Pages of long values (`raw` of dense contacts) grew to 3 MB and more at the
            // default 1 MiB limit, and each page's compression buffer was then a fresh
            // mapping of the allocator's (see `tune.rs`), its every page faulted in.
            .set_data_page_size_limit(DATA_PAGE_BYTES);
        // `raw` and `native` (a record's whole text) also keep no min/max statistics:
        // nobody filters on them, and comparing each long value on every page cost more
        // than the dictionary.
        for column in NO_DICTIONARY {
            props = props.set_column_dictionary_enabled(leaf_path(column), false);
        }
        for column in ["raw", "native"] {
            props = props
                .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
        }
        let props = props.build();
        Ok(RecordBatchWriter::for_table(table)?
            .with_writer_properties(props)
            .with_target_file_size(TARGET_FILE_BYTES))
    }

    /// Turns deletion vectors on for `contacts` when the lake wants them and the table
    /// does not have them yet.
    async fn prepare_contacts(&self) -> Result<()> {
        if self.deletion_vectors == Some(true) {
            let table = self.open_or_create(TableKind::Contacts).await?;
            if !keyed::dv_enabled(&table) {
                tracing::info!(
                    "turning deletion vectors on for the contacts table (lake.deletion_vectors)"
                );
                self.enable_dv(table)
                    .await
                    .map_err(|e| e.context("turning deletion vectors on for contacts"))?;
            }
        }
        Ok(())
    }

    /// Appends `sync_runs` batches (one account each) to `table` in one commit: each batch
    /// one small file, encoded in memory and put straight to the store (see
    /// [`run_files`]: delta-rs's planned write starts a query engine, and its streaming
    /// writer does far more per one-row file), a few at a time, so memory stays that of a few rows.
    async fn append_batches(
        &self,
        kind: TableKind,
        table: &DeltaTable,
        batches: &[RecordBatch],
        props: CommitProperties,
    ) -> std::result::Result<(), deltalake::DeltaTableError> {
        let files = run_files::write_run_files(table, batches)
            .await
            .map_err(|e| deltalake::DeltaTableError::GenericError {
                source: Box::new(e),
            })?;
        let t0 = std::time::Instant::now();
        let t = commit_files(table, &files, props.with_max_retries(COMMIT_RETRIES)).await?;
        self.remember(kind, t, t0, "committed to a table");
        Ok(())
    }

    /// Records a failed run (no seq, no cursor) in `sync_runs`.
    pub async fn record_failure(&self, source: &str, account: &str, f: &RunFigures) -> Result<()> {
        let batch = tables::run_batch(source, account, None, f, None)?;
        // A failure record has no txn to fence it: any error is tried again.
        retry::retry(
            "sync_runs failure record",
            |_: &Error| true,
            async |_| {
                let runs = self.open_or_create(TableKind::SyncRuns).await?;
                self.append_batches(
                    TableKind::SyncRuns,
                    &runs,
                    std::slice::from_ref(&batch),
                    CommitProperties::default(),
                )
                .await
                .map_err(Error::from)
            },
        )
        .await
        .map_err(|e| e.context("appending a failure to sync_runs"))
    }

    /// Opens a table as of a Delta version.
    pub async fn open_version(&self, kind: TableKind, version: i64) -> Result<Option<DeltaTable>> {
        let Some(mut t) = self.open(kind).await? else {
            return Ok(None);
        };
        t.load_version(version as u64)
            .await
            .with_context(Kind::Sql, || {
                format!("{} has no version {version}", kind.name())
            })?;
        Ok(Some(t))
    }

    /// Opens a table as it was right after run `run_id`: its newest version whose commit
    /// belongs to that run or an earlier one (run ids sort by time).
    pub async fn open_as_of_run(
        &self,
        kind: TableKind,
        run_id: &str,
    ) -> Result<Option<DeltaTable>> {
        let Some(t) = self.open(kind).await? else {
            return Ok(None);
        };
        let latest = t.version().unwrap_or(0);
        let store = t.log_store();
        for v in (0..=latest).rev() {
            let Some(bytes) = store.read_commit_entry(v).await? else {
                continue;
            };
            let run = String::from_utf8_lossy(&bytes).lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v.pointer("/commitInfo/app.run_id")
                    .and_then(|r| r.as_str())
                    .map(str::to_string)
            });
            if run.as_deref().is_none_or(|r| r <= run_id) {
                return self.open_version(kind, v as i64).await;
            }
        }
        Ok(None)
    }

    /// Reads every row of a table (tests, status), normalized to its declared schema.
    pub async fn read_all(
        &self,
        kind: TableKind,
        filter: Option<&str>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        self.for_each_batch(kind, filter, |b| {
            out.push(b);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Streams the rows of a table (optionally filtered by a SQL predicate) to `each`,
    /// batch by batch and normalized to the table's schema, without holding the table
    /// in memory. A table that does not exist yet has no rows.
    pub async fn for_each_batch(
        &self,
        kind: TableKind,
        filter: Option<&str>,
        each: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let Some(t) = self.open(kind).await? else {
            return Ok(());
        };
        self.for_each_batch_in(kind, &t, filter, each).await
    }

    /// [`Lake::for_each_batch`] over the version of the table `t` holds (a caller that
    /// commits on `t` reads what its commit will be checked against).
    pub async fn for_each_batch_in(
        &self,
        kind: TableKind,
        t: &DeltaTable,
        filter: Option<&str>,
        mut each: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        // A table with no files has no rows: no query is planned. Every sync ends by
        // reading `writeback_results` for writes to resolve, and for a lake that never
        // ran `apply` that query's planning was a run's fixed cost (B4).
        if t.snapshot()?.log_data().num_files() == 0 {
            return Ok(());
        }
        let sql = match filter {
            Some(f) => format!("SELECT * FROM t WHERE {f}"),
            None => "SELECT * FROM t".into(),
        };
        let ctx = session_context();
        ctx.register_table("t", self.provider(kind, t).await?)?;
        let mut stream = ctx
            .sql(&sql)
            .await?
            .execute_stream()
            .await
            .with_context(Kind::Lake, || format!("reading {}", kind.name()))?;
        let schema = kind.schema();
        while let Some(b) = stream.next().await {
            let b = b.with_context(Kind::Lake, || format!("reading {}", kind.name()))?;
            each(crate::arrow_util::normalize_batch(&b, &schema)?)?;
        }
        Ok(())
    }

    /// The landed contacts of one account as records, sorted by id.
    pub async fn contacts_of(&self, source: &str, account: &str) -> Result<Vec<ContactRecord>> {
        let batches = self
            .read_all(
                TableKind::Contacts,
                Some(&format!(
                    "source = '{}' AND account = '{}'",
                    sql_str(source),
                    sql_str(account)
                )),
            )
            .await?;
        let mut recs = crate::model::schema::batches_to_records(&batches)?;
        recs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(recs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column written without a dictionary names a leaf of the contacts table as
    /// Parquet spells it: a path that names nothing would be ignored without a word.
    #[test]
    fn columns_without_a_dictionary_are_leaves_of_the_table() {
        let parquet = deltalake::parquet::arrow::ArrowSchemaConverter::new()
            .convert(&crate::model::schema::contacts_schema())
            .unwrap();
        let leaves: Vec<_> = parquet.columns().iter().map(|c| c.path().clone()).collect();
        for column in NO_DICTIONARY {
            assert!(leaves.contains(&leaf_path(column)), "{column}");
        }
    }

    /// An `s3://` lake gets the short client defaults; a setting the pipeline or the
    /// environment gives, in any spelling, wins; a local lake gets none of them.
    #[test]
    fn s3_lakes_get_timeout_defaults_that_given_settings_override() {
        let s3 = url::Url::parse("s3://bucket/lake").unwrap();
        let given = HashMap::from([
            ("AWS_TIMEOUT".to_string(), "90s".to_string()),
            ("retry_timeout".to_string(), "2m".to_string()),
        ]);
        let lake = Lake::new(s3, given);
        let o = lake.storage_options();
        assert_eq!(o.get("AWS_TIMEOUT").map(String::as_str), Some("90s"));
        assert!(!o.contains_key("timeout"), "{o:?}");
        assert_eq!(o.get("retry_timeout").map(String::as_str), Some("2m"));
        assert_eq!(o.get("connect_timeout").map(String::as_str), Some("5s"));
        let local = Lake::new(url::Url::parse("file:///tmp/lake").unwrap(), HashMap::new());
        assert!(
            S3_DEFAULTS
                .iter()
                .all(|(k, _)| !local.storage_options().contains_key(*k))
        );
    }
}

/// A delta-rs error shown by its first line: a kernel error carries a backtrace after it
/// when `RUST_BACKTRACE` is set.
#[derive(Debug)]
struct FirstLine(deltalake::DeltaTableError);

impl std::fmt::Display for FirstLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        f.write_str(text.lines().next().unwrap_or_default())
    }
}

impl std::error::Error for FirstLine {
    // The error's causes, not the error itself: its words are shown already.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}
