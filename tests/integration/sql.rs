//! SQL over the lake: answers checked against the emulator's truth, exports to the S3
//! server read back, time travel, and error messages.

use std::collections::BTreeMap;

use arrow::array::AsArray;
use contacts_etl::config::Pipeline;
use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::sql::{AsOf, query, query_as_of};

use crate::{PipelineSpec, assert_ok, sync, write_pipeline};

fn int(b: &arrow::array::RecordBatch, col: usize, row: usize) -> i64 {
    let c = arrow::compute::cast(b.column(col), &arrow::datatypes::DataType::Int64).unwrap();
    c.as_primitive::<arrow::datatypes::Int64Type>().value(row)
}

fn text(b: &arrow::array::RecordBatch, col: usize, row: usize) -> String {
    let c = arrow::compute::cast(b.column(col), &arrow::datatypes::DataType::Utf8).unwrap();
    c.as_string::<i32>().value(row).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_match_the_truth_and_time_travel_returns_earlier_states() {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 400,
        aurinko_accounts: 2,
        aurinko_contacts: 150,
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
    let first = sync(&p, false).await;
    assert_ok(&first);
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let count_after_first = emu.google_truth().contacts.len() as i64;
    let m = emu.mutate_google(30, 10, 20);
    assert_ok(&sync(&p, false).await);

    // Counts per account.
    let rows = query(
        &lake,
        "SELECT account, count(*) FROM contacts GROUP BY account ORDER BY account",
    )
    .await
    .unwrap();
    let got: BTreeMap<String, i64> = rows
        .iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|i| (text(b, 0, i), int(b, 1, i)))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut want = BTreeMap::new();
    want.insert(
        "101".to_string(),
        emu.aurinko_truth("101").unwrap().contacts.len() as i64,
    );
    want.insert(
        "102".to_string(),
        emu.aurinko_truth("102").unwrap().contacts.len() as i64,
    );
    want.insert(
        "example.com".to_string(),
        emu.google_truth().contacts.len() as i64,
    );
    assert_eq!(got, want);

    // E-mail domain counts, through the flattening view.
    let rows = query(&lake, "SELECT lower(split_part(address, '@', 2)) AS d, count(*) FROM contact_emails WHERE account = 'example.com' GROUP BY 1").await.unwrap();
    let got: BTreeMap<String, i64> = rows
        .iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|i| (text(b, 0, i), int(b, 1, i)))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for c in emu.google_truth().contacts {
        for e in c.emails {
            *want
                .entry(e.address.unwrap().split('@').nth(1).unwrap().to_lowercase())
                .or_default() += 1;
        }
    }
    assert_eq!(got, want);

    // A join of changes to runs: per mode, the changes each run logged.
    let rows = query(&lake, "SELECT r.mode, count(*) FROM contact_changes c JOIN sync_runs r ON c._run_id = r.run_id AND c.source = r.source AND c.account = r.account WHERE c.account = 'example.com' GROUP BY r.mode").await.unwrap();
    let got: BTreeMap<String, i64> = rows
        .iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|i| (text(b, 0, i), int(b, 1, i)))
                .collect::<Vec<_>>()
        })
        .collect();
    let (u, d) = crate::expected_counts(&m);
    assert_eq!(
        got,
        BTreeMap::from([
            ("full".to_string(), count_after_first),
            ("incremental".to_string(), u + d)
        ])
    );

    // Time travel: as of the first run, and one table at a Delta version.
    let rows = query_as_of(
        &lake,
        "SELECT count(*) FROM contacts WHERE account = 'example.com'",
        &AsOf::Run(first.run_id.clone()),
    )
    .await
    .unwrap();
    assert_eq!(int(&rows[0], 0, 0), count_after_first);
    let rows = query(&lake, "SELECT count(*) FROM \"contacts@v0\"")
        .await
        .unwrap();
    assert_eq!(int(&rows[0], 0, 0), 0, "version 0 is the empty table");
    let rows = query(&lake, "SELECT count(*) FROM \"sync_runs@v0\"")
        .await
        .unwrap();
    assert_eq!(int(&rows[0], 0, 0), 0);

    // Errors: an unknown table lists the tables; a syntax error gives its position.
    let e = query(&lake, "SELECT * FROM contactz")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("contactz") && e.contains("Tables here") && e.contains("contact_changes"),
        "{e}"
    );
    let e = query(&lake, "SELECT id FROM contacts WHERE WHERE id = 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Line: 1") || e.contains("Column"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_export_to_the_s3_server_reads_back_equal() {
    let Some(env) = crate::require_s3("a_parquet_export_to_the_s3_server_reads_back_equal") else {
        return;
    };
    let emu = Emulator::start(crate::google_only(200)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let sql = "SELECT id, display_name, emails FROM contacts ORDER BY id";
    let bucket = env
        .get("AWS_BUCKET")
        .cloned()
        .unwrap_or_else(|| "etl-test".into());
    let key = format!("exports/{}.parquet", uuid::Uuid::new_v4());
    let out = std::process::Command::new(crate::bin())
        .args([
            "query",
            p.to_str().unwrap(),
            sql,
            "--format",
            "parquet",
            "--output",
            &format!("s3://{bucket}/{key}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(&env["AWS_ENDPOINT"])
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    use object_store::ObjectStoreExt;
    let bytes = store
        .get(&object_store::path::Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let back: Vec<_> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let direct = query(&lake, sql).await.unwrap();
    let schema = direct[0].schema();
    let a = arrow::compute::concat_batches(&schema, &direct).unwrap();
    let b = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
    assert_eq!(a.num_rows(), 200);
    assert_eq!(
        contacts_etl::sql::render(&[a], "json").unwrap(),
        contacts_etl::sql::render(&[b], "json").unwrap()
    );
}
