//! Checksums of the lake's data files. parquet-rs writes no page checksums, and a bit
//! flipped in a Snappy page reads back as a wrong value, not an error. So every Parquet
//! file the lake writes gets a CRC-32 of each block of [`BLOCK`] bytes, computed as its
//! bytes go to the store and kept in its add action's tags ([`TAG`]); every read of such a
//! file through the lake's stores fetches whole blocks and checks them before a byte
//! reaches the reader. A damaged file is then an error naming it, never a wrong answer.
//!
//! The stores are wrapped where delta-rs makes them (its factory of stores, for `file`
//! and `s3` URLs), so the same check serves the lake's own readers and DataFusion's scans.
//! What a block should hold is known per file name (data file names carry a UUID): from
//! the sums computed when this process wrote the file ([`sealed`]), or from the file's
//! tags when a reader is about to read it ([`expect`], [`expect_table`]). A file with no
//! tag (written by another engine, or before there were tags) is read unchecked.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use deltalake::DeltaTable;
use deltalake::kernel::{Add, LogicalFileView};
use deltalake::logstore::{ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// The add-action tag holding a file's block checksums: `crc32/<block>:<base64>`, the
/// base64 of each block's CRC-32 (big-endian), in order.
pub const TAG: &str = "contacts_etl.crc32";

/// Bytes per checksummed block. A read fetches whole blocks, so at most two blocks more
/// than it asked for; a file's tag holds four bytes per block.
pub const BLOCK: u64 = 128 * 1024;

/// A file's size and the CRC-32 of each of its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sums {
    size: u64,
    crcs: Vec<u32>,
}

impl Sums {
    fn encode(&self) -> String {
        let raw: Vec<u8> = self.crcs.iter().flat_map(|c| c.to_be_bytes()).collect();
        format!(
            "crc32/{BLOCK}:{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The sums a tag holds, for a file of `size` bytes; `None` for a tag this reader
    /// does not know (another block size, or not ours), which leaves the file unchecked.
    fn decode(tag: &str, size: u64) -> Option<Sums> {
        let b64 = tag.strip_prefix(&format!("crc32/{BLOCK}:"))?;
        // A tag of ours that does not decode, or whose count of blocks does not fit the
        // size, is a damaged log entry: no sums match it, so its reads fail the check
        // rather than pass unchecked.
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|r| r.len() % 4 == 0)
            .unwrap_or_default();
        let crcs: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Sums { size, crcs })
    }

    fn blocks(size: u64) -> u64 {
        size.div_ceil(BLOCK)
    }
}

/// CRC-32s of consecutive blocks, fed any cut of the bytes.
#[derive(Default)]
struct Summer {
    crcs: Vec<u32>,
    block: crc32fast::Hasher,
    filled: u64,
    size: u64,
}

