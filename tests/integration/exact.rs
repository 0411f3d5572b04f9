//! Exactness against what the APIs allow, not only what our emulator used to send: every
//! shape of extended property and of Aurinko record lands and round-trips through
//! write-back unchanged; write-back changes only what the desired state names and never
//! refuses what the API already holds; desired tables need only the contact columns.

use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::plan::apply::{Apply, FromDesired, plan};
use contacts_etl::plan::{KEY_PROPERTY, Mode, WRITABLE};
use contacts_etl::schema::ContactRecord;
use serde_json::Value;

use crate::{PipelineSpec, assert_lake_matches, assert_ok, sync, write_pipeline};

/// An apply of `desired` to `source` of `p` in `mode`, to set further and await.
fn opts<'a>(p: &'a Pipeline, source: &str, desired: &str, mode: Mode) -> Apply<'a, FromDesired> {
    Apply::desired(p, source, desired).with_mode(mode)
}

/// What write-back can say of a contact: no identity, server fields, lineage or key.
fn comparable(r: &ContactRecord) -> ContactRecord {
    let mut r = r.clone();
    r.source.clear();
    r.id.clear();
    r._run_id.clear();
    r._synced_at = 0;
    (r.etag, r.updated, r.photo, r.raw) = (None, None, None, None);
    r.extended_properties
        .retain(|p| p.name.as_deref() != Some(KEY_PROPERTY));
    r
}

fn assert_same(what: &str, got: &ContactRecord, want: &ContactRecord) {
    if got != want {
        let (g, w) = (
            serde_json::to_value(got).unwrap(),
            serde_json::to_value(want).unwrap(),
        );
        let diffs: Vec<String> = w
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| g.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k}: got {} want {v}", g[k.as_str()]))
            .collect();
        panic!("{what}: {diffs:#?}");
    }
}

/// Every seeded contact of both emulators, every shape included: decoded, landed, rendered
/// as write-back would send it, parsed by the emulator, equals the emulator's truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seeded_contact_round_trips_through_write_back() {
    round_trip(false).await;
}

/// The same with people as dense as real domains' (`--dense`): elements in namespaces no
/// client knows land in `raw` and are sent back as they came, XML blobs, long notes and
/// many items land and round-trip field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dense_contact_round_trips_through_write_back() {
    round_trip(true).await;
}

