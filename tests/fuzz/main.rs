//! The fuzz targets of the decoders and file readers (issue 34, "no panic from input").
//!
//! Each target is a proptest property run by [`fuzz`]: structure-aware generators (a feed,
//! a page, a vCard, a plan, a desired file built from their grammar with odd values) and
//! byte mutations of real seed inputs (pages the emulator renders, the fixtures, a plan
//! `plan::saved::write` wrote). Every target asserts that nothing panics and that an `Ok`
//! result is well formed; a few check a round trip.
//!
//! In `cargo test` (and so in `scripts/test.sh`) each target runs a few dozen cases with a
//! fixed seed, in seconds, beside the regression inputs (`regressions.rs`). For minutes of
//! fuzzing, `scripts/fuzz.sh [seconds-per-target]` sets `CONTACTS_ETL_FUZZ_SECS`: each
//! target then runs rounds of random seeds until its time is up, prints its case count
//! and time, and saves the smallest crashing input it found under
//! `$CARGO_TARGET_TMPDIR/fuzz-crashes/` before it fails.

mod answers;
mod atom;
mod aurinko;
mod desired;
mod dv;
mod inputs;
mod regressions;
mod saved_plan;
mod seeds;
mod vcard;

use std::cell::Cell;
use std::fmt::Debug;
use std::sync::Once;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

thread_local! {
    /// Set while a target's input runs: its panics are findings, reported by the runner
    /// with the input, so the default hook's trace is not printed for each shrink step.
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
}

/// A panic hook that stays quiet inside a target and defers to the default one elsewhere.
fn quiet_panics_in_targets() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_TARGET.with(Cell::get) {
                default(info);
            }
        }));
    });
}

/// How long (`CONTACTS_ETL_FUZZ_SECS`) each target runs; `None`: the short run of `cargo
/// test`.
fn budget() -> Option<Duration> {
    std::env::var("CONTACTS_ETL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// Cases per round: the short run's whole count, or one round of a timed run.
fn cases_per_round() -> u32 {
    std::env::var("CONTACTS_ETL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if budget().is_some() { 256 } else { 24 })
}

/// Runs `check` on inputs drawn from `strategy`: one fixed-seed round in a normal test
/// run, rounds of random seeds for the time of [`budget`] under `scripts/fuzz.sh`. A case
/// that panics or fails is shrunk to the smallest input that still does, saved (as
/// `save` renders it) and reported with the panic.
pub fn fuzz<S>(
    name: &str,
    strategy: S,
    save: impl Fn(&S::Value) -> Vec<u8>,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    quiet_panics_in_targets();
    let started = Instant::now();
    let (mut cases, mut round) = (0u64, 0u64);
    let timed = budget();
    let base_seed: u64 = match timed {
        Some(_) => rand::random(),
        None => 0x5eed_0034,
    };
    loop {
        let seed = base_seed.wrapping_add(round);
        let config = Config {
            cases: cases_per_round(),
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            max_shrink_time: 60_000,
            max_shrink_iters: 4096,
            max_global_rejects: u32::MAX,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |input| {
            IN_TARGET.with(|f| f.set(true));
            let out = check(input);
            IN_TARGET.with(|f| f.set(false));
            out
        });
        IN_TARGET.with(|f| f.set(false));
        cases += u64::from(cases_per_round());
        round += 1;
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                let file = save_crash(name, &save(&input));
                let shown = format!("{input:?}");
                let shown: String = shown.chars().take(2000).collect();
                panic!(
                    "fuzz {name}: crash after about {cases} cases (seed {seed}): {reason}\n  saved: {}\n  input: {shown}",
                    file.display()
                );
            }
            Err(TestError::Abort(reason)) => panic!("fuzz {name}: aborted: {reason}"),
        }
        match timed {
            Some(t) if started.elapsed() < t => continue,
            _ => break,
        }
    }
    eprintln!(
        "\nfuzz {name}: {cases} cases in {:.1} s, 0 crashes",
        started.elapsed().as_secs_f64()
    );
}

/// Writes a crashing input where `scripts/fuzz.sh` tells to look, and returns its path.
fn save_crash(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    let _ = std::fs::create_dir_all(&dir);
    let digest = format!("{:016x}", fxhash(bytes));
    let path = dir.join(format!("{name}-{digest}.bin"));
    let _ = std::fs::write(&path, bytes);
    path
}

/// A small, stable hash of the input for the crash file's name.
fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Turns a `Result` whose error must be one of this crate's into a failed case when it is
/// well formed but says nothing (an error message is what the user reads).
pub fn error_is_worded(e: &contacts_etl::Error) -> Result<(), TestCaseError> {
    let text = e.to_string();
    if text.trim().is_empty() {
        return Err(TestCaseError::fail(format!("an empty error: {e:?}")));
    }
    Ok(())
}
