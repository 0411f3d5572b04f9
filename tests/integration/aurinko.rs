//! The Aurinko source against the emulator over loopback.

use contacts_etl::emulator::{Emulator, EmulatorConfig, FaultSpec};
use contacts_etl::lake::TableKind;

use crate::{PipelineSpec, assert_lake_matches, assert_ok, aurinko_only, sync, write_pipeline};

fn accounts(n: usize) -> Vec<String> {
    (0..n).map(|i| (101 + i).to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_accounts_of_5000_then_incremental_equal_the_truth() {
    let emu = Emulator::start(EmulatorConfig {
        aurinko_page_size: 500,
        ..aurinko_only(3, 5000)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: accounts(3),
            ..Default::default()
        },
    );
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(
        r.accounts
            .iter()
            .all(|a| a.mode == "full" && a.upserted == 5000),
        "{}",
        r.summary()
    );
    // Each account saw ready:false once before its tokens.
    assert_eq!(emu.stats()["aurinko.sync.start"], 6);
    assert_lake_matches(&p, &emu).await;

    let m = emu.mutate_aurinko(None, 30, 30, 15);
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(
        r.accounts.iter().all(|a| a.mode == "incremental"),
        "{}",
        r.summary()
    );
    let sums = (
        r.accounts.iter().map(|a| a.upserted).sum::<i64>(),
        r.accounts.iter().map(|a| a.deleted).sum::<i64>(),
    );
    assert_eq!(sums, crate::expected_counts(&m));
    assert_lake_matches(&p, &emu).await;

    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(r.accounts.iter().all(|a| a.upserted == 0 && a.deleted == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_at_10_percent_still_land_exactly() {
    let faults =
        FaultSpec::parse("429=0.03,503=0.03,500=0.01,reset=0.01,truncate=0.02,retry_after=0")
            .unwrap();
    let emu = Emulator::start(EmulatorConfig {
        faults,
        aurinko_page_size: 50,
        ..aurinko_only(3, 600)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: accounts(3),
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    emu.mutate_aurinko(None, 10, 10, 10);
    assert_ok(&sync(&p, false).await);
    assert_lake_matches(&p, &emu).await;
    let faults: u64 = emu
        .stats()
        .iter()
        .filter(|(k, _)| k.starts_with("fault."))
        .map(|(_, v)| v)
        .sum();
    assert!(faults >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_resync_and_reconcile_deletes() {
    let emu = Emulator::start(aurinko_only(2, 300)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: accounts(2),
            ..Default::default()
        },
    );
    assert_ok(&sync(&p, false).await);
    let m = emu.mutate_aurinko(None, 5, 5, 7);
    emu.expire_aurinko_tokens();
    let r = sync(&p, false).await;
    assert_ok(&r);
    assert!(
        r.accounts.iter().all(|a| a.mode == "resync"),
        "{}",
        r.summary()
    );
    assert_eq!(
        r.accounts.iter().map(|a| a.deleted).sum::<i64>(),
        crate::expected_counts(&m).1
    );
    assert_lake_matches(&p, &emu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_with_a_bad_token_fails_alone() {
    let emu = Emulator::start(aurinko_only(3, 100)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        &emu,
        &PipelineSpec {
            google: false,
            aurinko_accounts: accounts(3),
            bad_token_for: Some("102"),
            ..Default::default()
        },
    );
    let r = sync(&p, false).await;
    let failed = r.failed();
    assert_eq!(failed.len(), 1, "{}", r.summary());
    assert_eq!(failed[0].account, "102");
    let err = failed[0].error.as_deref().unwrap();
    assert!(err.contains("account 102") && err.contains("401"), "{err}");
    assert!(r.summary().contains("1 of 3 account(s) FAILED"));
    let lake =
        contacts_etl::sync::lake_of(&contacts_etl::config::Pipeline::load(&p).unwrap()).unwrap();
    assert_eq!(lake.contacts_of("crm", "101").await.unwrap().len(), 100);
    assert_eq!(lake.contacts_of("crm", "102").await.unwrap().len(), 0);
    let f = lake
        .read_all(
            TableKind::SyncRuns,
            Some("status = 'failed' AND account = '102'"),
        )
        .await
        .unwrap();
    assert_eq!(f.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[test]
fn app_credentials_from_the_environment_authorize_the_cli() {
    // Basic client id/secret + X-Aurinko-Account-Id; the CLI reads them from its environment.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(Emulator::start(aurinko_only(2, 40))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[lake]\nurl = \"lake\"\n[[sources]]\nname = \"crm\"\nprovider = \"aurinko\"\nbase_url = \"{}\"\nauth = {{ kind = \"app\", client_id_env = \"AUR_ID\", client_secret_env = \"AUR_SECRET\" }}\naccounts = [{{ id = \"101\" }}, {{ id = \"102\" }}]\nretry_base_ms = 5\n",
        emu.url()
    );
    let p = dir.path().join("p.toml");
    std::fs::write(&p, text).unwrap();
    let out = std::process::Command::new(crate::bin())
        .args(["--log-format", "json", "sync", p.to_str().unwrap()])
        .env("AUR_ID", "emulator")
        .env("AUR_SECRET", &emu.config().token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"message\":\"account synced\""),
        "JSON logs expected: {stderr}"
    );
    assert!(
        !stderr.contains(&emu.config().token),
        "the secret leaked into the logs"
    );
    rt.block_on(async {
        let lake = contacts_etl::sync::lake_of(&contacts_etl::config::Pipeline::load(&p).unwrap())
            .unwrap();
        for a in ["101", "102"] {
            let d = contacts_etl::verify::diff(
                &lake.contacts_of("crm", a).await.unwrap(),
                &emu.aurinko_truth(a).unwrap().contacts,
            );
            assert!(d.is_empty(), "{d:?}");
        }
    });
    // The wrong secret: exit 1, the failure named, the secret not echoed.
    let out = std::process::Command::new(crate::bin())
        .args(["sync", p.to_str().unwrap()])
        .env("AUR_ID", "emulator")
        .env("AUR_SECRET", "wrong-secret-123")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("FAILED") && !stdout.contains("wrong-secret-123"),
        "{stdout}"
    );
    assert!(!stderr.contains("wrong-secret-123"), "{stderr}");
}
