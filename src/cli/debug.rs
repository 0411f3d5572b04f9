//! What only tests run: a panic on purpose (`contacts-etl debug-panic`, hidden from
//! `--help`), to check that a bug reaches the user as one line and exit 101.

use contacts_etl::Result;

/// Panics inside a task of the runtime, as a bug in a sync's or an apply's task would,
/// and awaits it.
pub async fn panic_in_a_task() -> Result<u8> {
    let task = tokio::spawn(async {
        let empty: Vec<u8> = Vec::new();
        // An index past the end, as a decoder bug would make.
        let at = std::hint::black_box(3);
        empty[at]
    });
    match task.await {
        Ok(_) => Ok(0),
        // The panic hook has said what happened; `main` ends with 101.
        Err(_) => Ok(101),
    }
}
