//! `contacts-etl schema`: the unified contact schema as JSON.

use contacts_etl::Result;

use super::output::out;

/// The example of `schema --help`.
pub const EXAMPLES: &str = "\
Example:
  contacts-etl schema > contacts.v1.json";

/// Prints the schema (identical to schemas/contacts.v1.json).
pub fn run() -> Result<u8> {
    out(&contacts_etl::schema::render_schema_json(
        &contacts_etl::schema::contacts_schema(),
    )?)?;
    Ok(0)
}