async fn round_trip(dense: bool) {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 600,
        aurinko_accounts: 2,
        aurinko_contacts: 150,
        aurinko_page_size: 100,
        dense,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            aurinko_accounts: vec!["101".into(), "102".into()],
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let all: Vec<String> = WRITABLE.iter().map(|c| c.to_string()).collect();

    let domain = emu.config().google_domain.clone();
    let landed = lake.contacts_of("shared", &domain).await.unwrap();
    let truth = emu.google_truth().contacts;
    assert_eq!(landed.len(), truth.len());
    // The shapes the seed promises are there to be tested.
    let xmls: Vec<&str> = truth
        .iter()
        .flat_map(|c| &c.extended_properties)
        .filter_map(|p| p.xml.as_deref())
        .collect();
    for shape in [
        "plain text payload",
        "</a><b ",
        "lead <i ",
        "<![CDATA[",
        "Fish &amp; Chips",
    ] {
        assert!(
            xmls.iter().any(|x| x.contains(shape)),
            "no {shape:?} in the seed"
        );
    }
    assert!(truth.iter().any(|c| c.extended_properties.len() == 10));
    let mut foreign = 0;
    for (l, t) in landed.iter().zip(&truth) {
        assert_eq!(l.id, t.id);
        // The update as it is sent: the landed entry with every column rendered again
        // (no landed record given, so no item is kept as it came: each is rendered).
        let entry = contacts_etl::providers::google::writeback::update_entry(
            l.raw.as_deref().unwrap(),
            l,
            &all,
            None,
            None,
        )
        .unwrap();
        // Elements of namespaces no client knows are kept in raw and sent back.
        if l.raw.as_deref().unwrap().contains("urn:vendor:sync:meta") {
            assert!(
                entry.contains("urn:vendor:sync:meta") && entry.contains("AccountId>001"),
                "{}: the foreign elements were not sent back: {entry}",
                l.id
            );
            foreign += 1;
        }
        let back = emu
            .google_read_written(&entry)
            .unwrap_or_else(|e| panic!("{}: the emulator refuses the update: {e}", l.id));
        assert_same(
            &format!("google {}", l.id),
            &comparable(&back),
            &comparable(t),
        );
    }
    // A third of the dense people carry foreign elements; none of the plain ones do.
    if dense {
        assert!(foreign > landed.len() / 4, "{foreign} of {}", landed.len());
        let long = truth
            .iter()
            .filter(|c| c.notes.as_ref().is_some_and(|n| n.len() > 300))
            .count();
        assert!(
            long > truth.len() / 5,
            "{long} long notes of {}",
            truth.len()
        );
    } else {
        assert_eq!(foreign, 0);
    }

    for account in ["101", "102"] {
        let landed = lake.contacts_of("crm", account).await.unwrap();
        let truth = emu.aurinko_truth(account).unwrap().contacts;
        assert_eq!(landed.len(), truth.len());
        for (l, t) in landed.iter().zip(&truth) {
            assert_eq!(l.id, t.id);
            let mut body = contacts_etl::providers::aurinko::writeback::insert_body(l, &all);
            if let Some(n) = &l.native {
                body.insert("nativeProperties".into(), serde_json::from_str(n).unwrap());
            }
            let back = emu
                .aurinko_read_written(account, &body)
                .unwrap_or_else(|e| panic!("{}: the emulator refuses the body: {e}", l.id));
            assert_same(
                &format!("aurinko {}", l.id),
                &comparable(&back),
                &comparable(t),
            );
        }
    }
}

