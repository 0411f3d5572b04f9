//! The emulators checked by clients nobody here wrote: the real gdata-python3 library
//! (Google) and plain urllib (Aurinko), from tests/python/.

use std::process::Command;

use contacts_etl::emulator::{Emulator, EmulatorConfig};

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdata_python3_drives_the_google_emulator() {
    let Some(py) = crate::require_python("gdata_python3_drives_the_google_emulator") else {
        return;
    };
    let emu = Emulator::start(crate::google_only(250)).await.unwrap();
    let host = emu.url().trim_start_matches("http://").to_string();
    let (domain, token) = (
        emu.config().google_domain.clone(),
        emu.config().token.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script("gdata_conformance.py"))
            .args([&host, &domain, &token, "250"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"));
    let stats = emu.stats();
    assert_eq!(stats["google.batch"], 1);
    assert!(stats["google.feed"] >= 3);
    // What the library wrote is what the emulator now holds: 250 - 0 + 100 batch inserts.
    assert_eq!(emu.google_truth().contacts.len(), 350);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_drives_the_aurinko_emulator() {
    let Some(py) = crate::require_python("plain_http_drives_the_aurinko_emulator") else {
        return;
    };
    let emu = Emulator::start(EmulatorConfig {
        aurinko_page_size: 40,
        ..crate::aurinko_only(1, 130)
    })
    .await
    .unwrap();
    let (url, token) = (emu.url().to_string(), emu.aurinko_token("101"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script("aurinko_conformance.py"))
            .args([&url, &token, "130"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curl_loop_pages_through_a_large_feed() {
    // What a shell user would do: follow next links with curl until none is left.
    let emu = Emulator::start(crate::google_only(5000)).await.unwrap();
    let url = format!(
        "{}/m8/feeds/contacts/example.com/full?max-results=1000",
        emu.url()
    );
    let token = emu.config().token.clone();
    let total = tokio::task::spawn_blocking(move || {
        let mut next = Some(url);
        let mut ids = std::collections::HashSet::new();
        while let Some(u) = next.take() {
            let out = Command::new("curl")
                .args([
                    "-sf",
                    "-H",
                    &format!("Authorization: Bearer {token}"),
                    "-H",
                    "GData-Version: 3.0",
                    &u,
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            let body = String::from_utf8(out.stdout).unwrap();
            for part in body.split("<id>").skip(2) {
                ids.insert(part.split('<').next().unwrap().to_string());
            }
            next = body
                .split("<link rel=\"next\" type=\"application/atom+xml\" href=\"")
                .nth(1)
                .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"));
        }
        ids.len()
    })
    .await
    .unwrap();
    assert_eq!(total, 5000);
}
