//! Photo write-back: a desired `contact_photos` state → PUT or DELETE on the photo URL,
//! each conditional on the photo etag.
//!
//! The desired state is one of:
//! - a folder of image files named by contact id (`c0ffee.jpg`, `2fc6.png`): the content
//!   type comes from the extension;
//! - a `.parquet` file or SQL over the lake with columns `id`, `bytes` (binary; null = the
//!   contact should have no photo) and optionally `content_type`, `etag` (the condition,
//!   e.g. from an earlier `contact_photos` state) and `account`.
//!
//! A photo whose bytes equal the landed ones is unchanged. `--mode update` only replaces
//! existing photos; `--mode mirror` also deletes landed photos that are absent from the
//! desired state (guarded by `--max-delete`). The comparison is against `contact_photos`,
//! so the source needs `photos = true`.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;

use super::record::ResultRow;
use super::{Invalid, Mode};
use crate::config::Pipeline;
use crate::error::{Context as _, Error, Kind, Result};
use crate::lake::{Lake, LandedPhoto, TableKind, photo_sha256};
use crate::model::photo::scan_photo_file;
pub use crate::model::photo::{PhotoAction, PhotoBytes, PhotoOp, PhotoOpKind};
use crate::model::write::OpResult;
use crate::sync::lake_of;

/// Largest photo the write-back sends.
pub const MAX_PHOTO_BYTES: usize = crate::model::photo::MAX_PHOTO_BYTES;

/// One desired photo row.
#[derive(Debug, Clone, Default)]
pub struct DesiredPhoto {
    /// Position in the desired state (for messages).
    pub row: usize,
    pub account: String,
    pub id: String,
    /// The condition, when the desired state carries one.
    pub etag: Option<String>,
    /// The image (held, or a file read when sent); `None` = the contact should have no
    /// photo.
    pub bytes: Option<PhotoBytes>,
    pub content_type: Option<String>,
}

/// The photo diff.
#[derive(Debug, Clone, Default)]
pub struct PhotoPlan {
    pub source: String,
    pub ops: Vec<PhotoOp>,
    pub invalid: Vec<Invalid>,
    pub unchanged: usize,
    /// Photos landed for the source (the base of `--max-delete P%`).
    pub landed: usize,
}

impl PhotoPlan {
    /// Operations of one kind.
    pub fn count(&self, k: PhotoOpKind) -> usize {
        self.ops.iter().filter(|o| o.kind() == k).count()
    }

    /// The printed plan.
    pub fn render(&self, sample: usize) -> String {
        let mut s = format!(
            "photo plan for source {}: {} upload(s), {} removal(s), {} unchanged, {} invalid\n",
            self.source,
            self.count(PhotoOpKind::Put),
            self.count(PhotoOpKind::Delete),
            self.unchanged,
            self.invalid.len()
        );
        for op in self.ops.iter().take(sample) {
            s.push_str(&format!(
                "  {:<12} {}/{} {}\n",
                op.kind().as_str(),
                op.account,
                op.id,
                match &op.action {
                    PhotoAction::Put {
                        bytes,
                        content_type,
                    } => format!("{} bytes {content_type}", bytes.len()),
                    PhotoAction::Delete => String::new(),
                }
            ));
        }
        super::render_tail(&mut s, self.ops.len(), sample, &self.invalid, "?");
        s
    }
}

/// The content type of an image file, by extension.
pub fn content_type_of(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        _ => return None,
    })
}

/// The image type of `bytes` by their signature (magic bytes): JPEG, PNG, GIF, WebP or
/// BMP. A name or a column can say anything; the bytes are what the API receives.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    Some(match bytes {
        [0xFF, 0xD8, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        [b'B', b'M', ..] => "image/bmp",
        _ => return None,
    })
}

