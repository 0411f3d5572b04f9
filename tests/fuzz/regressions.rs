//! Every input the fuzz targets found that broke a property, as a test that fails on the
//! code before its fix; and the panics issue 34 names, checked. Inputs too long for a
//! literal are files under `tests/fuzz/regressions/`, each read by the test that names it.

use contacts_etl::providers::carddav::dav::resource_id;
use contacts_etl::providers::carddav::decode::decode_vcard;

use crate::seeds::ctx;

/// A regression input's bytes.
#[allow(dead_code)]
fn input(name: &str) -> Vec<u8> {
    crate::seeds::fixture(&format!("tests/fuzz/regressions/{name}"))
}

/// Found by `vcard_generated` and `vcard_mutated`: a member href named `.vcf` alone gave
/// a contact whose id was empty (so it landed keyed by nothing). It has no resource id now,
/// and the card is refused naming the href.
#[test]
fn a_vcard_at_an_href_named_dot_vcf_has_no_id() {
    assert_eq!(resource_id("/alice/contacts/.vcf"), None);
    assert_eq!(resource_id("/alice/contacts/a.vcf"), Some("a"));
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nEND:VCARD\r\n".to_string();
    let e = decode_vcard(card, "/alice/contacts/.vcf", None, &ctx(), "card")
        .expect_err("an href without a name");
    assert!(
        e.to_string()
            .contains("/alice/contacts/.vcf names no resource"),
        "{e}"
    );
}

/// Issue 34 named `http::describe_body`'s cut at byte 400, which panicked inside a
/// character: it counts characters now. A body of multi-byte text, long enough to be cut
/// at every offset around the old byte limit, is described without a panic.
#[test]
fn an_error_body_of_multibyte_text_is_cut_between_characters() {
    for pad in 0..4 {
        let body = format!("{}{}", "a".repeat(pad), "é€𝄞".repeat(200));
        let shown = contacts_etl::http::describe_body(body.as_bytes());
        assert!(shown.chars().count() <= 301, "{}", shown.len());
        assert!(body.starts_with(shown.trim_end_matches('…')));
    }
}

/// Found by `saved_plan_mutated`: a plan file whose page header gives a bit width past its
/// type's panicked inside the Parquet reader (`num_bits <= size_of::<T>() * 8`); `apply
/// --plan` printed a panic instead of refusing the file. It is refused as unreadable now.
#[test]
fn a_saved_plan_with_a_bad_bit_width_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.parquet");
    std::fs::write(&path, input("saved_plan_bad_bit_width.parquet")).unwrap();
    let e = match contacts_etl::plan::saved::read(&path) {
        Ok(_) => panic!("a damaged plan was read"),
        Err(e) => e,
    };
    let text = e.to_string();
    assert!(
        text.contains("--plan") && text.contains("damaged Parquet data"),
        "{text}"
    );
    eprintln!("{text}");
}

/// Found by `desired_parquet_mutated`: a desired Parquet file whose footer gives a column a
/// type the reader does not implement panicked in the Parquet reader (`not implemented:
/// Type NONE not supported`); `plan --desired` printed a panic instead of refusing the
/// file. It is refused naming the file now.
#[test]
fn a_desired_parquet_file_of_an_unknown_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desired.parquet");
    std::fs::write(&path, input("desired_type_none.parquet")).unwrap();
    let lake = contacts_etl::lake::Lake::new(
        url::Url::parse("file:///nowhere/").unwrap(),
        std::collections::HashMap::new(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let spec = path.to_str().unwrap();
    let e = match rt.block_on(contacts_etl::plan::load_desired(&lake, spec, "s", &|_| {
        true
    })) {
        Ok(_) => panic!("a damaged desired file was read"),
        Err(e) => e,
    };
    let text = e.to_string();
    assert!(
        text.contains(spec) && text.contains("damaged Parquet data"),
        "{text}"
    );
}

/// Elements nested `n` deep inside a root `open`.
fn nested(open: &str, n: usize) -> Vec<u8> {
    format!("{open}{}", "<x>".repeat(n)).into_bytes()
}

/// Found by `answers_mutated`: a CardDAV answer of 65,536 nested elements overflowed
/// quick-xml's 16-bit nesting counter (`attempt to add with overflow` in
/// `NamespaceResolver::push`) inside `dav::parse_multistatus`; `supported_address_data`
/// and the Google batch answer's reader (`parse_batch_response`) read with the same
/// reader and had no bound either. Each refuses nesting past its bound now.
#[test]
fn answers_nested_past_the_readers_counter_are_refused() {
    let deep = 70_000;
    let dav = nested("<multistatus xmlns=\"DAV:\">", deep);
    let e = contacts_etl::providers::carddav::dav::parse_multistatus(&dav, "report")
        .expect_err("too deep");
    assert!(e.to_string().contains("nested deeper than"), "{e}");
    let e = contacts_etl::providers::carddav::dav::supported_address_data(&dav, "props")
        .expect_err("too deep");
    assert!(e.to_string().contains("nested deeper than"), "{e}");
    let batch = nested("<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry>", deep);
    let e = contacts_etl::providers::google::writeback::parse_batch_response(&batch)
        .expect_err("too deep");
    assert!(e.to_string().contains("nested deeper than"), "{e}");
}

/// A desired file at `name` holding `text`, read as `plan --desired` reads it.
fn load_desired(name: &str, text: &str) -> contacts_etl::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let lake = contacts_etl::lake::Lake::new(
        url::Url::parse("file:///nowhere/").unwrap(),
        std::collections::HashMap::new(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let spec = path.to_str().unwrap();
    rt.block_on(contacts_etl::plan::load_desired(&lake, spec, "s", &|_| {
        true
    }))
    .map(|_| ())
}

/// Found by `desired_csv_mutated` (2.1 GB peak of a fuzz run): a desired CSV whose header
/// repeats a field was read as a batch that wide before its unknown columns were refused
/// (a 0.8 MB file of 100,000 columns peaked at 1.8 GB, 300,000 at 5.4 GB), and the
/// refusal listed every column. A header wider than the contact schema is refused at
/// once now, naming the bound; a JSON row of more keys likewise.
#[test]
fn desired_files_wider_than_the_schema_are_refused_at_once() {
    let wide = 5_000;
    let csv = format!("id{}\n1{}\n", ",x".repeat(wide), ",".repeat(wide));
    let e = load_desired("d.csv", &csv)
        .expect_err("too wide")
        .to_string();
    assert!(
        e.contains("line 1: the header has more fields than the"),
        "{e:.300}"
    );
    let keys: Vec<String> = (0..wide).map(|i| format!("\"k{i}\":1")).collect();
    let json = format!("{{\"id\":\"1\",{}}}\n", keys.join(","));
    let e = load_desired("d.json", &json)
        .expect_err("too wide")
        .to_string();
    assert!(
        e.contains("row 1") && e.contains("more keys than the"),
        "{e:.300}"
    );
}
