//! `contact_photos`: what a run must fetch or remove, and its one commit.
//!
//! The work is derived by comparing two landed tables, not from the run's extract: every
//! live contact whose photo link carries an etag (`contacts.photo.etag`) should have a
//! `contact_photos` row with that etag. A missing row or a different etag is fetched; a
//! row whose contact is gone or has no photo any more is removed. So a run that dies
//! between committing its contacts and committing its photos loses nothing: the next run
//! finds the same difference and fetches exactly those photos, and unchanged photos are
//! never fetched again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;

use super::keyed::{NewRows, Replace};
use super::{Lake, TableKind, sql_str};
use crate::error::{Context, Error, Kind, Result};
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
pub(super) fn strings(b: &RecordBatch, i: usize) -> Result<arrow::array::StringArray> {
    let c = b.columns().get(i).ok_or_else(|| {
        Error::lake(format!(
            "the query gave {} columns, not {}",
            b.num_columns(),
            i + 1
        ))
    })?;
    let c = arrow::compute::cast(c, &DataType::Utf8)?;
    // The cast made it UTF-8 text of 32-bit offsets.
    Ok(c.as_string::<i32>().clone())
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
        let mut landing = self.land_photos(source, account, run_id).await?;
        landing.add(fetched).await?;
        landing.commit(removed).await
    }

    /// Starts landing one account's photos: see [`PhotoLanding`].
    pub async fn land_photos<'l>(
        &'l self,
        source: &str,
        account: &str,
        run_id: &str,
    ) -> Result<PhotoLanding<'l>> {
        let table = self.open_or_create(TableKind::ContactPhotos).await?;
        Ok(PhotoLanding {
            writer: self.streaming_writer(&table)?,
            lake: self,
            source: source.to_string(),
            account: account.to_string(),
            run_id: run_id.to_string(),
            at: chrono::Utc::now().timestamp_micros(),
            keys: HashSet::new(),
        })
    }
}

/// One account's photos on their way into `contact_photos`: each part added is encoded
/// into data files of the table at once (not yet part of it), so what is held is one
/// part and the file being written, not the account's photos; [`PhotoLanding::commit`]
/// then replaces the photos of every id added or removed in **one** commit. Files of a
/// landing never committed (a killed run) are in no version of the table.
pub struct PhotoLanding<'l> {
    lake: &'l Lake,
    writer: deltalake::writer::RecordBatchWriter,
    source: String,
    account: String,
    run_id: String,
    at: i64,
    keys: HashSet<String>,
}

impl PhotoLanding<'_> {
    /// Writes fetched photos into the table's data files.
    pub async fn add(&mut self, fetched: &[FetchedPhoto]) -> Result<()> {
        use deltalake::writer::DeltaWriter;
        if fetched.is_empty() {
            return Ok(());
        }
        let n = fetched.len();
        let bytes: Vec<&[u8]> = fetched.iter().map(|p| p.bytes.as_slice()).collect();
        let (source, account) = (self.source.as_str(), self.account.as_str());
        let ids = fetched.iter().map(|p| p.id.as_str());
        let etags = fetched.iter().map(|p| p.etag.as_deref());
        let types = fetched.iter().map(|p| p.content_type.as_deref());
        let batch = RecordBatch::try_new(
            TableKind::ContactPhotos.schema(),
            vec![
                Arc::new(StringArray::from(vec![source; n])),
                Arc::new(StringArray::from(vec![account; n])),
                Arc::new(StringArray::from_iter_values(ids)),
                Arc::new(StringArray::from_iter(etags)),
                Arc::new(StringArray::from_iter(types)),
                Arc::new(BinaryArray::from(bytes.clone())),
                Arc::new(Int64Array::from_iter_values(
                    bytes.iter().map(|b| b.len() as i64),
                )),
                Arc::new(StringArray::from_iter_values(
                    bytes.iter().map(|b| photo_sha256(b)),
                )),
                Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
                Arc::new(TimestampMicrosecondArray::from(vec![self.at; n]).with_timezone("UTC")),
            ],
        )?;
        self.keys.extend(fetched.iter().map(|p| p.id.clone()));
        self.writer.write(batch).await.with_context(Kind::Lake, || {
            format!("writing photos of {}/{}", self.source, self.account)
        })
    }

    /// Commits the photos added, and removes those of `removed`, in one commit keyed by
    /// id (nothing is committed when there is neither).
    pub async fn commit(mut self, removed: &[String]) -> Result<()> {
        use deltalake::writer::DeltaWriter;
        let files = self.writer.flush().await.with_context(Kind::Lake, || {
            format!("writing photos of {}/{}", self.source, self.account)
        })?;
        let files = super::checksum::sealed(files);
        self.keys.extend(removed.iter().cloned());
        if self.keys.is_empty() {
            return Ok(());
        }
        let step = Replace {
            keys: &self.keys,
            new: NewRows::Files(&files),
            located: None,
        };
        self.lake
            .apply_keys(
                TableKind::ContactPhotos,
                &self.source,
                &self.account,
                &step,
                None,
                &self.run_id,
            )
            .await?;
        Ok(())
    }
}
