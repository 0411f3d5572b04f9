//! B7: decode throughput (MB/s on one core) of a 1,000-entry Google feed page, a
//! 1,000-record Aurinko page and a 1,000-vCard CardDAV `addressbook-multiget` answer, each
//! beside its anchor measured on the same bytes: a bare quick-xml `NsReader` scan that
//! resolves namespaces and unescapes text (Google, CardDAV), and
//! `serde_json::from_slice::<Value>`. CardDAV has two more: calcard's own parse of the
//! same vCards (with and without the multistatus around them) without our mapping, and a
//! bare scan of their lines.
//!
//! Run: `cargo bench --bench decode`.

// The binary's process settings, so the decoders are measured as a sync runs them.
#[path = "../src/tune.rs"]
mod tune;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use contacts_etl::emulator::{Emulator, EmulatorConfig};
use contacts_etl::model::schema::records_to_batch;
use contacts_etl::providers::aurinko::decode::{ContactJ, decode_contacts, parse_page};
use contacts_etl::providers::carddav::dav::parse_multistatus;
use contacts_etl::providers::carddav::decode::decode_vcard;
use contacts_etl::providers::google::decode::{RecordContext, decode_feed};

fn pages() -> (Vec<u8>, Vec<u8>) {
    // The allocator settings of the shipped binary (src/main.rs), so the decoders are
    // measured as they run; the anchors share them.
    tune::tune_process();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let emu = Emulator::start(EmulatorConfig {
            google_contacts: 1000,
            aurinko_accounts: 1,
            aurinko_contacts: 1000,
            aurinko_page_size: 1000,
            aurinko_ready_after: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let c = reqwest::Client::new();
        let tok = emu.config().token.clone();
        let g = c
            .get(format!(
                "{}/m8/feeds/contacts/example.com/full?max-results=1000",
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
        let s: serde_json::Value = c
            .post(format!("{}/v1/contacts/sync", emu.url()))
            .header(
                "Authorization",
                format!("Bearer {}", emu.aurinko_token("101")),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let d = s["syncUpdatedToken"].as_str().unwrap().to_string();
        let a = c
            .get(format!("{}/v1/contacts/sync/updated", emu.url()))
            .query(&[("deltaToken", d)])
            .header(
                "Authorization",
                format!("Bearer {}", emu.aurinko_token("101")),
            )
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        (g.to_vec(), a.to_vec())
    })
}

fn nsreader_scan(xml: &[u8]) -> usize {
    let mut r = quick_xml::reader::NsReader::from_reader(xml);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        match r.read_resolved_event_into(&mut buf).unwrap() {
            (_, quick_xml::events::Event::Text(t)) => n += t.decode().unwrap().len(),
            (_, quick_xml::events::Event::GeneralRef(g)) => n += g.decode().unwrap().len(),
            (res, quick_xml::events::Event::Start(s))
            | (res, quick_xml::events::Event::Empty(s)) => {
                n += matches!(res, quick_xml::name::ResolveResult::Bound(_)) as usize;
                for a in s.attributes() {
                    n += a.unwrap().unescape_value().unwrap().len();
                }
            }
            (_, quick_xml::events::Event::Eof) => break,
            _ => {}
        }
        buf.clear();
    }
    n
}

/// A bare scan of a vCard's content lines: unfolds continuation lines and splits each
/// logical line at its first colon (name and parameters, value); counts value bytes.
fn vcard_line_scan(card: &str) -> usize {
    let mut n = 0;
    let mut line = String::new();
    let mut flush = |line: &mut String| {
        if let Some(i) = line.find(':') {
            n += line.len() - i - 1;
        }
        line.clear();
    };
    for l in card.split('\n') {
        let l = l.strip_suffix('\r').unwrap_or(l);
        match l.strip_prefix([' ', '\t']) {
            Some(cont) => line.push_str(cont),
            None => {
                flush(&mut line);
                line.push_str(l);
            }
        }
    }
    flush(&mut line);
    n
}

/// A multiget answer of 1,000 vCards: the 3.0 fixture (Apple's shape, with a photo) under
/// 1,000 names, as Radicale writes it.
fn carddav_page() -> Vec<u8> {
    let card = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/carddav/v3.vcf"
    ))
    .unwrap();
    let card = quick_xml::escape::escape(card.as_str()).into_owned();
    let mut body = String::from(
        "<?xml version='1.0' encoding='utf-8'?>\n<multistatus xmlns=\"DAV:\" xmlns:CR=\"urn:ietf:params:xml:ns:carddav\">",
    );
    for i in 0..1000 {
        body.push_str(&format!(
            "<response><href>/alice/contacts/{i}.vcf</href><propstat><prop><getetag>\"e{i}\"</getetag><CR:address-data>{card}</CR:address-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>"
        ));
    }
    body.push_str("</multistatus>");
    body.into_bytes()
}