fn read_folder(dir: &std::path::Path, account: &str) -> Result<(Vec<DesiredPhoto>, Vec<Invalid>)> {
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(Kind::Config, || format!("--photos {}", dir.display()))?
        .filter_map(|e| e.ok())
        // Folders are not photos; links and special files are, to be reported below.
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            // Editor and OS droppings (.DS_Store, .#x) are not photos.
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    let mut rows = Vec::new();
    let mut invalid = Vec::new();
    for (row, path) in entries.into_iter().enumerate() {
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let bad = |reason: String| Invalid {
            row,
            account: account.to_string(),
            id: Some(id.clone()),
            reason: format!("{}: {reason}", path.display()),
        };
        if content_type_of(&path).is_none() {
            invalid.push(bad(
                "not an image file name (use <contact id>.jpg, .jpeg, .png, .gif, .webp or .bmp)"
                    .into(),
            ));
            continue;
        }
        // Read in pieces and hashed, not kept: the file is read again when its write is
        // sent, so memory holds the photos in flight, not the folder.
        let (head, bytes) = match scan_photo_file(&path) {
            Ok(scanned) => scanned,
            Err(why) => {
                invalid.push(bad(why));
                continue;
            }
        };
        // The type the bytes have, whatever the extension says; not an image: refused.
        let Some(ct) = sniff_image(&head) else {
            invalid.push(bad(
                "is not a JPEG, PNG, GIF, WebP or BMP image (its first bytes are no image signature)".into(),
            ));
            continue;
        };
        rows.push(DesiredPhoto {
            row,
            account: account.to_string(),
            id,
            etag: None,
            bytes: Some(bytes),
            content_type: Some(ct.to_string()),
        });
    }
    Ok((rows, invalid))
}

fn read_batches(batches: &[RecordBatch], account: &str) -> Result<Vec<DesiredPhoto>> {
    let mut rows = Vec::new();
    for b in batches {
        let col = |name: &str| -> Result<Option<arrow::array::ArrayRef>> {
            b.column_by_name(name)
                .map(|c| arrow::compute::cast(c, &DataType::Utf8))
                .transpose()
                .with_context(Kind::Config, || format!("desired photo column {name}"))
        };
        let ids = col("id")?.ok_or_else(|| {
            Error::config(
                "the desired photos need an `id` column (the contact id) and a `bytes` column",
            )
        })?;
        let bytes = b.column_by_name("bytes").ok_or_else(|| {
            Error::config(
                "the desired photos need a `bytes` column (binary; null removes the photo)",
            )
        })?;
        let bytes = arrow::compute::cast(bytes, &DataType::LargeBinary)
            .context(Kind::Config, "desired photo column bytes must be binary")?;
        let bytes = bytes.as_binary::<i64>();
        let (etags, types, accounts) = (col("etag")?, col("content_type")?, col("account")?);
        let text = |a: &Option<arrow::array::ArrayRef>, i: usize| {
            a.as_ref().and_then(|a| {
                let s = a.as_string::<i32>();
                s.is_valid(i).then(|| s.value(i).to_string())
            })
        };
        let ids = ids.as_string::<i32>();
        for i in 0..b.num_rows() {
            rows.push(DesiredPhoto {
                row: rows.len(),
                account: text(&accounts, i).unwrap_or_else(|| account.to_string()),
                id: if ids.is_valid(i) {
                    ids.value(i).to_string()
                } else {
                    String::new()
                },
                etag: text(&etags, i),
                bytes: bytes
                    .is_valid(i)
                    .then(|| PhotoBytes::Held(bytes.value(i).to_vec())),
                content_type: text(&types, i),
            });
        }
    }
    Ok(rows)
}

/// Loads the desired photos: a folder of image files, a `.parquet` file, or SQL over the
/// lake. `account` is the account of rows that do not name one (Google: the domain).
pub async fn load_desired_photos(
    lake: &Lake,
    spec: &str,
    account: &str,
) -> Result<(Vec<DesiredPhoto>, Vec<Invalid>)> {
    let path = std::path::Path::new(spec);
    if path.is_dir() {
        return read_folder(path, account);
    }
    let batches = if spec.ends_with(".parquet") {
        let file =
            std::fs::File::open(path).with_context(Kind::Config, || format!("--photos {spec}"))?;
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
            .build()?
            .collect::<std::result::Result<Vec<_>, _>>()?
    } else {
        crate::sql::query(lake, spec).await?
    };
    Ok((read_batches(&batches, account)?, vec![]))
}

