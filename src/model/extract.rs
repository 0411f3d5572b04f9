//! What one account's extract produced, as the lake receives it.

/// How an extract ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Everything, first time or on request.
    Full,
    /// Changes since the stored cursor.
    Incremental,
    /// Everything again, because the API said the cursor expired.
    Resync,
}

impl SyncMode {
    /// The name stored in `sync_runs.mode`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Incremental => "incremental",
            SyncMode::Resync => "resync",
        }
    }
    /// Whether the extract holds every live contact (so absent ones are deleted).
    pub fn is_full(&self) -> bool {
        !matches!(self, SyncMode::Incremental)
    }
}

/// What one account's extract produced.
#[derive(Debug)]
pub struct Extract {
    /// Full or incremental.
    pub mode: SyncMode,
    /// Upserted contacts (schema of [`super::schema::contacts_schema`]), deduplicated by id.
    pub upserts: super::spill::Rows,
    /// Ids seen deleted.
    pub deletes: Vec<String>,
    /// The cursor to store with this data (opaque to the lake).
    pub cursor: String,
}

/// Context of the records made: the pipeline's source name, the account, the run.
#[derive(Debug, Clone)]
pub struct RecordContext {
    pub source: String,
    pub account: String,
    pub run_id: String,
    pub synced_at_us: i64,
}
