//! The model: what every other part speaks. It depends on nothing else of the crate but
//! the base (`error`, `secret`, `arrow_util`), so it can be read, tested and changed alone.
//!
//! - [`schema`]: the unified contact schema (`schemas/contacts.v1.json`), the
//!   [`schema::ContactRecord`] and the typed builders that turn rows into Arrow batches.
//! - [`spill`]: an extract's batches, in memory or spilled to disk (flat memory).
//! - [`extract`]: what one account's extract hands to the lake: batches, deletes, cursor,
//!   mode.
//! - [`write`]: write-back operations and their outcomes, as enums that carry their data.
//! - [`photo`]: the photo operations and fetched photos that move between the parts.
//! - [`verify`]: landed contacts compared with an expected set, field by field.

pub mod extract;
pub mod photo;
pub mod schema;
pub mod spill;
pub mod verify;
pub mod write;
