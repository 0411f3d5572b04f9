//! Contact photos: landed once, fetched again only when changed, removed when gone, and
//! written back with conditional PUT and DELETE.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::lake::TableKind;
use contacts_etl::plan::Mode;
use contacts_etl::plan::apply::Apply;
use contacts_etl::plan::photos::{PhotoOpKind, plan_photos};

use crate::{PipelineSpec, assert_lake_matches, assert_ok, google_only, sync, write_pipeline};

/// `contact_photos` of the Google source: id → (etag, bytes, content type).
async fn landed_photos(p: &std::path::Path) -> BTreeMap<String, (String, Vec<u8>, String)> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for b in lake
        .read_all(TableKind::ContactPhotos, Some("source = 'shared'"))
        .await
        .unwrap()
    {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (ids, etags, cts) = (s("id"), s("etag"), s("content_type"));
        let bytes = b.column_by_name("bytes").unwrap().as_binary::<i32>();
        let sizes = b
            .column_by_name("size")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            assert_eq!(sizes.value(i) as usize, bytes.value(i).len());
            let prev = out.insert(
                ids.value(i).to_string(),
                (
                    etags.value(i).to_string(),
                    bytes.value(i).to_vec(),
                    cts.value(i).to_string(),
                ),
            );
            assert!(prev.is_none(), "photo of {} landed twice", ids.value(i));
        }
    }
    out
}

async fn assert_photos_match(p: &std::path::Path, emu: &Emulator) {
    let landed = landed_photos(p).await;
    let truth = emu.google_photos();
    assert_eq!(
        landed.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>(),
        "the landed photos are of other contacts than the emulator's"
    );
    for (id, t) in &truth {
        assert_eq!(&landed[id], t, "photo of {id} differs from the emulator's");
    }
}

fn photo_pipeline(dir: &std::path::Path, emu: &Emulator) -> std::path::PathBuf {
    write_pipeline(
        dir,
        emu,
        &PipelineSpec {
            extra_google: "photos = true\nphoto_concurrency = 4\n",
            ..Default::default()
        },
    )
}