/// The diff of desired photos against the landed ones. `live` holds the `(account, id)`
/// of every landed contact; `landed` the landed photos by `(account, id)`.
pub fn diff_photos(
    source: &str,
    desired: Vec<DesiredPhoto>,
    mut invalid: Vec<Invalid>,
    live: &HashSet<(String, String)>,
    landed: &HashMap<(String, String), LandedPhoto>,
    mode: Mode,
) -> PhotoPlan {
    let mut plan = PhotoPlan {
        source: source.to_string(),
        landed: landed.len(),
        ..Default::default()
    };
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for d in desired {
        let key = (d.account.clone(), d.id.clone());
        let bad = |reason: String| Invalid {
            row: d.row,
            account: d.account.clone(),
            id: Some(d.id.clone()),
            reason,
        };
        if d.id.is_empty() {
            invalid.push(bad("no contact id".into()));
            continue;
        }
        if !seen.insert(key.clone()) {
            invalid.push(bad(
                "the same contact appears twice in the desired photos".into()
            ));
            continue;
        }
        if !live.contains(&key) {
            invalid.push(bad(
                "no such contact in the lake (photos can only be set on existing contacts; sync first)".into(),
            ));
            continue;
        }
        let have = landed.get(&key);
        let etag = d.etag.clone().or_else(|| have.and_then(|h| h.etag.clone()));
        match &d.bytes {
            None => match have {
                Some(_) => plan.ops.push(PhotoOp {
                    index: 0,
                    account: d.account.clone(),
                    id: d.id.clone(),
                    etag,
                    action: PhotoAction::Delete,
                }),
                None => plan.unchanged += 1,
            },
            Some(bytes) => {
                let ct = match upload_type(&d, bytes) {
                    Ok(ct) => ct,
                    Err(reason) => {
                        invalid.push(bad(reason));
                        continue;
                    }
                };
                let same = |h: &LandedPhoto| match bytes {
                    PhotoBytes::Held(b) => h.sha256 == photo_sha256(b),
                    PhotoBytes::File { sha256, .. } => h.sha256 == *sha256,
                };
                match have {
                    Some(h) if same(h) => plan.unchanged += 1,
                    None if mode == Mode::Update => {
                        invalid.push(bad(
                            "the contact has no photo and --mode update only replaces photos"
                                .into(),
                        ));
                    }
                    _ => plan.ops.push(PhotoOp {
                        index: 0,
                        account: d.account.clone(),
                        id: d.id.clone(),
                        etag,
                        action: PhotoAction::Put {
                            bytes: bytes.clone(),
                            content_type: ct,
                        },
                    }),
                }
            }
        }
    }
    if mode == Mode::Mirror {
        plan.ops.extend(mirror_deletes(landed, &seen));
    }
    for (i, op) in plan.ops.iter_mut().enumerate() {
        op.index = i;
    }
    plan.invalid = invalid;
    plan
}

/// The content type a desired photo is uploaded with, or why it cannot be: not an
/// image type, empty, no image signature, or over [`MAX_PHOTO_BYTES`].
fn upload_type(d: &DesiredPhoto, bytes: &PhotoBytes) -> std::result::Result<String, String> {
    let ct = d
        .content_type
        .clone()
        .unwrap_or_else(|| "image/jpeg".into());
    if !ct.starts_with("image/") {
        return Err(format!("content type {ct:?} is not image/*"));
    }
    if bytes.is_empty() {
        return Err("the photo is empty (use a null `bytes` to remove a photo)".into());
    }
    // A file was checked for its signature as it was scanned.
    let image = match bytes {
        PhotoBytes::Held(b) => sniff_image(b).is_some(),
        PhotoBytes::File { .. } => true,
    };
    if !image {
        return Err("the bytes are not a JPEG, PNG, GIF, WebP or BMP image (no image signature at their start)".into());
    }
    if bytes.len() > MAX_PHOTO_BYTES {
        return Err(format!(
            "the photo is {} bytes, more than the {MAX_PHOTO_BYTES}-byte limit",
            bytes.len()
        ));
    }
    Ok(ct)
}