/// 1,000 note updates to a domain whose contacts carry every shape (text-only and
/// multi-element properties, 10 properties, over 2 KB held by the server) apply 1,000 of
/// 1,000 in exactly 10 batch requests, and change nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_note_updates_apply_in_ten_batches_whatever_the_contacts_hold() {
    let emu = Emulator::start(crate::google_only(1000)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 250,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let before = emu.google_truth().contacts;
    assert!(before.iter().any(|c| c.extended_properties.len() == 10));
    assert!(
        before
            .iter()
            .any(|c| c.notes.as_deref().is_some_and(|n| n.len() > 2048)),
        "the seed holds contacts over 2 KB"
    );
    let pipeline = Pipeline::load(&p).unwrap();
    // The same length for every contact that has notes: no change makes one bigger.
    let desired = "SELECT account, id, etag, CASE WHEN notes IS NULL THEN 'cleaned' \
                   ELSE concat('[x] ', substr(notes, 5)) END AS notes FROM contacts WHERE source = 'shared'";
    let pl = plan(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert!(pl.invalid.is_empty(), "{}", pl.render(5));
    assert_eq!(pl.ops.len(), 1000);
    emu.reset_stats();
    let report = opts(&pipeline, "shared", desired, Mode::Update)
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(
        report
            .results
            .iter()
            .filter(|r| r.outcome.as_str() == "ok")
            .count(),
        1000
    );
    assert_eq!(emu.stats()["google.batch"], 10, "{:?}", emu.stats());
    let after = emu.google_truth().contacts;
    for (b, a) in before.iter().zip(&after) {
        let mut want = comparable(b);
        want.notes = Some(match &b.notes {
            None => "cleaned".into(),
            Some(n) => format!("[x] {}", n.chars().skip(4).collect::<String>()),
        });
        assert_same(&format!("google {}", b.id), &comparable(a), &want);
    }
    assert_lake_matches(&p, &emu).await;
}

/// Reads one Aurinko contact back from the API, as JSON, without what changes on every
/// write.
async fn read_back(emu: &Emulator, account: &str, id: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/contacts/{id}", emu.url()))
        .bearer_auth(emu.aurinko_token(account))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut v: Value = resp.json().await.unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("etag");
    o.remove("lastModifiedTime");
    v
}

/// An Aurinko update of `given_name`, `family_name` and `notes` keeps every other field,
/// `name.displayName` and fields this tool does not model included: each contact read
/// back from the API equals the one before with exactly those parts changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurinko_updates_change_only_what_the_desired_state_names() {
    let emu = Emulator::start(crate::aurinko_only(1, 300)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: vec!["101".into()],
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let ids: Vec<String> = emu
        .aurinko_truth("101")
        .unwrap()
        .contacts
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let mut before = Vec::new();
    for id in &ids {
        before.push(read_back(&emu, "101", id).await);
    }
    assert!(
        before
            .iter()
            .any(|c| c["name"].get("yomiGivenName").is_some())
            && before.iter().any(|c| c.get("somethingNew").is_some()),
        "the seed holds fields the tool does not model"
    );
    let pipeline = Pipeline::load(&p).unwrap();
    let desired = "SELECT account, id, etag, concat('G-', coalesce(given_name, '')) AS given_name, \
                   concat('F-', coalesce(family_name, '')) AS family_name, 'new notes' AS notes \
                   FROM contacts WHERE source = 'crm'";
    let report = opts(&pipeline, "crm", desired, Mode::Update).await.unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    assert_eq!(report.results.len(), ids.len());
    for (id, mut want) in ids.iter().zip(before) {
        let name = want
            .as_object_mut()
            .unwrap()
            .entry("name")
            .or_insert_with(|| serde_json::json!({}));
        let part = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let given = format!("G-{}", part(name.get("givenName")));
        let family = format!("F-{}", part(name.get("familyName")));
        name["givenName"] = given.into();
        name["familyName"] = family.into();
        want["notes"] = "new notes".into();
        let got = read_back(&emu, "101", id).await;
        assert_eq!(got, want, "contact {id} read back from the API");
    }
    assert_lake_matches(&p, &emu).await;
}

/// A desired Parquet file with the contact columns only, new rows without `id`, and the
/// lake-only columns absent or null, plans and applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_tables_need_only_the_contact_columns() {
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;
    let emu = Emulator::start(crate::google_only(50)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let truth = emu.google_truth().contacts;
    let domain = emu.config().google_domain.clone();
    let write =
        |name: &str, cols: Vec<(&str, ArrayRef)>| write_columns(&dir.path().join(name), cols);
    let (bare, nulls) = with_and_without_lineage(dir.path(), &domain, &truth[0].id);
    let pipeline = Pipeline::load(&p).unwrap();
    for desired in [&bare, &nulls] {
        let pl = plan(&pipeline, "shared", desired, Mode::Upsert)
            .await
            .unwrap();
        assert!(pl.invalid.is_empty(), "{}", pl.render(5));
        assert_eq!(
            (
                pl.count(contacts_etl::plan::OpKind::Insert),
                pl.count(contacts_etl::plan::OpKind::Update)
            ),
            (1, 1),
            "{desired}: {}",
            pl.render(5)
        );
    }
    let report = opts(&pipeline, "shared", &nulls, Mode::Upsert)
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{}", report.summary());
    let after = emu.google_truth().contacts;
    assert_eq!(after.len(), truth.len() + 1);
    assert_eq!(
        after
            .iter()
            .find(|c| c.id == truth[0].id)
            .unwrap()
            .given_name
            .as_deref(),
        Some("Renamed")
    );
    assert!(
        after
            .iter()
            .any(|c| c.given_name.as_deref() == Some("Newcomer"))
    );
    // A column of the wrong type is named, with its row and both types in words.
    let wrong = write(
        "wrong.parquet",
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec![Some(truth[1].id.as_str())])) as ArrayRef,
            ),
            (
                "emails",
                Arc::new(StringArray::from(vec!["a@b.c"])) as ArrayRef,
            ),
        ],
    );
    let e = plan(&pipeline, "shared", &wrong, Mode::Upsert)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`emails`")
            && e.contains("row 1")
            && e.contains("found text")
            && e.contains("wanted a list of {address, type, label, primary, display_name}")
            && e.contains("CAST it if you mean it")
            && !e.contains("Utf8"),
        "{e}"
    );
    assert_lake_matches(&p, &emu).await;
}

