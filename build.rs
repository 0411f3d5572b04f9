//! Links the `contacts-etl` binary as a position-dependent executable on Linux.
//!
//! A position-independent binary of this size (DataFusion, Delta, arrow) carries about
//! 300,000 relocations; applying them at every start writes to 5 MiB of relocated
//! read-only data, about 1,500 page faults: 7 ms of a run that, incremental, takes 80 ms.
//! Without PIE a start takes 2 ms (BENCHMARKS.md, B4). The price is that the binary's own
//! code and data load at a fixed address (libraries, heap and stack are still randomized).
//! Build with `CONTACTS_ETL_PIE=1` to keep PIE.

fn main() {
    println!("cargo:rerun-if-env-changed=CONTACTS_ETL_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if linux && std::env::var_os("CONTACTS_ETL_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
