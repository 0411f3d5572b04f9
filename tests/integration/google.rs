//! The Google source against the emulator over loopback.

use contacts_etl::emulator::{Emulator, EmulatorConfig, FaultSpec};
use contacts_etl::lake::TableKind;

use crate::{PipelineSpec, assert_lake_matches, assert_ok, google_only, sync, write_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_extract_of_10000_then_incremental_equal_the_truth() {
    let emu = Emulator::start(google_only(10_000)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 1000,
            ..Default::default()
        },
    );
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!(r.accounts[0].mode, "full");
    assert_eq!(r.accounts[0].upserted, 10_000);
    assert!(emu.stats()["google.feed"] >= 10, "{:?}", emu.stats());
    assert_lake_matches(&p, &emu).await;

    let m = emu.mutate_google(100, 100, 50);
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!(r.accounts[0].mode, "incremental");
    assert_eq!(
        (r.accounts[0].upserted, r.accounts[0].deleted),
        crate::expected_counts(&m)
    );
    assert_lake_matches(&p, &emu).await;

    // Rerunning a finished run changes nothing.
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!((r.accounts[0].upserted, r.accounts[0].deleted), (0, 0));
    assert_lake_matches(&p, &emu).await;

    // The change log holds every observed change, once per run that saw it.
    let lake =
        contacts_etl::sync::lake_of(&contacts_etl::config::Pipeline::load(&p).unwrap()).unwrap();
    let n: usize = lake
        .read_all(TableKind::ContactChanges, None)
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    let (u, d) = crate::expected_counts(&m);
    assert_eq!(n as i64, 10_000 + u + d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_at_10_percent_still_land_exactly() {
    let faults =
        FaultSpec::parse("429=0.03,503=0.03,500=0.01,reset=0.01,truncate=0.02,retry_after=0")
            .unwrap();
    let emu = Emulator::start(EmulatorConfig {
        faults,
        ..google_only(2000)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 50,
            ..Default::default()
        },
    );
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_lake_matches(&p, &emu).await;
    emu.mutate_google(40, 40, 20);
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_lake_matches(&p, &emu).await;
    let stats = emu.stats();
    let faults: u64 = stats
        .iter()
        .filter(|(k, _)| k.starts_with("fault."))
        .map(|(_, v)| v)
        .sum();
    assert!(faults >= 3, "expected injected faults: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_resyncs_and_reconciles_deletes() {
    let emu = Emulator::start(google_only(500)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            page_size: 100,
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let m = emu.mutate_google(10, 10, 20);
    // Past the 30-day placeholder window: the deletions above are no longer visible.
    emu.advance_clock(31 * 24 * 3600);
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_eq!(r.accounts[0].mode, "resync");
    assert_eq!(r.accounts[0].deleted, crate::expected_counts(&m).1);
    assert_lake_matches(&p, &emu).await;
    let lake =
        contacts_etl::sync::lake_of(&contacts_etl::config::Pipeline::load(&p).unwrap()).unwrap();
    let logged: usize = lake
        .read_all(TableKind::ContactChanges, Some("deleted = true"))
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(logged as i64, crate::expected_counts(&m).1);
    let runs = lake
        .read_all(TableKind::SyncRuns, Some("mode = 'resync'"))
        .await
        .unwrap();
    assert_eq!(runs.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_jwt_flow_authorizes_the_sync() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/google");
    let public = std::fs::read_to_string(fixtures.join("sa-test-key.pub.pem")).unwrap();
    let private = std::fs::read_to_string(fixtures.join("sa-test-key.pem")).unwrap();
    let emu = Emulator::start(EmulatorConfig {
        service_account_public_key: Some(public),
        ..google_only(300)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = serde_json::json!({"type": "service_account", "client_email": "etl@project.iam.gserviceaccount.com", "private_key": private, "token_uri": format!("{}/token", emu.url())});
    std::fs::write(dir.path().join("key.json"), key.to_string()).unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            extra_google: "auth = { kind = \"service_account\", key_file = \"key.json\", subject = \"admin@example.com\" }\n",
            ..Default::default()
        },
    );
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert_lake_matches(&p, &emu).await;
    assert_eq!(
        emu.stats()["google.token"],
        1,
        "one token, cached across pages"
    );

    // A subject that is not an administrator's address is refused, with a clear error.
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            extra_google: "auth = { kind = \"service_account\", key_file = \"key.json\", subject = \"nobody\" }\n",
            lake_url: "lake2",
            ..Default::default()
        },
    );
    let r = sync(&p, false).await;
    let err = r.failed()[0].error.clone().unwrap();
    assert!(
        err.contains("token request") && err.contains("administrator"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_fails_clearly_and_commits_nothing() {
    let emu = Emulator::start(google_only(50)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    std::fs::write(dir.path().join("secrets/google.token"), "not-the-token").unwrap();
    let r = sync(&p, false).await;
    let err = r.failed()[0].error.clone().unwrap();
    assert!(
        err.contains("401") && err.contains("Token invalid") && err.contains("example.com"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-token"),
        "the token leaked into the error: {err}"
    );
    let lake =
        contacts_etl::sync::lake_of(&contacts_etl::config::Pipeline::load(&p).unwrap()).unwrap();
    assert!(
        lake.contacts_of("shared", "example.com")
            .await
            .unwrap()
            .is_empty()
    );
    let failed = lake
        .read_all(TableKind::SyncRuns, Some("status = 'failed'"))
        .await
        .unwrap();
    assert_eq!(failed.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_projection_leaves_out_extended_properties() {
    let emu = Emulator::start(google_only(400)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            extra_google: "projection = \"thin\"\n",
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let lake =
        contacts_etl::sync::lake_of(&contacts_etl::config::Pipeline::load(&p).unwrap()).unwrap();
    let landed = lake.contacts_of("shared", "example.com").await.unwrap();
    let mut truth = emu.google_truth().contacts;
    assert!(
        truth.iter().any(|c| !c.extended_properties.is_empty()),
        "the data should have some"
    );
    for c in truth.iter_mut() {
        c.extended_properties.clear();
    }
    let d = contacts_etl::verify::diff(&landed, &truth);
    assert!(d.is_empty(), "{:?}", &d[..d.len().min(5)]);
}
