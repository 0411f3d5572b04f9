//! A seventh target, beside the six of issue 34: the other decoders of what a server
//! answers — CardDAV's `207 Multi-Status` reader (`dav::parse_multistatus`), its
//! `supported-address-data` and invalid-token checks, Google's batch answer
//! (`writeback::parse_batch_response`), and `http::describe_body`, which every error
//! shows — on mutated real answers (the Radicale and Xandikos fixtures, the emulator's
//! pages, a batch answer in the GData layout).

use proptest::prelude::*;

use contacts_etl::http::describe_body;
use contacts_etl::providers::carddav::dav::{
    is_invalid_sync_token, parse_multistatus, supported_address_data,
};
use contacts_etl::providers::google::writeback::parse_batch_response;

use crate::inputs::mutated;
use crate::seeds::{fixture, served, shared};
use crate::{error_is_worded, fuzz};

/// Reads a body every way a server's answer is read; nothing panics, an `Ok` multistatus
/// gives hrefs that are not empty.
pub fn check(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_multistatus(body, "report") {
        Ok(m) => {
            for r in &m.responses {
                prop_assert!(!r.href.is_empty(), "a response without href");
            }
        }
        Err(e) => error_is_worded(&e)?,
    }
    if let Err(e) = supported_address_data(body, "props") {
        error_is_worded(&e)?;
    }
    if let Err(e) = parse_batch_response(body) {
        error_is_worded(&e)?;
    }
    let _ = is_invalid_sync_token(403, body);
    let _ = is_invalid_sync_token(409, body);
    let _ = describe_body(body);
    Ok(())
}

fn seeds() -> Vec<Vec<u8>> {
    let names = [
        "radicale-collections.xml",
        "radicale-home.xml",
        "radicale-members.xml",
        "radicale-multiget.xml",
        "radicale-principal.xml",
        "radicale-sync-initial.xml",
        "radicale-sync-invalid.txt",
        "radicale-sync.xml",
        "radicale-token.xml",
        "xandikos-multiget.xml",
        "xandikos-sync-invalid.txt",
        "xandikos-sync.xml",
    ];
    let mut s: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fixture(&format!("tests/fixtures/carddav/{n}")))
        .collect();
    s.push(served().aurinko[0].clone());
    s.push(
        br#"{"error":{"code":"x","message":"m"},"originalError":{"error":{"message":"o"}}}"#
            .to_vec(),
    );
    s.push(
        b"<errors><error><code>c</code><internalReason>r</internalReason></error></errors>"
            .to_vec(),
    );
    s
}

#[test]
fn fuzz_answers_mutated() {
    fuzz(
        "answers_mutated",
        mutated(shared(seeds())),
        Vec::clone,
        |b| check(&b),
    );
}
