//! Parquet through object_store to the local filesystem and to the S3 server, read back.

use std::sync::Arc;

use bytes::Bytes;
use contacts_etl::schema::{ContactRecord, Email, records_to_batch};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn sample() -> arrow::array::RecordBatch {
    let recs: Vec<ContactRecord> = (0..50)
        .map(|i| ContactRecord {
            source: "s".into(),
            account: "a".into(),
            id: format!("{i:04x}"),
            display_name: Some(format!("Zoë «{i}» <&> 李")),
            emails: vec![Email {
                address: Some(format!("u{i}@example.com")),
                kind: Some("work".into()),
                primary: Some(i % 2 == 0),
                ..Default::default()
            }],
            _run_id: "r".into(),
            _synced_at: 1,
            ..Default::default()
        })
        .collect();
    records_to_batch(&recs).unwrap()
}

async fn round_trip(store: Arc<dyn ObjectStore>) {
    let batch = sample();
    let mut buf = Vec::new();
    {
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let path = ObjPath::from(format!("roundtrip/{}.parquet", uuid::Uuid::new_v4()));
    store.put(&path, buf.clone().into()).await.unwrap();
    let got: Bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), buf.len());
    let reader = ParquetRecordBatchReaderBuilder::try_new(got)
        .unwrap()
        .build()
        .unwrap();
    let back: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let back = arrow::compute::concat_batches(&batch.schema(), &back).unwrap();
    assert_eq!(back, batch);
    store.delete(&path).await.unwrap();
}

#[tokio::test]
async fn parquet_round_trips_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn parquet_round_trips_on_the_s3_server() {
    let Some(env) = crate::require_s3("parquet_round_trips_on_the_s3_server") else {
        return;
    };
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(&env["AWS_ENDPOINT"])
        .with_allow_http(true)
        .with_bucket_name(
            env.get("AWS_BUCKET")
                .map(String::as_str)
                .unwrap_or("etl-test"),
        )
        .build()
        .unwrap();
    round_trip(Arc::new(store)).await;
}
