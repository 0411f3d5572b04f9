//! Raw capture: each entry kept as a standalone document (with the feed's namespace
//! declarations it needs) for the `raw` column, and an extended property's content
//! kept exactly as sent.

use std::borrow::Cow;

use quick_xml::events::BytesStart;

/// The content of a `gd:extendedProperty`, as the `xml` column holds it: the XML between
/// its tags exactly as sent (elements, text, entity references, CDATA and comments alike),
/// so one element, several sibling elements, plain text and mixed content all survive and
/// are written back as they came. Whitespace around element content is layout and is
/// trimmed; text-only content is kept as it is; whitespace alone is no content (null).
pub(super) fn ext_content(inner: &str) -> Option<Cow<'_, str>> {
    if inner.trim().is_empty() {
        None
    } else if inner.contains('<') {
        Some(Cow::Borrowed(inner.trim()))
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The feed's namespace declarations, each as its attribute name (`xmlns:gd`) and its
/// whole text (`xmlns:gd="…"`), to copy into each standalone entry.
pub(super) fn feed_decls(root: &BytesStart<'_>) -> Vec<(String, String)> {
    root.attributes()
        .flatten()
        .filter(|a| a.key.as_namespace_binding().is_some())
        .map(|a| {
            let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let value = String::from_utf8_lossy(&a.value).replace('"', "&quot;");
            (key.clone(), format!("{key}=\"{value}\""))
        })
        .collect()
}

/// Writes an entry cut from a feed parse as a document on its own to `out`: adds to the
/// entry's start tag the feed's namespace declarations it may use, except those the
/// entry's start tag makes itself (`own`, attribute names such as `xmlns:gd`, as the
/// parser read them).
///
/// A prefix the entry never writes is left out: a feed may declare many namespaces
/// (an independent server declared nine), and copying all of them into every entry made
/// `raw` a fifth larger than the entry and its buffers cross the allocator's mapping
/// threshold on every page. "May use" is a superset: any `prefix:` the entry's text
/// holds after a character that cannot be part of a name counts, so a prefix written in
/// an attribute value or text (a QName in content) keeps its declaration too.
pub(super) fn standalone(
    entry: &str,
    decls: &[(String, String)],
    own: &[String],
    out: &mut String,
) {
    let name_end = entry.as_bytes()[1..]
        .iter()
        .position(|&c| c.is_ascii_whitespace() || c == b'>' || c == b'/')
        .map(|i| i + 1)
        .unwrap_or(entry.len());
    let used = used_prefixes(entry, decls);
    out.push_str(&entry[..name_end]);
    for (i, (key, decl)) in decls.iter().enumerate() {
        if used.get(i).copied().unwrap_or(true) && !own.contains(key) {
            out.push(' ');
            out.push_str(decl);
        }
    }
    out.push_str(&entry[name_end..]);
}

/// For each declaration (`xmlns` or `xmlns:p`), whether `entry` may use it: the default
/// namespace always (the entry element is in it), a prefix when `p:` occurs in the text
/// after a character that is not part of a name. One vectorised pass over the entry's
/// colons, each compared with the prefixes not yet seen only, which stops once every
/// declaration is taken.
fn used_prefixes(entry: &str, decls: &[(String, String)]) -> Vec<bool> {
    let mut used: Vec<bool> = decls.iter().map(|(k, _)| k == "xmlns").collect();
    // The prefixes still to find (an empty one names no prefix: never used).
    let mut wanted: smallvec::SmallVec<[(usize, &[u8]); 8]> = decls
        .iter()
        .enumerate()
        .filter(|(i, _)| !used[*i])
        .filter_map(|(i, (k, _))| {
            let p = k.as_bytes().strip_prefix(b"xmlns:")?;
            (!p.is_empty()).then_some((i, p))
        })
        .collect();
    let b = entry.as_bytes();
    let name_byte =
        |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.') || c >= 0x80;
    for colon in memchr::memchr_iter(b':', b) {
        if wanted.is_empty() {
            break;
        }
        let before = &b[..colon];
        wanted.retain(|(i, p)| {
            // The last byte first: most colons end no wanted prefix, and a call to
            // compare slices for each was most of this pass.
            let found = before.last() == p.last()
                && before.ends_with(p)
                && before[..before.len() - p.len()]
                    .last()
                    .is_none_or(|&c| !name_byte(c));
            if found {
                used[*i] = true;
            }
            !found
        });
    }
    used
}