impl Summer {
    fn feed(&mut self, mut bytes: &[u8]) {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((BLOCK - self.filled) as usize).min(bytes.len());
            self.block.update(&bytes[..take]);
            self.filled += take as u64;
            bytes = &bytes[take..];
            if self.filled == BLOCK {
                let done = std::mem::take(&mut self.block);
                self.crcs.push(done.finalize());
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Sums {
        if self.filled > 0 {
            self.crcs.push(self.block.finalize());
        }
        Sums {
            size: self.size,
            crcs: self.crcs,
        }
    }
}

/// Sums of files this process wrote and has not yet put in an add action.
static WRITTEN: LazyLock<Mutex<HashMap<String, Sums>>> = LazyLock::new(Default::default);
/// Sums every read of a file (by name) is checked against.
static EXPECTED: LazyLock<Mutex<HashMap<String, Arc<Sums>>>> = LazyLock::new(Default::default);

/// The key of a data file: its name, which holds a UUID (the same file under another
/// table, copied there byte for byte, has the same sums).
fn key(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a path is a data file of a table (not a checkpoint in its log folder).
fn is_data(path: &Path) -> bool {
    let mut parts: Vec<_> = path.parts().collect();
    let Some(name) = parts.pop() else {
        return false;
    };
    name.as_ref().ends_with(".parquet") && !parts.iter().any(|p| p.as_ref() == "_delta_log")
}

/// `adds` with their checksum tags, from the sums taken as their bytes were written; each
/// file is checked from then on in this process too.
pub(super) fn sealed(mut adds: Vec<Add>) -> Vec<Add> {
    // The lock is only held for map operations, which do not panic.
    let mut written = WRITTEN.lock().unwrap();
    let mut expected = EXPECTED.lock().unwrap();
    for add in &mut adds {
        let k = key(&add.path);
        let Some(sums) = written.remove(k) else {
            continue;
        };
        if sums.size != add.size as u64 {
            continue;
        }
        add.tags
            .get_or_insert_with(HashMap::new)
            .insert(TAG.into(), Some(sums.encode()));
        expected.insert(k.to_string(), Arc::new(sums));
    }
    adds
}

/// Makes the reads of `add`'s file checked against its tag (when it has one).
fn expect_add(add: &Add) {
    let tag = add
        .tags
        .as_ref()
        .and_then(|t| t.get(TAG))
        .and_then(|v| v.as_deref());
    if let Some(sums) = tag.and_then(|t| Sums::decode(t, add.size as u64)) {
        EXPECTED
            .lock()
            .unwrap()
            .insert(key(&add.path).to_string(), Arc::new(sums));
    }
}

/// Makes the reads of `f`'s file checked against its tag (when it has one).
pub(super) fn expect(f: &LogicalFileView) {
    #[allow(deprecated)] // the only public way to the file's tags
    expect_add(&f.add_action());
}

/// Makes the reads of every file of `table` checked (before a scan by DataFusion, which
/// reads the files the snapshot lists); once per table version.
pub(crate) fn expect_table(table: &DeltaTable) {
    static DONE: LazyLock<Mutex<std::collections::HashSet<(String, u64)>>> =
        LazyLock::new(Default::default);
    let Ok(snapshot) = table.snapshot() else {
        return;
    };
    let version = (table.table_url().to_string(), snapshot.version());
    if DONE.lock().unwrap().contains(&version) {
        return;
    }
    // Every file first, then the version marked done: a scan started meanwhile in
    // another task registers them again rather than reads unchecked.
    for f in snapshot.log_data().iter() {
        expect(&f);
    }
    DONE.lock().unwrap().insert(version);
}

/// A block of a data file that does not hold what was written: the file is damaged.
#[derive(Debug, thiserror::Error)]
#[error(
    "data file {path}: bytes {start}..{end} do not match the checksum written with them; the file is damaged (restore it from a copy of the lake)"
)]
struct Damaged {
    path: String,
    start: u64,
    end: u64,
}

/// A data file whose size is not the size it was written with.
#[derive(Debug, thiserror::Error)]
#[error(
    "data file {path} is {found} bytes, but it was written with {written}; the file is damaged (restore it from a copy of the lake)"
)]
struct Resized {
    path: String,
    found: u64,
    written: u64,
}

fn store_error(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "checksum",
        source: Box::new(e),
    }
}

/// The bytes of `range` asked for, as block-aligned bytes to fetch.
fn aligned(range: &Range<u64>, size: u64) -> Range<u64> {
    let start = range.start / BLOCK * BLOCK;
    let end = (range.end.div_ceil(BLOCK) * BLOCK).min(size);
    start..end
}

/// The byte range `range` asks for in a file of `size` bytes (`None`: the whole file).
fn wanted(range: Option<&GetRange>, size: u64) -> Range<u64> {
    match range {
        None => 0..size,
        Some(GetRange::Bounded(r)) => r.start.min(size)..r.end.min(size),
        Some(GetRange::Offset(o)) => (*o).min(size)..size,
        Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
    }
}

/// Checks `bytes`, the blocks from `start` on of the file at `path`, against `sums`.
fn check(path: &Path, sums: &Sums, start: u64, bytes: &[u8]) -> object_store::Result<()> {
    let first = start / BLOCK;
    for (i, block) in bytes.chunks(BLOCK as usize).enumerate() {
        let n = first + i as u64;
        let at = n * BLOCK;
        let ok = sums.crcs.len() as u64 == Sums::blocks(sums.size)
            && sums.crcs.get(n as usize) == Some(&crc32fast::hash(block));
        if !ok {
            return Err(store_error(Damaged {
                path: path.to_string(),
                start: at,
                end: at + block.len() as u64,
            }));
        }
    }
    Ok(())
}