/// PUTs or DELETEs a photo on the emulator as another client would.
async fn change_photo_upstream(emu: &Emulator, id: &str, bytes: Option<Vec<u8>>) {
    let etag = emu.google_photos().get(id).map(|p| p.0.clone());
    let url = format!(
        "{}/m8/feeds/photos/media/{}/{id}",
        emu.url(),
        emu.config().google_domain
    );
    let c = reqwest::Client::new();
    let rb = match &bytes {
        Some(b) => c
            .put(&url)
            .header("Content-Type", "image/png")
            .body(b.clone()),
        None => c.delete(&url),
    };
    let mut rb = rb
        .header("GData-Version", "3.0")
        .header("Authorization", format!("Bearer {}", emu.config().token));
    if let Some(e) = etag {
        rb = rb.header("If-Match", e);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_land_once_and_only_changed_ones_are_fetched_again() {
    let emu = Emulator::start(google_only(2000)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = photo_pipeline(dir.path(), &emu);
    let with_photo = emu.google_photos().len();
    assert!(with_photo > 200, "the seed gives about 20 % photos");

    let r = sync(&p, false).await;
    assert_ok(&r);
    let counts = r.accounts[0].photos.unwrap();
    assert_eq!(counts.fetched as usize, with_photo);
    assert_eq!(emu.stats()["google.photo"] as usize, with_photo);
    assert!(r.summary().contains(&format!("{with_photo} fetched")));
    assert_photos_match(&p, &emu).await;
    assert_lake_matches(&p, &emu).await;

    // Nothing changed: no photo is downloaded again, by incremental or full reads.
    emu.reset_stats();
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!(r.accounts[0].photos.unwrap().fetched, 0);
    assert_eq!(r.accounts[0].photos.unwrap().unchanged as usize, with_photo);
    let r = sync(&p, true).await;
    assert_ok(&r);
    assert_eq!(r.accounts[0].photos.unwrap().fetched, 0);
    assert!(
        !emu.stats().contains_key("google.photo"),
        "{:?}",
        emu.stats()
    );

    // One photo changed, one removed, a contact with a photo deleted, a new photo added.
    let ids: Vec<String> = emu.google_photos().into_keys().collect();
    let no_photo = emu
        .google_truth()
        .contacts
        .into_iter()
        .find(|c| c.photo.as_ref().is_some_and(|p| p.etag.is_none()))
        .unwrap()
        .id;
    change_photo_upstream(&emu, &ids[0], Some(b"\x89PNG new bytes".to_vec())).await;
    change_photo_upstream(&emu, &ids[1], None).await;
    change_photo_upstream(&emu, &no_photo, Some(b"\x89PNG first photo".to_vec())).await;
    let etag = emu
        .google_truth()
        .contacts
        .iter()
        .find(|c| c.id == ids[2])
        .unwrap()
        .etag
        .clone()
        .unwrap();
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/m8/feeds/contacts/{}/full/{}",
            emu.url(),
            emu.config().google_domain,
            ids[2]
        ))
        .header("GData-Version", "3.0")
        .header("Authorization", format!("Bearer {}", emu.config().token))
        .header("If-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.reset_stats();
    let r = sync(&p, false).await;
    assert_ok(&r);
    let c = r.accounts[0].photos.unwrap();
    assert_eq!((c.fetched, c.removed), (2, 2), "{}", r.summary());
    assert_eq!(
        emu.stats()["google.photo"],
        2,
        "each changed photo is fetched once"
    );
    assert_photos_match(&p, &emu).await;
    assert_lake_matches(&p, &emu).await;
    assert_eq!(
        landed_photos(&p).await[&ids[0]].1,
        b"\x89PNG new bytes".to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_change_that_leaves_the_contact_alone_is_seen_by_a_full_refresh() {
    // The notes do not say whether a photo PUT bumps the contact's `updated`; with a
    // server where it does not, an incremental read cannot see it, a full refresh must.
    let emu = Emulator::start(EmulatorConfig {
        photo_touches_contact: false,
        ..google_only(500)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = photo_pipeline(dir.path(), &emu);
    assert_ok(&sync(&p, false).await);
    assert_photos_match(&p, &emu).await;
    let id = emu.google_photos().into_keys().next().unwrap();
    change_photo_upstream(&emu, &id, Some(b"\x89PNG quiet change".to_vec())).await;
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!(r.accounts[0].photos.unwrap().fetched, 0);
    emu.reset_stats();
    let r = sync(&p, true).await;
    assert_ok(&r);
    assert_eq!(
        r.accounts[0].upserted, 1,
        "the contact's photo link changed"
    );
    assert_eq!(r.accounts[0].photos.unwrap().fetched, 1);
    assert_eq!(emu.stats()["google.photo"], 1);
    assert_photos_match(&p, &emu).await;
    assert_lake_matches(&p, &emu).await;
}

/// A desired photo row: contact id, etag condition, bytes (none removes the photo).
type DesiredRow<'a> = (&'a str, Option<&'a str>, Option<&'a [u8]>);

fn write_desired_parquet(path: &std::path::Path, rows: &[DesiredRow]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("etag", DataType::Utf8, true),
        Field::new("bytes", DataType::Binary, true),
        Field::new("content_type", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(BinaryArray::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(vec![Some("image/png"); rows.len()])),
        ],
    )
    .unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

async fn writeback_rows(p: &std::path::Path, apply_id: &str) -> Vec<(String, String, String)> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let mut out = Vec::new();
    for b in lake
        .read_all(
            TableKind::WritebackResults,
            Some(&format!("apply_id = '{apply_id}'")),
        )
        .await
        .unwrap()
    {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (ops, ids, results) = (s("op"), s("id"), s("result"));
        for i in 0..b.num_rows() {
            out.push((
                ops.value(i).to_string(),
                if ids.is_valid(i) {
                    ids.value(i).to_string()
                } else {
                    String::new()
                },
                results.value(i).to_string(),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photo_write_back_puts_and_deletes_with_etags_and_a_stale_etag_is_a_conflict() {
    let emu = Emulator::start(google_only(300)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = photo_pipeline(dir.path(), &emu);
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let with: Vec<String> = emu.google_photos().into_keys().collect();
    let without: Vec<String> = emu
        .google_truth()
        .contacts
        .into_iter()
        .filter(|c| c.photo.as_ref().is_some_and(|p| p.etag.is_none()))
        .map(|c| c.id)
        .collect();

    // A folder: a new photo, a replaced photo, an unchanged one, an unknown contact, and
    // a file that is not an image.
    let folder = dir.path().join("headshots");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(format!("{}.png", without[0])), b"\x89PNG added").unwrap();
    std::fs::write(
        folder.join(format!("{}.jpg", with[0])),
        b"\xFF\xD8 replaced",
    )
    .unwrap();
    std::fs::write(
        folder.join(format!("{}.jpg", with[1])),
        &emu.google_photos()[&with[1]].1,
    )
    .unwrap();
    std::fs::write(folder.join("ffffffffdead.jpg"), b"\xFF\xD8 nobody").unwrap();
    std::fs::write(folder.join("notes.txt"), b"not a photo").unwrap();
    let spec = folder.to_str().unwrap();
    let before = emu.stats();
    let plan = plan_photos(&pipeline, "shared", spec, Mode::Upsert)
        .await
        .unwrap();
    assert_eq!(emu.stats(), before, "plan must not call the API");
    assert_eq!(plan.count(PhotoOpKind::Put), 2, "{}", plan.render(10));
    assert_eq!(plan.unchanged, 1);
    assert_eq!(plan.invalid.len(), 2, "{}", plan.render(10));
    // Mirror would remove every other landed photo; --max-delete stops it before any call.
    let mirror = plan_photos(&pipeline, "shared", spec, Mode::Mirror)
        .await
        .unwrap();
    assert_eq!(mirror.count(PhotoOpKind::Delete), with.len() - 2);
    emu.reset_stats();
    let err = Apply::photos(&pipeline, "shared", spec)
        .with_mode(Mode::Mirror)
        .with_max_delete(Some("5".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--max-delete"), "{err}");
    assert!(!emu.stats().contains_key("google.photo"));

    let report = Apply::photos(&pipeline, "shared", spec)
        .with_mode(Mode::Upsert)
        .await
        .unwrap();
    assert_eq!(
        report
            .results
            .iter()
            .filter(|r| r.outcome.as_str() == "ok")
            .count(),
        2,
        "{}",
        report.summary()
    );
    assert_eq!(report.failures(), 2, "the two invalid rows");
    let truth = emu.google_photos();
    assert_eq!(truth[&without[0]].1, b"\x89PNG added".to_vec());
    assert_eq!(truth[&without[0]].2, "image/png");
    assert_eq!(truth[&with[0]].1, b"\xFF\xD8 replaced".to_vec());
    assert_eq!(truth[&with[0]].2, "image/jpeg");
    // The sync after apply landed them.
    assert_photos_match(&p, &emu).await;
    let rows = writeback_rows(&p, &report.apply_id).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.0 == "photo_put" && r.2 == "ok")
            .count(),
        2
    );
    assert_eq!(rows.iter().filter(|r| r.2 == "invalid").count(), 2);

    a_stale_photo_etag_conflicts_until_forced(&emu, dir.path(), &p, &with).await;
}

/// A desired state computed from an old etag: someone changed the photo since. It is a
/// conflict (412) and the other party's photo is kept, beside a removal that happens;
/// `--force` then overwrites the conflict.
async fn a_stale_photo_etag_conflicts_until_forced(
    emu: &Emulator,
    dir: &std::path::Path,
    p: &std::path::Path,
    with: &[String],
) {
    let pipeline = Pipeline::load(p).unwrap();
    let landed = landed_photos(p).await;
    let old_etag = landed[&with[2]].0.clone();
    change_photo_upstream(emu, &with[2], Some(b"\x89PNG someone else".to_vec())).await;
    let desired = dir.join("desired.parquet");
    write_desired_parquet(
        &desired,
        &[
            (
                with[2].as_str(),
                Some(old_etag.as_str()),
                Some(b"\x89PNG mine"),
            ),
            (with[3].as_str(), None, None),
        ],
    );
    let apply =
        || Apply::photos(&pipeline, "shared", desired.to_str().unwrap()).with_mode(Mode::Upsert);
    let report = apply().await.unwrap();
    let by_id = |id: &str| {
        let op = report.plan.ops.iter().find(|o| o.id == id).unwrap();
        report
            .results
            .iter()
            .find(|r| r.index == op.index)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_id(&with[2]).outcome.as_str(),
        "conflict",
        "{}",
        report.summary()
    );
    assert_eq!(by_id(&with[2]).http_status, Some(412));
    assert_eq!(
        by_id(&with[3]).outcome.as_str(),
        "ok",
        "{}",
        report.summary()
    );
    assert!(report.summary().contains("--force"));
    // The other party's photo is kept; the requested removal happened.
    let truth = emu.google_photos();
    assert_eq!(truth[&with[2]].1, b"\x89PNG someone else".to_vec());
    assert!(!truth.contains_key(&with[3]));
    let rows = writeback_rows(p, &report.apply_id).await;
    assert!(rows.contains(&("photo_put".into(), with[2].clone(), "conflict".into())));
    assert!(rows.contains(&("photo_delete".into(), with[3].clone(), "ok".into())));
    assert_photos_match(p, emu).await;

    // --force overwrites the conflict; the removal is already done.
    let report = apply().with_force(true).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.plan.ops.len(), 1, "{}", report.plan.render(5));
    assert_eq!(emu.google_photos()[&with[2]].1, b"\x89PNG mine".to_vec());
    assert_photos_match(p, emu).await;
    assert_lake_matches(p, emu).await;
}

/// Photo applies ask before deleting as contact applies do: the plan is shown first, and
/// without a terminal deletes need `--yes` (exit 2, nothing sent); with it they go ahead.
#[tokio::test]
async fn photo_deletes_need_a_yes_without_a_terminal() {
    let emu = Emulator::start(google_only(120)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = photo_pipeline(dir.path(), &emu);
    assert_ok(&sync(&p, false).await);
    let with: Vec<String> = emu.google_photos().into_keys().collect();
    assert!(with.len() >= 2, "the emulator seeds photos");
    // A folder that keeps one photo: mirror removes the others.
    let folder = dir.path().join("keep");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join(format!("{}.jpg", with[0])),
        &emu.google_photos()[&with[0]].1,
    )
    .unwrap();
    // The emulator serves from this test's runtime: the command is awaited, not blocked on.
    let apply = async |extra: &[&str]| {
        tokio::process::Command::new(crate::bin())
            .args(["apply", p.to_str().unwrap(), "--source", "shared"])
            .args(["--photos", folder.to_str().unwrap(), "--mode", "mirror"])
            .args(["--max-delete", "100%"])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap()
    };
    emu.reset_stats();
    let refused = apply(&[]).await;
    let (out, err) = (
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr),
    );
    assert_eq!(refused.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains(&format!("deletes {} photo(s)", with.len() - 1)) && err.contains("--yes"),
        "{err}"
    );
    assert!(
        out.contains("photo_delete"),
        "the plan is shown first: {out}"
    );
    assert!(!emu.stats().contains_key("google.photo"), "nothing sent");
    assert_eq!(emu.google_photos().len(), with.len());
    let done = apply(&["--yes"]).await;
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        emu.google_photos().into_keys().collect::<Vec<_>>(),
        [with[0].clone()]
    );
}

/// A photo apply records its writes as it goes, as contact applies do: each group of
/// 100 is on record (`sent`) before it goes out and replaced by its results when they
/// are in, so 250 writes are six `writeback_results` commits ending in one row per
/// write, and an apply stopped or killed halfway keeps the record of what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_apply_records_its_results_as_it_goes() {
    let emu = Emulator::start(google_only(300)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = photo_pipeline(dir.path(), &emu);
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let ids: Vec<String> = emu
        .google_truth()
        .contacts
        .into_iter()
        .map(|c| c.id)
        .take(250)
        .collect();
    let bytes: Vec<Vec<u8>> = (0..ids.len())
        .map(|i| [&b"\x89PNG "[..], i.to_string().as_bytes()].concat())
        .collect();
    let rows: Vec<DesiredRow> = ids
        .iter()
        .zip(&bytes)
        .map(|(id, b)| (id.as_str(), None, Some(b.as_slice())))
        .collect();
    let desired = dir.path().join("desired.parquet");
    write_desired_parquet(&desired, &rows);
    let version = || async {
        let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
        lake.open(TableKind::WritebackResults)
            .await
            .unwrap()
            .and_then(|t| t.version())
            .map_or(-1, |v| v as i64)
    };
    let before = version().await;
    let report = Apply::photos(&pipeline, "shared", desired.to_str().unwrap())
        .with_mode(Mode::Upsert)
        .await
        .unwrap();
    assert_eq!(report.results.len(), 250, "{}", report.summary());
    assert_eq!(
        version().await - before,
        6,
        "two commits per group of 100: sent, then results"
    );
    assert_eq!(writeback_rows(&p, &report.apply_id).await.len(), 250);
}

/// A folder of photos is not held in memory: the plan scans each file (size, SHA-256,
/// signature) and keeps none of its bytes; each file is read again when its write is
/// sent, and sent only if it is still the file planned. Here, between the plan and the
/// writes, one file is rewritten and one removed: those two writes fail naming their
/// file and send nothing (a plan that held the bytes would send what it had read), and
/// the third is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photo_files_are_read_when_their_write_is_sent() {
    let emu = Emulator::start(google_only(50)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = photo_pipeline(dir.path(), &emu);
    assert_ok(&sync(&p, false).await);
    let pipeline = Pipeline::load(&p).unwrap();
    let with: Vec<String> = emu.google_photos().into_keys().take(3).collect();
    let folder = dir.path().join("headshots");
    std::fs::create_dir_all(&folder).unwrap();
    let file = |i: usize| folder.join(format!("{}.jpg", with[i]));
    let planned = |i: usize| [&b"\xFF\xD8 planned "[..], i.to_string().as_bytes()].concat();
    for i in 0..3 {
        std::fs::write(file(i), planned(i)).unwrap();
    }
    let before = emu.google_photos();
    let prepared = Apply::photos(&pipeline, "shared", folder.to_str().unwrap())
        .with_mode(Mode::Upsert)
        .prepare()
        .await
        .unwrap();
    let plan = prepared.plan();
    assert_eq!(plan.count(PhotoOpKind::Put), 3, "{}", plan.render(5));
    std::fs::write(file(0), b"\xFF\xD8 rewritten after the plan").unwrap();
    std::fs::remove_file(file(1)).unwrap();
    let report = prepared.await.unwrap();
    let result = |i: usize| {
        let op = report.plan.ops.iter().find(|o| o.id == with[i]).unwrap();
        report.results.iter().find(|r| r.index == op.index).unwrap()
    };
    for i in [0, 1] {
        let r = result(i);
        assert_eq!(r.outcome.as_str(), "failed", "{}", report.summary());
        let e = r.error.as_deref().unwrap_or_default();
        assert!(
            e.contains(&file(i).display().to_string()) && e.contains("since the plan was made"),
            "{e}"
        );
    }
    assert_eq!(result(2).outcome.as_str(), "ok", "{}", report.summary());
    let truth = emu.google_photos();
    assert_eq!(
        truth[&with[0]], before[&with[0]],
        "a rewritten file was sent"
    );
    assert_eq!(truth[&with[1]], before[&with[1]], "a removed file was sent");
    assert_eq!(truth[&with[2]].1, planned(2));
}

/// Versions in `contact_photos`' log, and its data files' sizes.
fn photo_table(dir: &std::path::Path) -> (usize, Vec<u64>) {
    let table = dir.join("lake/contact_photos");
    let commits = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count();
    let files = crate::damage::data_files(&table)
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .collect();
    (commits, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_sync_writes_large_photos_as_they_come_in_one_commit() {
    let emu = Emulator::start(google_only(200)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = photo_pipeline(dir.path(), &emu);
    assert_ok(&sync(&p, false).await);
    // 20 photos of 6 MB each (120 MB): more than one part's worth of bytes.
    let ids: Vec<String> = emu.google_photos().into_keys().collect();
    assert!(ids.len() > 21, "the seed gives about 20 % photos");
    for (i, id) in ids.iter().take(20).enumerate() {
        // Bytes that do not compress, as a real image's.
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
        let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
        big.extend((0..(6 << 20) / 8).flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        }));
        change_photo_upstream(&emu, id, Some(big)).await;
    }
    change_photo_upstream(&emu, &ids[20], None).await;
    let (commits, _) = photo_table(dir.path());
    let r = sync(&p, false).await;
    assert_ok(&r);
    let counts = r.accounts[0].photos.unwrap();
    assert_eq!((counts.fetched, counts.removed), (20, 1), "{}", r.summary());
    let (after, files) = photo_table(dir.path());
    assert_eq!(
        after,
        commits + 1,
        "the photos of one sync land in one commit"
    );
    // Written as they came: into files of about the target size, not one file of all.
    let big = files.iter().filter(|&&len| len > 10 << 20).count();
    assert!(
        big >= 2,
        "120 MB of photos went into {big} large file(s): {files:?}"
    );
    assert!(
        files.iter().all(|&len| len < 100 << 20),
        "a data file holds the sync's photos whole: {files:?}"
    );
    assert_photos_match(&p, &emu).await;
    let r = sync(&p, false).await;
    assert_eq!(r.accounts[0].photos.unwrap().fetched, 0, "{}", r.summary());
}
