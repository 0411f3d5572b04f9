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

/// The rows of a two-column answer (text, count) as a map.
fn pairs(rows: &[arrow::array::RecordBatch]) -> BTreeMap<String, i64> {
    rows.iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|i| (text(b, 0, i), int(b, 1, i)))
                .collect::<Vec<_>>()
        })
        .collect()
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
    let got = pairs(&rows);
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
    let got = pairs(&rows);
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
    let got = pairs(&rows);
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

/// Every file under `dir` with its size: a statement that wrote a file or committed to a
/// table changes this.
fn tree(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().display().to_string(), m.len());
            }
        }
    }
    out
}

/// The Delta version of every table, read afresh.
async fn versions(p: &std::path::Path) -> Vec<Option<i64>> {
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(p).unwrap()).unwrap();
    let mut out = Vec::new();
    for kind in contacts_etl::lake::TableKind::ALL {
        out.push(
            lake.open(kind)
                .await
                .unwrap()
                .and_then(|t| t.version())
                .map(|v| v as i64),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_would_change_a_file_a_table_or_the_session_is_refused_everywhere() {
    let emu = Emulator::start(crate::google_only(20)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), &emu, &PipelineSpec::default());
    assert_ok(&sync(&p, false).await);
    let lake = contacts_etl::sync::lake_of(&Pipeline::load(&p).unwrap()).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.display();
    let writing = [
        format!("COPY (SELECT * FROM contacts) TO '{o}/copied.csv'"),
        format!("COPY contacts TO '{o}/copied.parquet' STORED AS PARQUET"),
        "INSERT INTO writeback_results SELECT * FROM writeback_results".to_string(),
        "INSERT INTO sync_runs SELECT * FROM sync_runs".to_string(),
        "INSERT INTO contacts SELECT * FROM contacts LIMIT 1".to_string(),
        "EXPLAIN ANALYZE INSERT INTO sync_runs SELECT * FROM sync_runs".to_string(),
        "DELETE FROM contacts".to_string(),
        "UPDATE contacts SET notes = 'x'".to_string(),
        "CREATE TABLE made AS SELECT * FROM contacts".to_string(),
        "CREATE VIEW v AS SELECT id FROM contacts".to_string(),
        format!("CREATE EXTERNAL TABLE ext STORED AS CSV LOCATION '{o}/ext.csv'"),
        "DROP TABLE contacts".to_string(),
        "DROP VIEW contact_emails".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
    ];
    let before = tree(dir.path());
    let versions_before = versions(&p).await;
    assert!(versions_before.iter().filter(|v| v.is_some()).count() >= 3);
    for sql in &writing {
        let e = query(&lake, sql).await.unwrap_err();
        assert!(
            matches!(e, contacts_etl::Error::Config { .. }) && e.to_string().contains("refused"),
            "query {sql}: {e}"
        );
        let e = match contacts_etl::plan::load_desired(&lake, sql, "shared", &|_| true).await {
            Err(e) => e,
            Ok(_) => panic!("--desired {sql} ran"),
        };
        assert!(
            matches!(e, contacts_etl::Error::Config { .. }),
            "--desired {sql}: {e}"
        );
        let e = match contacts_etl::plan::photos::load_desired_photos(&lake, sql, "example.com")
            .await
        {
            Err(e) => e,
            Ok(_) => panic!("--photos {sql} ran"),
        };
        assert!(
            matches!(e, contacts_etl::Error::Config { .. }),
            "--photos {sql}: {e}"
        );
        for args in [
            vec!["query", p.to_str().unwrap(), sql.as_str()],
            vec![
                "plan",
                p.to_str().unwrap(),
                "--source",
                "shared",
                "--desired",
                sql.as_str(),
            ],
        ] {
            let r = std::process::Command::new(crate::bin())
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&r.stderr);
            assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("refused") && err.contains("only reads"),
                "{err}"
            );
        }
        assert_eq!(tree(dir.path()), before, "{sql} changed a file");
    }
    assert_eq!(versions(&p).await, versions_before);
    assert!(!out.join("copied.csv").exists());

    // Reading statements still run.
    let tables = query(&lake, "SHOW TABLES").await.unwrap();
    let listed = contacts_etl::sql::render(&tables, "csv").unwrap();
    assert!(
        listed.contains("contacts") && listed.contains("writeback_results"),
        "{listed}"
    );
    let described = query(&lake, "DESCRIBE contacts").await.unwrap();
    let described = contacts_etl::sql::render(&described, "csv").unwrap();
    assert!(described.contains("given_name"), "{described}");
    let n = query(&lake, "SELECT count(*) FROM contacts").await.unwrap();
    assert_eq!(int(&n[0], 0, 0), 20);
    assert!(
        !query(&lake, "EXPLAIN SELECT id FROM contacts")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(tree(dir.path()), before);
}