/// A store whose Parquet data files are checksummed as they are written and checked as
/// they are read (see the module docs); every other call goes to `inner` as it is.
#[derive(Debug)]
pub struct Checked {
    inner: ObjectStoreRef,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checked({})", self.inner)
    }
}

impl Checked {
    async fn checked_get(
        &self,
        location: &Path,
        options: GetOptions,
        sums: Arc<Sums>,
    ) -> object_store::Result<GetResult> {
        let want = wanted(options.range.as_ref(), sums.size);
        let fetch = aligned(&want, sums.size);
        if want.is_empty() {
            // No byte of the file asked for (a range past its end, or inverted): the
            // store answers as it would, with its error.
            return self.inner.get_opts(location, options).await;
        }
        let mut opts = options;
        opts.range = Some(GetRange::Bounded(fetch.clone()));
        let got = self.inner.get_opts(location, opts).await?;
        if got.meta.size != sums.size {
            return Err(store_error(Resized {
                path: location.to_string(),
                found: got.meta.size,
                written: sums.size,
            }));
        }
        let (meta, attributes) = (got.meta.clone(), got.attributes.clone());
        let bytes = got.bytes().await?;
        if bytes.len() as u64 != fetch.end - fetch.start {
            return Err(store_error(Resized {
                path: location.to_string(),
                found: fetch.start + bytes.len() as u64,
                written: sums.size,
            }));
        }
        check(location, &sums, fetch.start, &bytes)?;
        let part =
            bytes.slice((want.start - fetch.start) as usize..(want.end - fetch.start) as usize);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(part) }).boxed()),
            meta,
            range: want,
            attributes,
        })
    }
}

