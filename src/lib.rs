//! # contacts-etl
//!
//! Moves contacts between contact APIs and a data lake:
//!
//! - **Sources** ([`providers`]) extract the full contact list, then incremental deltas,
//!   from the Google Domain Shared Contacts API (GData v3, Atom XML), the Aurinko
//!   Contacts API (REST/JSON with sync tokens) and CardDAV address books (RFC 6352, with
//!   RFC 6578 sync tokens), into Arrow record batches of one unified schema ([`schema`],
//!   `schemas/contacts.v1.json`).
//! - **The lake** ([`lake`]) lands them as Delta Lake tables on local disk or S3; each
//!   run's data and the cursor it advances to commit together, and one sync at a time
//!   holds an account ([`lake::lease`]).
//! - **SQL** ([`sql`]) runs DataFusion over the lake, with time travel.
//! - **The reverse sink** ([`plan`]) diffs a desired state against the landed contacts and
//!   applies it back to any of the three providers through batched, conflict-safe writes,
//!   each on record before it is sent ([`plan::apply::Apply`]).
//! - **The emulator** (`emulator`, behind the default cargo feature of the same name)
//!   serves the Google and Aurinko APIs locally (CardDAV is tested against real servers),
//!   for tests, benchmarks and trying a pipeline before production. A library user who does not need it builds without it
//!   (`default-features = false`) and does not compile axum.
//!
//! The command-line tool (`contacts-etl`) is a thin layer over this library: every command
//! is a function or builder here ([`sync::run_sync`], [`status::status`],
//! [`state::change`], [`sql::query`], [`plan::apply::Apply`], …).
//!
//! ```no_run
//! # async fn demo() -> contacts_etl::Result<()> {
//! use contacts_etl::{config::Pipeline, plan, sync};
//! let pipeline = Pipeline::load("pipelines/emulator.toml")?;
//! let report = sync::run_sync(&pipeline, &sync::SyncOptions::default()).await?;
//! println!("{}", report.summary());
//! // Write a clean-up back: synced, planned, written on record, synced again.
//! let desired = "SELECT account, id, etag, upper(notes) AS notes FROM contacts \
//!                WHERE source = 'shared_contacts' AND notes IS NOT NULL";
//! let applied = plan::apply::Apply::desired(&pipeline, "shared_contacts", desired)
//!     .with_mode(plan::Mode::Update)
//!     .await?;
//! print!("{}", applied.summary());
//! # Ok(()) }
//! ```

pub mod arrow_util;
pub mod config;
#[cfg(feature = "emulator")]
pub mod demo;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod error;
pub mod http;
pub mod human;
pub mod lake;
pub mod model;
pub mod plan;
pub mod providers;
pub mod secret;
pub mod sql;
pub mod state;
pub mod status;
pub mod sync;
pub mod xml;

pub use error::{Error, Result};

#[cfg(test)]
mod architecture;
// The model's parts at the paths they always had.
pub use model::{schema, spill, verify};
