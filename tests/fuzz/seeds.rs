//! Real inputs the byte mutations start from: pages the emulator renders over loopback,
//! the vCard fixtures, and what the write-back renders.

use std::sync::{Arc, OnceLock};

use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::model::schema::ContactRecord;
use contacts_etl::providers::google::decode::{RecordContext, decode_feed};

/// The record context every target decodes with.
pub fn ctx() -> RecordContext {
    RecordContext {
        source: "s".into(),
        account: "example.com".into(),
        run_id: "r".into(),
        synced_at_us: 0,
    }
}

/// What the emulator served: Google feed pages and Aurinko sync pages.
pub struct Served {
    pub google: Vec<Vec<u8>>,
    pub aurinko: Vec<Vec<u8>>,
}

/// Fetched once per test process: a few small pages of each API.
pub fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(fetch())
    })
}

async fn fetch() -> Served {
    let emu = Emulator::start(EmulatorConfig {
        google_contacts: 9,
        aurinko_accounts: 1,
        aurinko_contacts: 9,
        aurinko_page_size: 3,
        aurinko_ready_after: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = reqwest::Client::new();
    let tok = emu.config().token.clone();
    let mut google = Vec::new();
    for start in [1, 4, 7, 10] {
        let page = c
            .get(format!(
                "{}/m8/feeds/contacts/example.com/full?max-results=3&start-index={start}",
                emu.url()
            ))
            .header("Authorization", format!("Bearer {tok}"))
            .header("GData-Version", "3.0")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        google.push(page.to_vec());
    }
    let auth = format!("Bearer {}", emu.aurinko_token("101"));
    let s: serde_json::Value = c
        .post(format!("{}/v1/contacts/sync", emu.url()))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut aurinko = Vec::new();
    let mut query = vec![(
        "deltaToken",
        s["syncUpdatedToken"].as_str().unwrap().to_string(),
    )];
    for _ in 0..4 {
        let page = c
            .get(format!("{}/v1/contacts/sync/updated", emu.url()))
            .query(&query)
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&page).unwrap();
        aurinko.push(page.to_vec());
        match v["nextPageToken"].as_str() {
            Some(t) => query = vec![("pageToken", t.to_string())],
            None => break,
        }
    }
    let deleted = c
        .get(format!("{}/v1/contacts/sync/deleted", emu.url()))
        .query(&[(
            "deltaToken",
            s["syncDeletedToken"].as_str().unwrap_or_default(),
        )])
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    aurinko.push(deleted.to_vec());
    Served { google, aurinko }
}

/// The contacts of the emulator's Google pages, as the decoder reads them.
pub fn records() -> &'static Vec<ContactRecord> {
    static RECORDS: OnceLock<Vec<ContactRecord>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        served()
            .google
            .iter()
            .flat_map(|p| decode_feed(p, &ctx(), "seed").unwrap().records().unwrap())
            .collect()
    })
}

/// A test fixture's bytes.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Seeds as the mutation strategies share them.
pub fn shared(v: Vec<Vec<u8>>) -> Arc<Vec<Vec<u8>>> {
    Arc::new(v)
}
