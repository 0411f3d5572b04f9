//! The deletion-vector codec: reading the vectors a table's log points at (from a file
//! under the table, or inline in the log) and writing one file of vectors per commit, in
//! the layout of the Delta protocol. Every length and offset comes from the log or the
//! file, so each is checked before it is used; [`decode_stored`] and [`decode_bitmap`]
//! take bytes only, so that the fuzz targets reach them without a store.

use deltalake::kernel::{Action, DeletionVectorDescriptor, LogicalFileView, StorageType};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use roaring::RoaringTreemap;
use serde_json::json;

use crate::error::{Context, Error, Kind, Result};

/// Magic number of the `RoaringBitmapArray` serialization (little endian).
const DV_MAGIC: u32 = 1681511377;

/// The rows of `f` its deletion vector marks deleted (none without one); an error names
/// the data file and what is wrong with its vector.
pub(super) async fn deleted_rows(
    store: &dyn ObjectStore,
    f: &LogicalFileView,
) -> Result<RoaringTreemap> {
    match f.deletion_vector_descriptor() {
        Some(d) => read_dv(store, &d)
            .await
            .map_err(|e| e.context(format!("reading the deletion vector of {}", f.path()))),
        None => Ok(RoaringTreemap::new()),
    }
}

/// A `RoaringBitmapArray`: the magic, then the bitmap in the portable 64-bit form.
pub fn decode_bitmap(bytes: &[u8]) -> Result<RoaringTreemap> {
    match bytes.first_chunk::<4>() {
        Some(magic) if u32::from_le_bytes(*magic) == DV_MAGIC => {}
        _ => return Err(Error::lake("not a RoaringBitmapArray (bad magic)")),
    }
    RoaringTreemap::deserialize_from(&bytes[4..]).context(Kind::Lake, "bad deletion vector bitmap")
}

/// One vector as a file stores it from its offset on: its size (big-endian), the bitmap
/// ([`decode_bitmap`]) and a CRC-32 of the bitmap (big-endian). `size` is what the log
/// says; a vector whose stored size, length or checksum disagrees is refused.
pub fn decode_stored(bytes: &[u8], size: u64) -> Result<RoaringTreemap> {
    let want = size.checked_add(8).filter(|&w| w <= bytes.len() as u64);
    let Some(want) = want else {
        return Err(Error::lake(format!(
            "the deletion vector is cut short ({} bytes, the log says {size} and 8 more)",
            bytes.len()
        )));
    };
    let size = want as usize - 8;
    let (head, rest) = bytes.split_at(4);
    let stated = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if stated != size {
        return Err(Error::lake(format!(
            "deletion vector size {stated}, the log says {size}"
        )));
    }
    let (body, rest) = rest.split_at(size);
    let crc = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    if crc32fast::hash(body) != crc {
        return Err(Error::lake("deletion vector checksum mismatch"));
    }
    decode_bitmap(body)
}

/// Where a vector stored in a file lives: `<prefix>/deletion_vector_<uuid>.bin`, the uuid
/// being the last 20 characters of `path_or_inline_dv`, Z85-encoded.
pub fn stored_path(path_or_inline_dv: &str) -> Result<Path> {
    let bad = || Error::lake(format!("bad deletion vector path {path_or_inline_dv:?}"));
    let at = path_or_inline_dv.len().checked_sub(20).ok_or_else(bad)?;
    if !path_or_inline_dv.is_char_boundary(at) {
        return Err(bad());
    }
    let (prefix, encoded) = path_or_inline_dv.split_at(at);
    let raw = z85::decode(encoded).context(Kind::Lake, "bad DV uuid")?;
    let uuid = uuid::Uuid::from_slice(&raw).context(Kind::Lake, "bad DV uuid")?;
    Ok(if prefix.is_empty() {
        Path::from(format!("deletion_vector_{uuid}.bin"))
    } else {
        Path::from(format!("{prefix}/deletion_vector_{uuid}.bin"))
    })
}

/// Reads a deletion vector of the table whose store is `store` (stored in a file under
/// the table, inline in the log, or at an absolute path inside the table).
pub(super) async fn read_dv(
    store: &dyn ObjectStore,
    d: &DeletionVectorDescriptor,
) -> Result<RoaringTreemap> {
    let path = match d.storage_type {
        StorageType::Inline => {
            let bytes = z85::decode(&d.path_or_inline_dv)
                .context(Kind::Lake, "bad inline deletion vector")?;
            return decode_bitmap(&bytes);
        }
        StorageType::UuidRelativePath => stored_path(&d.path_or_inline_dv)?,
        StorageType::AbsolutePath => {
            return Err(Error::lake(format!(
                "deletion vectors at absolute paths ({}) are not supported; run OPTIMIZE or REORG on the table",
                d.path_or_inline_dv
            )));
        }
    };
    let (Ok(start), Ok(size)) = (
        u64::try_from(d.offset.unwrap_or(1)),
        u64::try_from(d.size_in_bytes),
    ) else {
        return Err(Error::lake(format!(
            "{path}: the log gives the deletion vector offset {:?} and size {}",
            d.offset, d.size_in_bytes
        )));
    };
    // Size field, body, checksum.
    let end = start.saturating_add(size).saturating_add(8);
    let bytes = store
        .get_range(&path, start..end)
        .await
        .with_context(Kind::Lake, || format!("{path}"))?;
    decode_stored(&bytes, size).map_err(|e| e.context(format!("{path} at offset {start}")))
}

/// A deletion vector file's bytes, and each vector's (offset, size) in it.
type DvFile = (Vec<u8>, Vec<(i32, i32)>);

