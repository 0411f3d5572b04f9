//! Target 6: the deletion-vector codec (`lake::dv::decode_stored`, `decode_bitmap`,
//! `stored_path`).

use proptest::prelude::*;
use roaring::RoaringTreemap;

use contacts_etl::lake::dv::{decode_bitmap, decode_stored, stored_path};

use crate::inputs::{mutated, odd_text};
use crate::seeds::shared;
use crate::{error_is_worded, fuzz};

/// The magic of a `RoaringBitmapArray` (little endian), as the Delta protocol gives it.
const MAGIC: u32 = 1681511377;

/// A vector as a DV file stores it from its offset on: size (big endian), magic and
/// bitmap, CRC-32 of both (big endian). Written here from the protocol, not by the codec.
pub fn stored(bitmap: &RoaringTreemap) -> Vec<u8> {
    let mut body = MAGIC.to_le_bytes().to_vec();
    bitmap.serialize_into(&mut body).unwrap();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out
}

/// The golden file's vector (Databricks wrote it: rows 0 and 9), from its offset 1.
fn golden() -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/delta/table-with-dv-small");
    let name = "deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin";
    let bytes = std::fs::read(dir.join(name)).expect("the golden table in ../shared/fixtures");
    bytes[1..].to_vec()
}

/// Rows of a bitmap: dense runs, sparse values, values past 2^32 (the 64-bit form).
fn bitmap() -> impl Strategy<Value = RoaringTreemap> {
    prop_oneof![
        proptest::collection::vec(0u64..10_000, 0..200),
        proptest::collection::vec(any::<u64>(), 0..20),
        (0u64..1 << 34, 0u64..70_000).prop_map(|(s, n)| (s..s + n).collect()),
    ]
    .prop_map(|v| v.into_iter().collect())
}

/// Decodes a stored vector with the size the log gives; an `Ok` vector is the bitmap
/// the bytes hold.
fn check_stored(bytes: &[u8], size: u64) -> Result<(), TestCaseError> {
    match decode_stored(bytes, size) {
        Ok(b) => {
            // What was accepted is exactly a vector of that size that re-encodes the same.
            prop_assert!(bytes.len() as u64 >= size + 8);
            let again = stored(&b);
            prop_assert_eq!(&again[..], &bytes[..again.len()]);
            Ok(())
        }
        Err(e) => error_is_worded(&e),
    }
}

/// A stored vector and the size the log gives: its own, off by a little, or any.
fn size_for(len: usize) -> impl Strategy<Value = u64> {
    let own = (len as u64).saturating_sub(8);
    prop_oneof![
        4 => Just(own),
        2 => (0u64..8).prop_map(move |d| own.wrapping_add(d).wrapping_sub(4)),
        1 => any::<u64>(),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 7),
        1 => Just(i32::MAX as u64),
        1 => Just(u32::MAX as u64),
    ]
}

/// A stored input is saved as its size (8 bytes little endian) and its bytes.
fn save_stored((b, size): &(Vec<u8>, u64)) -> Vec<u8> {
    let mut out = size.to_le_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let some: RoaringTreemap = [0u64, 1, 2, 9, 70_000, 1 << 33].into_iter().collect();
    let run: RoaringTreemap = (0..5000u64).collect();
    vec![
        golden(),
        stored(&some),
        stored(&run),
        stored(&RoaringTreemap::new()),
    ]
}

#[test]
fn fuzz_dv_mutated_vectors() {
    let strategy = mutated(shared(seeds())).prop_flat_map(|b| {
        let size = size_for(b.len());
        (Just(b), size)
    });
    fuzz("dv_stored_mutated", strategy, save_stored, |(b, size)| {
        check_stored(&b, size)
    });
}

#[test]
fn fuzz_dv_generated_vectors_round_trip() {
    fuzz("dv_round_trip", bitmap(), stored, |b| {
        let bytes = stored(&b);
        let back = decode_stored(&bytes, bytes.len() as u64 - 8)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, b);
        Ok(())
    });
}

#[test]
fn fuzz_dv_bitmaps() {
    // A bitmap alone (an inline vector, z85-decoded): mutated real ones, and any bytes
    // after the magic.
    let bitmaps: Vec<Vec<u8>> = seeds()
        .into_iter()
        .map(|s| s[4..s.len() - 4].to_vec())
        .collect();
    let strategy = prop_oneof![
        3 => mutated(shared(bitmaps)),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut v| {
            let mut b = MAGIC.to_le_bytes().to_vec();
            b.append(&mut v);
            b
        }),
    ];
    fuzz("dv_bitmap", strategy, Vec::clone, |b| {
        match decode_bitmap(&b) {
            Ok(_) => Ok(()),
            Err(e) => error_is_worded(&e),
        }
    });
}

#[test]
fn fuzz_dv_stored_paths() {
    let z85 = "[0-9a-zA-Z.\\-:+=^!/*?&<>()\\[\\]{}@%$#]{20}";
    let strategy = prop_oneof![
        3 => (proptest::option::of("[a-z]{1,3}"), z85).prop_map(|(p, z)| match p {
            Some(p) => format!("{p}{z}"),
            None => z,
        }),
        2 => odd_text(),
        1 => "[é€𝄞a]{0,24}",
        1 => any::<String>(),
    ];
    fuzz(
        "dv_stored_path",
        strategy,
        |s| s.clone().into_bytes(),
        |s| match stored_path(&s) {
            Ok(p) => {
                let p = p.to_string();
                prop_assert!(
                    p.ends_with(".bin") && p.contains("deletion_vector_"),
                    "{}",
                    p
                );
                Ok(())
            }
            Err(e) => error_is_worded(&e),
        },
    );
}