/// Mirror mode: a delete of every landed photo the desired photos did not name
/// (`seen`), in (account, id) order.
fn mirror_deletes(
    landed: &HashMap<(String, String), LandedPhoto>,
    seen: &HashSet<(String, String)>,
) -> Vec<PhotoOp> {
    let mut gone: Vec<(&(String, String), &LandedPhoto)> =
        landed.iter().filter(|(k, _)| !seen.contains(*k)).collect();
    gone.sort_by(|a, b| a.0.cmp(b.0));
    gone.into_iter()
        .map(|((account, id), h)| PhotoOp {
            index: 0,
            account: account.clone(),
            id: id.clone(),
            etag: h.etag.clone(),
            action: PhotoAction::Delete,
        })
        .collect()
}

/// The source's default account and whether it lands photos; an error for a provider
/// without photos.
fn photo_source(p: &Pipeline, source: &str) -> Result<(String, bool)> {
    let cfg = p.source(source)?;
    let profile = crate::providers::profile(cfg, &p.dir())?;
    if !profile.photos {
        return Err(Error::config(format!(
            "source {source}: its provider has no contact photos to write back"
        )));
    }
    Ok((
        profile.default_account.unwrap_or_default(),
        profile.photos_landed,
    ))
}

/// Computes the photo plan. Writes nothing anywhere.
pub async fn plan_photos(p: &Pipeline, source: &str, spec: &str, mode: Mode) -> Result<PhotoPlan> {
    let (domain, photos) = photo_source(p, source)?;
    if !photos {
        return Err(Error::config(format!(
            "source {source}: photo write-back compares with the landed photos; set photos = true on the source in {} and sync first",
            p.path.display()
        )));
    }
    let lake = lake_of(p)?;
    let (desired, invalid) = load_desired_photos(&lake, spec, &domain).await?;
    let contacts = lake
        .read_all(
            TableKind::Contacts,
            Some(&format!("source = '{}'", source.replace('\'', "''"))),
        )
        .await?;
    let mut live = HashSet::new();
    for b in &contacts {
        let column = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "the contacts table has no text column {name} (read for source {source})"
                    ))
                })
        };
        let (a, i) = (column("account")?, column("id")?);
        for r in 0..b.num_rows() {
            live.insert((a.value(r).to_string(), i.value(r).to_string()));
        }
    }
    let accounts: HashSet<&String> = live.iter().map(|(a, _)| a).collect();
    let mut landed = HashMap::new();
    for a in accounts {
        for (id, l) in lake.landed_photos(source, a).await? {
            landed.insert((a.clone(), id), l);
        }
    }
    Ok(diff_photos(source, desired, invalid, &live, &landed, mode))
}

/// What a photo apply did.
pub type PhotoApplyReport = super::apply::ApplyReport<PhotoPlan>;

/// The `writeback_results` rows of photo writes' results. A result for an operation the
/// plan does not hold is a provider's bug, said as an error rather than a panic.
pub(crate) fn result_rows(plan: &PhotoPlan, done: &[OpResult]) -> Result<Vec<ResultRow>> {
    done.iter()
        .map(|r| {
            let op = plan.ops.get(r.index).ok_or_else(|| {
                Error::other(format!(
                    "a photo write result names operation {} of a plan of {}",
                    r.index,
                    plan.ops.len()
                ))
            })?;
            Ok(ResultRow {
                op_index: r.index as i64,
                account: op.account.clone(),
                op: op.kind().as_str().into(),
                key: Some(format!("{}/{}", op.account, op.id)),
                id: Some(op.id.clone()),
                http_status: r.http_status.map(i64::from),
                result: r.outcome.as_str().into(),
                reason: r.reason.clone(),
                new_etag: r.new_etag.clone(),
                error: r.error.clone(),
            })
        })
        .collect()
}