/// A Parquet file at `path` of these columns; returns its path as text.
fn write_columns(path: &std::path::Path, cols: Vec<(&str, arrow::array::ArrayRef)>) -> String {
    let batch = arrow::array::RecordBatch::try_from_iter(cols).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path.to_string_lossy().into_owned()
}

/// Two desired files in `dir`, each an update of contact `id` and an insert: one without
/// the lineage columns, one with them all null.
fn with_and_without_lineage(dir: &std::path::Path, domain: &str, id: &str) -> (String, String) {
    use arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    let write = |name: &str, cols: Vec<(&str, ArrayRef)>| write_columns(&dir.join(name), cols);
    // Without lineage columns.
    let bare = write(
        "bare.parquet",
        vec![
            (
                "account",
                Arc::new(StringArray::from(vec![domain, domain])) as ArrayRef,
            ),
            (
                "id",
                Arc::new(StringArray::from(vec![Some(id), None])) as ArrayRef,
            ),
            (
                "given_name",
                Arc::new(StringArray::from(vec!["Renamed", "Newcomer"])) as ArrayRef,
            ),
        ],
    );
    // With them, all null.
    let nulls = write(
        "nulls.parquet",
        vec![
            (
                "account",
                Arc::new(StringArray::from(vec![domain, domain])) as ArrayRef,
            ),
            (
                "id",
                Arc::new(StringArray::from(vec![Some(id), None])) as ArrayRef,
            ),
            (
                "given_name",
                Arc::new(StringArray::from(vec!["Renamed", "Newcomer"])) as ArrayRef,
            ),
            (
                "_run_id",
                Arc::new(StringArray::from(vec![None::<&str>, None])) as ArrayRef,
            ),
            (
                "_synced_at",
                Arc::new(TimestampMicrosecondArray::from(vec![None, None]).with_timezone("UTC"))
                    as ArrayRef,
            ),
            (
                "deleted",
                Arc::new(BooleanArray::from(vec![None, None])) as ArrayRef,
            ),
            (
                "source",
                Arc::new(StringArray::from(vec![None::<&str>, None])) as ArrayRef,
            ),
        ],
    );
    (bare, nulls)
}

/// A restarted emulator (same seed, so the same contacts it began with) never issued the
/// cursors of the one before: the Aurinko token is answered 410 and Google's `updated-min`,
/// older than anything the new server keeps deletions for, 410 too. The next sync resyncs
/// by itself and the lake equals the new emulator row by row; before, it synced `+0 -0`
/// and kept what the old emulator's mutations had left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_emulator_expires_the_old_cursors_and_the_next_sync_resyncs() {
    let cfg = EmulatorConfig {
        google_contacts: 60,
        aurinko_accounts: 2,
        aurinko_contacts: 20,
        ..Default::default()
    };
    let spec = PipelineSpec {
        aurinko_accounts: vec!["101".into(), "102".into()],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let first = Emulator::start(cfg.clone()).await.unwrap();
    let p = write_pipeline(dir.path(), &first, &spec);
    assert_ok(&sync(&p, false).await);
    first.mutate_google(4, 4, 4);
    first.mutate_aurinko(None, 3, 3, 3);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &first).await;
    first.shutdown().await;

    let second = Emulator::start(cfg).await.unwrap();
    let p = write_pipeline(dir.path(), &second, &spec);
    let report = sync(&p, false).await;
    assert_ok(&report);
    for a in &report.accounts {
        assert_eq!(a.mode, "resync", "{}", report.summary());
    }
    assert_lake_matches(&p, &second).await;
    // Its own cursors it honours: the next sync is incremental again.
    second.mutate_google(1, 1, 0);
    let report = sync(&p, false).await;
    assert!(
        report.accounts.iter().all(|a| a.mode == "incremental"),
        "{}",
        report.summary()
    );
    assert_lake_matches(&p, &second).await;
}
