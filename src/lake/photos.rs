//! `contact_photos`: what a run must fetch or remove, and its one commit.
//!
//! The work is derived by comparing two landed tables, not from the run's extract: every
//! live contact whose photo link carries an etag (`contacts.photo.etag`) should have a
//! `contact_photos` row with that etag. A missing row or a different etag is fetched; a
//! row whose contact is gone or has no photo any more is removed. So a run that dies
//! between committing its contacts and committing its photos loses nothing: the next run
//! finds the same difference and fetches exactly those photos, and unchanged photos are
//! never fetched again.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};

use super::{Lake, TableKind, sql_str};
use crate::error::Result;
pub use crate::model::photo::{FetchedPhoto, PhotoWant, photo_sha256};

/// What a photo sync has to do for one account.
#[derive(Debug, Clone, Default)]
pub struct PhotoWork {
    /// Photos that are new or changed since the lake last saw them.
    pub fetch: Vec<PhotoWant>,
    /// Contacts whose landed photo is gone upstream (contact deleted or photo removed).
    pub remove: Vec<String>,
    /// Photos already landed with the current etag (not fetched).
    pub unchanged: usize,
}

/// A landed photo, as the write-back compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandedPhoto {
    /// The photo etag (the condition of a PUT or DELETE).
    pub etag: Option<String>,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

/// Column `i` of `b` as plain UTF-8 strings (Delta reads may give views or dictionaries).
pub(super) fn strings(b: &RecordBatch, i: usize) -> Result<arrow::array::ArrayRef> {
    Ok(arrow::compute::cast(b.column(i), &DataType::Utf8)?)
}

impl Lake {
    /// `(id → (href, etag))` of the account's live contacts that have a photo.
    async fn wanted_photos(&self, source: &str, account: &str) -> Result<Vec<PhotoWant>> {
        let Some(t) = self.open(TableKind::Contacts).await? else {
            return Ok(vec![]);
        };
        let batches = self
            .query_table(
                t,
                &format!(
                    "SELECT id, get_field(photo, 'href'), get_field(photo, 'etag') FROM t \
                     WHERE source = '{}' AND account = '{}' AND get_field(photo, 'etag') IS NOT NULL",
                    sql_str(source),
                    sql_str(account)
                ),
            )
            .await?;
        let mut out = Vec::new();
        for b in batches {
            let (ids, hrefs, etags) = (strings(&b, 0)?, strings(&b, 1)?, strings(&b, 2)?);
            let (ids, hrefs, etags) = (
                ids.as_string::<i32>(),
                hrefs.as_string::<i32>(),
                etags.as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                out.push(PhotoWant {
                    id: ids.value(i).to_string(),
                    href: (!hrefs.is_null(i)).then(|| hrefs.value(i).to_string()),
                    etag: etags.value(i).to_string(),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// `(id → landed photo)` of the account's `contact_photos` rows.
    pub async fn landed_photos(
        &self,
        source: &str,
        account: &str,
    ) -> Result<HashMap<String, LandedPhoto>> {
        let Some(t) = self.open(TableKind::ContactPhotos).await? else {
            return Ok(HashMap::new());
        };
        let batches = self
            .query_table(
                t,
                &format!(
                    "SELECT id, etag, sha256 FROM t WHERE source = '{}' AND account = '{}'",
                    sql_str(source),
                    sql_str(account)
                ),
            )
            .await?;
        let mut out = HashMap::new();
        for b in batches {
            let (ids, etags, shas) = (strings(&b, 0)?, strings(&b, 1)?, strings(&b, 2)?);
            let (ids, etags, shas) = (
                ids.as_string::<i32>(),
                etags.as_string::<i32>(),
                shas.as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                out.insert(
                    ids.value(i).to_string(),
                    LandedPhoto {
                        etag: (!etags.is_null(i)).then(|| etags.value(i).to_string()),
                        sha256: shas.value(i).to_string(),
                    },
                );
            }
        }
        Ok(out)
    }

    /// What the account's photo sync must fetch and remove (see the module docs).
    pub async fn photo_work(&self, source: &str, account: &str) -> Result<PhotoWork> {
        let wanted = self.wanted_photos(source, account).await?;
        let mut landed = self.landed_photos(source, account).await?;
        let mut work = PhotoWork::default();
        for w in wanted {
            match landed.remove(&w.id) {
                Some(l) if l.etag.as_deref() == Some(w.etag.as_str()) => work.unchanged += 1,
                _ => work.fetch.push(w),
            }
        }
        work.remove = landed.into_keys().collect();
        work.remove.sort();
        Ok(work)
    }

    /// Lands fetched photos and removes gone ones in one commit keyed by id.
    pub async fn commit_photos(
        &self,
        source: &str,
        account: &str,
        fetched: &[FetchedPhoto],
        removed: &[String],
        run_id: &str,
    ) -> Result<()> {
        if fetched.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let n = fetched.len() + removed.len();
        let now = chrono::Utc::now().timestamp_micros();
        let ids: Vec<&str> = fetched
            .iter()
            .map(|p| p.id.as_str())
            .chain(removed.iter().map(String::as_str))
            .collect();
        let etags: Vec<Option<&str>> = fetched
            .iter()
            .map(|p| p.etag.as_deref())
            .chain(removed.iter().map(|_| None))
            .collect();
        let types: Vec<Option<&str>> = fetched
            .iter()
            .map(|p| p.content_type.as_deref())
            .chain(removed.iter().map(|_| None))
            .collect();
        let bytes: Vec<&[u8]> = fetched
            .iter()
            .map(|p| p.bytes.as_slice())
            .chain(removed.iter().map(|_| &[][..]))
            .collect();
        let sizes: Vec<i64> = bytes.iter().map(|b| b.len() as i64).collect();
        let shas: Vec<String> = bytes.iter().map(|b| photo_sha256(b)).collect();
        let flags: Vec<bool> = (0..n).map(|i| i >= fetched.len()).collect();
        let table_schema = TableKind::ContactPhotos.schema();
        let mut fields: Vec<Field> = table_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(super::REMOVE_FLAG, DataType::Boolean, false));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                Arc::new(StringArray::from(vec![source; n])),
                Arc::new(StringArray::from(vec![account; n])),
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(etags)),
                Arc::new(StringArray::from(types)),
                Arc::new(BinaryArray::from(bytes)),
                Arc::new(Int64Array::from(sizes)),
                Arc::new(StringArray::from(shas)),
                Arc::new(StringArray::from(vec![run_id; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
                Arc::new(BooleanArray::from(flags)),
            ],
        )?;
        self.apply_keyed(
            TableKind::ContactPhotos,
            source,
            account,
            &[batch],
            super::REMOVE_FLAG,
            run_id,
        )
        .await?;
        Ok(())
    }
}
