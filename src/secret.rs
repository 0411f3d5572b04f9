//! Secrets: a string whose `Debug` and `Display` never show the value.
//!
//! Every secret made is also remembered, so that [`redact`] can take it out of text the
//! process did not write itself: a hostile or broken server may echo the credentials it
//! received into an error page, a redirect target or a value that fails to decode, and
//! that text ends up in error messages, logs and `sync_runs`.

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

/// Secrets shorter than this are not searched for: they would match ordinary words.
const MIN_REDACTED_LEN: usize = 8;

/// Every secret value this process has made, longest first.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn remember(v: &str) {
    if v.len() < MIN_REDACTED_LEN {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    if !known.iter().any(|k| k == v) {
        known.push(v.to_string());
        // Longest first: a header value ("Bearer X") goes before the token X inside it.
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// `text` with every secret this process has made replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = Cow::Owned(out.replace(k.as_str(), "***"));
        }
    }
    out
}

/// A secret value (token, password, private key). Printing it shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (and remembers it for [`redact`]).
    pub fn new(v: impl Into<String>) -> Self {
        let v = v.into();
        remember(&v);
        Secret(v)
    }
    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_redacted() {
        let s = super::Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn known_secrets_are_taken_out_of_text() {
        let _t = super::Secret::new("tok-0123456789");
        let _h = super::Secret::new("Bearer tok-0123456789");
        let _short = super::Secret::new("abc");
        assert_eq!(
            super::redact("401: Bearer tok-0123456789, again tok-0123456789; abc"),
            "401: ***, again ***; abc"
        );
        assert!(matches!(
            super::redact("nothing"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
