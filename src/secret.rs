//! Secrets: a string whose `Debug` and `Display` never show the value.
//!
//! Every secret made is also remembered, so that [`redact`] can take it out of text the
//! process did not write itself: a hostile or broken server may echo the credentials it
//! received into an error page, a redirect target or a value that fails to decode, and
//! that text ends up in error messages, logs and `sync_runs`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Mutex;

/// Secrets shorter than this are searched for only as whole words: inside a longer word
/// they would match ordinary text ("abc" in "abcd").
const MIN_REDACTED_LEN: usize = 8;
/// Shorter secrets are not searched for at all.
const MIN_WORD_LEN: usize = 3;

/// One form of a secret to take out of text.
struct Known {
    text: String,
    /// Match only where no letter or digit is on either side.
    whole_word: bool,
}

/// Every form of every secret value this process has made.
static KNOWN: Mutex<KnownSet> = Mutex::new(KnownSet {
    forms: Vec::new(),
    sorted: true,
    seen: None,
});

/// The forms, sorted longest first when text is redacted (not at each insert: a pipeline
/// of 10,000 accounts makes 10,000 tokens).
struct KnownSet {
    forms: Vec<Known>,
    sorted: bool,
    seen: Option<std::collections::HashSet<String>>,
}

/// The forms a secret can take in text a server sends back: as is; the credential inside
/// an `Authorization` value (`Basic <base64>`, `Bearer <token>`), the `user:password`
/// that base64 holds and the password in it; and each of those percent-encoded, base64
/// encoded (standard and URL-safe) and JSON-escaped.
fn forms(v: &str) -> Vec<String> {
    use base64::Engine;
    let mut out = vec![v.to_string()];
    let mut base = Vec::new();
    let lower = v.to_ascii_lowercase();
    if lower.starts_with("basic ") || lower.starts_with("bearer ") {
        // The header value itself only as is: its credential is what gets encoded.
        let cred = v.split_once(' ').map(|(_, c)| c.trim()).unwrap_or_default();
        base.push(cred.to_string());
        if lower.starts_with("basic ")
            && let Ok(plain) = base64::engine::general_purpose::STANDARD.decode(cred)
            && let Ok(plain) = String::from_utf8(plain)
        {
            if let Some((_, password)) = plain.split_once(':') {
                base.push(password.to_string());
            }
            base.push(plain);
        }
    } else {
        base.push(v.to_string());
    }
    for b in base {
        let encoded: String = url::form_urlencoded::byte_serialize(b.as_bytes()).collect();
        let path_encoded = encoded.replace('+', "%20");
        let json = serde_json::to_string(&b).unwrap_or_default();
        let json = json.trim_matches('"').to_string();
        let b64 = base64::engine::general_purpose::STANDARD.encode(b.as_bytes());
        let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.as_bytes());
        let b64_bare = b64.trim_end_matches('=').to_string();
        out.extend([encoded, path_encoded, json, b64, b64_url, b64_bare]);
        out.push(b);
    }
    out.sort();
    out.dedup();
    out
}

fn remember(v: &str) {
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    for f in forms(v) {
        if f.chars().count() < MIN_WORD_LEN || !known.seen.get_or_insert_default().insert(f.clone())
        {
            continue;
        }
        known.forms.push(Known {
            whole_word: f.len() < MIN_REDACTED_LEN,
            text: f,
        });
        known.sorted = false;
    }
}

/// `text` with every secret this process has made, in every form [`forms`] lists,
/// replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if !known.sorted {
        // Longest first: a header value ("Bearer X") goes before the token X inside it.
        known.forms.sort_by_key(|k| std::cmp::Reverse(k.text.len()));
        known.sorted = true;
    }
    let mut out = Cow::Borrowed(text);
    for k in known.forms.iter() {
        if !out.contains(k.text.as_str()) {
            continue;
        }
        out = Cow::Owned(if k.whole_word {
            replace_words(&out, &k.text)
        } else {
            out.replace(k.text.as_str(), "***")
        });
    }
    out
}

/// `text` with `word` replaced by `***` where no letter or digit touches it.
fn replace_words(text: &str, word: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let free = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        out.push_str(&rest[..at]);
        if free(before) && free(after) {
            out.push_str("***");
        } else {
            out.push_str(word);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Text from outside (a server's error, a file) made safe to print and store: secrets
/// redacted, and control characters other than newline and tab shown as `\u{..}`, so
/// that no escape sequence reaches a terminal (a title set, a screen cleared, a line
/// overwritten by a carriage return).
pub fn printable(text: &str) -> Cow<'_, str> {
    let text = redact(text);
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
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

    /// A Basic credential echoed back in any form (the base64, `user:password`, the
    /// password alone, URL-encoded, a short password as a word) is taken out; a short
    /// password inside another word is not (it would garble ordinary text).
    #[test]
    fn every_form_of_a_credential_is_taken_out() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:hunt3r");
        let _h = super::Secret::new(format!("Basic {b64}"));
        let _p = super::Secret::new("hunt3r");
        let _long = super::Secret::new("p@ss w/rd+long");
        for (text, want) in [
            (format!("echo {b64}"), "echo ***"),
            ("user alice:hunt3r".to_string(), "user ***"),
            ("Wrong password hunt3r.".to_string(), "Wrong password ***."),
            ("hunt3rs stay".to_string(), "hunt3rs stay"),
            ("x=p%40ss+w%2Frd%2Blong".to_string(), "x=***"),
            ("x=p%40ss%20w%2Frd%2Blong".to_string(), "x=***"),
        ] {
            assert_eq!(super::redact(&text), want, "{text}");
        }
    }

    /// Terminal escapes and carriage returns from a server are shown, not obeyed.
    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(
            super::printable("a\x1b]0;title\x07b\rsynced\nnext\tc"),
            "a\\u{1b}]0;title\\u{7}b\\u{d}synced\nnext\tc"
        );
        assert!(matches!(
            super::printable("plain\ntext"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn known_secrets_are_taken_out_of_text() {
        let _t = super::Secret::new("tok-0123456789");
        let _h = super::Secret::new("Bearer tok-0123456789");
        let _short = super::Secret::new("ab");
        assert_eq!(
            super::redact("401: Bearer tok-0123456789, again tok-0123456789; ab"),
            "401: ***, again ***; ab"
        );
        assert!(matches!(
            super::redact("nothing"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