fn bench(c: &mut Criterion) {
    let (google, aurinko) = pages();
    let ctx = RecordContext {
        source: "s".into(),
        account: "example.com".into(),
        run_id: "r".into(),
        synced_at_us: 0,
    };
    let mut g = c.benchmark_group("google_page_1000_entries");
    g.throughput(Throughput::Bytes(google.len() as u64));
    g.bench_function("anchor_nsreader_scan", |b| {
        b.iter(|| black_box(nsreader_scan(black_box(&google))))
    });
    // Pages go straight to Arrow, as the Aurinko ones do.
    g.bench_function("decode_to_record_batch", |b| {
        b.iter(|| black_box(decode_feed(black_box(&google), &ctx, "p").unwrap().batch))
    });
    g.finish();
    let mut a = c.benchmark_group("aurinko_page_1000_records");
    a.throughput(Throughput::Bytes(aurinko.len() as u64));
    a.bench_function("anchor_serde_json_value", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&aurinko)).unwrap())
        })
    });
    // Pages go straight to Arrow: there is no record stage to measure on its own.
    a.bench_function("decode_to_record_batch", |b| {
        b.iter(|| {
            black_box(
                decode_contacts(
                    parse_page::<ContactJ>(black_box(&aurinko), "p")
                        .unwrap()
                        .records,
                    &ctx,
                    "p",
                )
                .unwrap()
                .batch,
            )
        })
    });
    a.finish();
    bench_carddav(c, &ctx);
}

/// The CardDAV group: a multistatus of 1,000 vCards, its anchors and the decode.
fn bench_carddav(c: &mut Criterion, ctx: &RecordContext) {
    let carddav = carddav_page();
    let mut d = c.benchmark_group("carddav_multiget_1000_vcards");
    d.throughput(Throughput::Bytes(carddav.len() as u64));
    d.bench_function("anchor_nsreader_scan", |b| {
        b.iter(|| black_box(nsreader_scan(black_box(&carddav))))
    });
    // The parser's own work on the same answer, without our mapping: the multistatus
    // read (as the decode reads it) and calcard's parse of each vCard into its tree.
    d.bench_function("anchor_multistatus_and_calcard_parse", |b| {
        b.iter(|| {
            let m = parse_multistatus(black_box(&carddav), "p").unwrap();
            let n: usize = m
                .responses
                .iter()
                .map(|r| {
                    match calcard::Parser::new(r.props.address_data.as_deref().unwrap()).entry() {
                        calcard::Entry::VCard(c) => c.entries.len(),
                        _ => 0,
                    }
                })
                .sum();
            black_box(n)
        })
    });
    // The vCards alone, without the XML around them: a bare scan of their lines
    // (unfolded, split at the first colon), the floor of any vCard reader.
    let cards: Vec<String> = parse_multistatus(&carddav, "p")
        .unwrap()
        .responses
        .into_iter()
        .map(|r| r.props.address_data.unwrap())
        .collect();
    d.bench_function("anchor_vcard_line_scan", |b| {
        b.iter(|| {
            black_box(
                cards
                    .iter()
                    .map(|c| vcard_line_scan(black_box(c)))
                    .sum::<usize>(),
            )
        })
    });
    d.bench_function("anchor_calcard_parse", |b| {
        b.iter(|| {
            black_box(
                cards
                    .iter()
                    .map(|c| match calcard::Parser::new(black_box(c)).entry() {
                        calcard::Entry::VCard(c) => c.entries.len(),
                        _ => 0,
                    })
                    .sum::<usize>(),
            )
        })
    });
    // calcard builds a tree of owned values per vCard; records are made from it, then
    // the batch.
    d.bench_function("decode_to_record_batch", |b| {
        b.iter(|| {
            let m = parse_multistatus(black_box(&carddav), "p").unwrap();
            let records: Vec<_> = m
                .responses
                .into_iter()
                .map(|r| {
                    decode_vcard(
                        r.props.address_data.unwrap(),
                        &r.href,
                        r.props.etag.as_deref(),
                        ctx,
                        "p",
                    )
                    .unwrap()
                })
                .collect();
            black_box(records_to_batch(&records).unwrap())
        })
    });
    d.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