/// The bytes of a deletion vector file holding `bitmaps`, and each one's (offset, size):
/// a version byte (1), then per vector its size (big-endian), the RoaringBitmapArray magic,
/// the bitmap in the portable 64-bit form, and a CRC-32 of magic and bitmap (big-endian),
/// as the Delta protocol lays it out (a test holds this to a Databricks-written file).
fn dv_file<'a>(bitmaps: impl IntoIterator<Item = &'a RoaringTreemap>) -> Result<DvFile> {
    let mut file: Vec<u8> = vec![1];
    let mut places = Vec::new();
    for bitmap in bitmaps {
        let mut body = DV_MAGIC.to_le_bytes().to_vec();
        bitmap
            .serialize_into(&mut body)
            .context(Kind::Lake, "serializing a deletion vector")?;
        places.push((file.len() as i32, body.len() as i32));
        file.extend_from_slice(&(body.len() as u32).to_be_bytes());
        file.extend_from_slice(&body);
        file.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    }
    Ok((file, places))
}

/// Writes the deletion vectors of one commit into one file at the table's root and
/// returns, per file, the remove of its old version and the add with the new vector.
pub(super) async fn write_dvs(
    store: &dyn ObjectStore,
    marks: Vec<(LogicalFileView, RoaringTreemap)>,
) -> Result<Vec<Action>> {
    let uuid = uuid::Uuid::new_v4();
    let path = Path::from(format!("deletion_vector_{uuid}.bin"));
    let encoded = z85::encode(uuid.as_bytes());
    let (file, places) = dv_file(marks.iter().map(|(_, b)| b))?;
    let mut actions = Vec::new();
    for ((f, bitmap), (offset, size)) in marks.into_iter().zip(places) {
        #[allow(deprecated)] // the only public way to get the file's whole add action
        let mut add = f.add_action();
        add.deletion_vector = Some(DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: encoded.clone(),
            offset: Some(offset),
            size_in_bytes: size,
            cardinality: bitmap.len() as i64,
        });
        add.data_change = true;
        // The file's min/max cover rows that are gone now: say the bounds are wide.
        add.stats = add.stats.map(|s| loosen_bounds(&s));
        actions.push(Action::Remove(f.remove_action(true)));
        actions.push(Action::Add(add));
    }
    store.put(&path, file.into()).await?;
    Ok(actions)
}

fn loosen_bounds(stats: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(stats) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("tightBounds".into(), json!(false));
            serde_json::Value::Object(m).to_string()
        }
        _ => stats.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::keyed::read_leaves;
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    use futures::TryStreamExt;

    /// The Databricks-written table of the shared fixtures (ten rows 0-9, rows 0 and 9
    /// deleted by a deletion vector).
    fn golden() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/delta/table-with-dv-small")
    }

    /// Our writer's bytes for rows {0, 9} are the bytes Databricks wrote, payload and CRC.
    #[test]
    fn the_deletion_vector_writer_matches_a_real_engine() {
        let theirs = std::fs::read(
            golden().join("deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin"),
        )
        .expect("the golden table in ../shared/fixtures/delta");
        let bitmap: RoaringTreemap = [0u64, 9].into_iter().collect();
        let (ours, places) = dv_file([&bitmap]).unwrap();
        assert_eq!(
            places,
            vec![(1, 36)],
            "offset and size as the log records them"
        );
        assert_eq!(ours, theirs);
    }

    /// The project's own deletion-vector reader applies Databricks's vector: rows 1-8.
    #[tokio::test]
    async fn the_databricks_table_reads_back_without_its_deleted_rows() {
        let url = url::Url::from_directory_path(golden().canonicalize().unwrap()).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        let store = table.log_store().object_store(None);
        let mut values = Vec::new();
        for f in table.snapshot().unwrap().log_data().iter() {
            let d = f
                .deletion_vector_descriptor()
                .expect("the file has a vector");
            assert_eq!((d.cardinality, d.offset, d.size_in_bytes), (2, Some(1), 36));
            let gone = read_dv(store.as_ref(), &d).await.unwrap();
            let mut stream = read_leaves(store.clone(), &f, &[&["value"]]).await.unwrap();
            let mut at = 0u64;
            while let Some(b) = stream.try_next().await.unwrap() {
                let c = arrow::compute::cast(b.column(0), &DataType::Int64).unwrap();
                let c = c.as_primitive::<arrow::datatypes::Int64Type>();
                for i in 0..b.num_rows() {
                    if !gone.contains(at + i as u64) {
                        values.push(c.value(i));
                    }
                }
                at += b.num_rows() as u64;
            }
        }
        values.sort();
        assert_eq!(values, (1..=8).collect::<Vec<i64>>());
    }

    /// Every cut of a good vector, a size past the end and a flipped byte are errors,
    /// never a panic; the whole vector decodes.
    #[test]
    fn damaged_vectors_are_errors() {
        let bitmap: RoaringTreemap = [0u64, 9, 1 << 40].into_iter().collect();
        let (file, places) = dv_file([&bitmap]).unwrap();
        let (offset, size) = places[0];
        let stored = &file[offset as usize..];
        assert_eq!(decode_stored(stored, size as u64).unwrap(), bitmap);
        for cut in 0..stored.len() {
            assert!(
                decode_stored(&stored[..cut], size as u64).is_err(),
                "cut {cut}"
            );
        }
        for size in [0, u64::MAX, u64::MAX - 7, size as u64 + 1] {
            assert!(decode_stored(stored, size).is_err(), "size {size}");
        }
        for at in 0..stored.len() {
            let mut bad = stored.to_vec();
            bad[at] ^= 0x10;
            assert!(decode_stored(&bad, size as u64).is_err(), "flip at {at}");
        }
        for p in ["", "short", "ab", "é234567890123456789é"] {
            assert!(stored_path(p).is_err(), "{p:?}");
        }
    }
}