#[async_trait]
impl ObjectStore for Checked {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let sums = is_data(location).then(|| {
            let mut s = Summer::default();
            payload.iter().for_each(|b| s.feed(b));
            s.finish()
        });
        let done = self.inner.put_opts(location, payload, opts).await?;
        if let Some(sums) = sums {
            WRITTEN
                .lock()
                .unwrap()
                .insert(key(location.as_ref()).to_string(), sums);
        }
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        if !is_data(location) {
            return Ok(upload);
        }
        Ok(Box::new(SummedUpload {
            inner: upload,
            key: key(location.as_ref()).to_string(),
            summer: Some(Summer::default()),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let sums = if options.head || !is_data(location) {
            None
        } else {
            EXPECTED
                .lock()
                .unwrap()
                .get(key(location.as_ref()))
                .cloned()
        };
        match sums {
            Some(sums) => self.checked_get(location, options, sums).await,
            None => self.inner.get_opts(location, options).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload of a data file, summed part by part (parts are given in order).
#[derive(Debug)]
struct SummedUpload {
    inner: Box<dyn MultipartUpload>,
    key: String,
    summer: Option<Summer>,
}

impl std::fmt::Debug for Summer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Summer({} bytes)", self.size)
    }
}

#[async_trait]
impl MultipartUpload for SummedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        if let Some(s) = self.summer.as_mut() {
            data.iter().for_each(|b| s.feed(b));
        }
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await?;
        if let Some(s) = self.summer.take() {
            WRITTEN.lock().unwrap().insert(self.key.clone(), s.finish());
        }
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.summer = None;
        self.inner.abort().await
    }
}

/// Makes `ctx` read local files through a [`Checked`] store (DataFusion's own local store
/// would read them unchecked).
pub(crate) fn register_local(ctx: &datafusion::prelude::SessionContext) {
    let Ok(url) = url::Url::parse("file://") else {
        return;
    };
    let local: ObjectStoreRef = Arc::new(object_store::local::LocalFileSystem::new());
    ctx.runtime_env()
        .register_object_store(&url, Arc::new(Checked { inner: local }));
}

/// delta-rs's factory of stores for a scheme, wrapped so that its stores are [`Checked`].
struct CheckedFactory {
    inner: Arc<dyn ObjectStoreFactory>,
}

impl ObjectStoreFactory for CheckedFactory {
    fn parse_url_opts(
        &self,
        url: &url::Url,
        config: &StorageConfig,
    ) -> deltalake::DeltaResult<(ObjectStoreRef, Path)> {
        let (store, path) = self.inner.parse_url_opts(url, config)?;
        Ok((Arc::new(Checked { inner: store }), path))
    }
}

/// Wraps delta-rs's store factories for local and S3 lakes (once per process), so that
/// every table the lake opens reads and writes through [`Checked`].
pub(super) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let factories = deltalake::logstore::object_store_factories();
        for scheme in ["file://", "s3://", "s3a://"] {
            let Ok(url) = url::Url::parse(scheme) else {
                continue;
            };
            let Some(inner) = factories.get(&url).map(|f| f.value().clone()) else {
                continue;
            };
            factories.insert(url, Arc::new(CheckedFactory { inner }));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums taken over any cut of the bytes are the sums of the whole; a tag decodes to
    /// what was encoded.
    #[test]
    fn sums_do_not_depend_on_how_the_bytes_come() {
        let bytes: Vec<u8> = (0..(3 * BLOCK + 17)).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Summer::default();
        whole.feed(&bytes);
        let whole = whole.finish();
        assert_eq!(whole.crcs.len(), 4);
        for cut in [1usize, 1000, BLOCK as usize, BLOCK as usize + 1, 300_001] {
            let mut s = Summer::default();
            bytes.chunks(cut).for_each(|c| s.feed(c));
            assert_eq!(s.finish(), whole, "cut {cut}");
        }
        assert_eq!(
            Sums::decode(&whole.encode(), whole.size),
            Some(whole.clone())
        );
        assert_eq!(Sums::decode("crc32/65536:AAAA", 10), None);
        // A tag of ours that is damaged matches no block: its reads fail, never pass.
        let path = Path::from("t/part-1.parquet");
        for bad in ["crc32/131072:!!!", "crc32/131072:AAAAAA==", "crc32/131072:"] {
            let sums = Sums::decode(bad, 100).expect("a tag of ours");
            assert!(check(&path, &sums, 0, &[0u8; 100]).is_err(), "{bad}");
        }
    }

    /// Data files are told by their own name and folder, whatever the lake's path holds.
    #[test]
    fn data_files_are_told_by_name_not_by_the_lake_path() {
        for (p, data) in [
            ("lake/contacts/source=a/part-1.parquet", true),
            ("x_delta_log_y/lake/contacts/part-1.parquet", true),
            (
                "lake/contacts/_delta_log/00000000000000000010.checkpoint.parquet",
                false,
            ),
            ("lake/contacts/_delta_log/00000000000000000001.json", false),
            ("lake/contacts/deletion_vector_1.bin", false),
        ] {
            assert_eq!(is_data(&Path::from(p)), data, "{p}");
        }
    }

    /// Reads of a range fetch whole blocks and see every flipped bit in them.
    #[test]
    fn every_flipped_bit_in_a_read_is_caught() {
        let bytes: Vec<u8> = (0..(2 * BLOCK + 5)).map(|i| (i % 13) as u8).collect();
        let mut s = Summer::default();
        s.feed(&bytes);
        let sums = s.finish();
        let path = Path::from("t/part-1.parquet");
        for want in [0..10, BLOCK - 1..BLOCK + 1, 2 * BLOCK..2 * BLOCK + 5] {
            let fetch = aligned(&want, sums.size);
            assert!(fetch.start <= want.start && fetch.end >= want.end);
            let got = &bytes[fetch.start as usize..fetch.end as usize];
            check(&path, &sums, fetch.start, got).unwrap();
            for at in (0..got.len()).step_by(997) {
                let mut bad = got.to_vec();
                bad[at] ^= 0x08;
                let e = check(&path, &sums, fetch.start, &bad)
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains("t/part-1.parquet") && e.contains("damaged"),
                    "{e}"
                );
            }
        }
        assert_eq!(wanted(Some(&GetRange::Suffix(8)), 100), 92..100);
        assert_eq!(wanted(Some(&GetRange::Offset(200)), 100), 100..100);
    }
}
