//! What Aurinko refuses before anything is sent: nothing beyond the common rules. Its
//! documented schema has no limits the client can check; the API's 400 decides.

use crate::model::schema::ContactRecord;
use crate::providers::Rules;

/// Aurinko's write rules.
pub struct AurinkoRules;

impl Rules for AurinkoRules {
    fn fields(&self, _: &ContactRecord) -> Vec<String> {
        Vec::new()
    }
    fn limits(&self, _: &ContactRecord, _: Option<&ContactRecord>, _: &[String]) -> Vec<String> {
        Vec::new()
    }
}
