//! Names read by namespace: the bindings in scope ([`Scopes`]), the namespaces the
//! decoder knows ([`Ns`]), and an element's attributes resolved and unescaped
//! ([`Attrs`]), each value a slice of the page where the XML allows.

use std::borrow::Cow;

use quick_xml::events::BytesStart;
use quick_xml::name::{NamespaceError, PrefixDeclaration, QName};

use super::{ATOM, GCONTACT, GD, OPENSEARCH, OPENSEARCH_V1, S};
use crate::error::{Context, Error, Kind, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ns {
    Atom,
    Gd,
    GContact,
    OpenSearch,
    Other,
}

/// The namespace a URI names (an empty one undeclares: no namespace).
pub(super) fn ns_of_uri(uri: &[u8]) -> Ns {
    match uri {
        ATOM => Ns::Atom,
        GD => Ns::Gd,
        GCONTACT => Ns::GContact,
        OPENSEARCH | OPENSEARCH_V1 => Ns::OpenSearch,
        _ => Ns::Other,
    }
}

pub(super) const XML_URI: &[u8] = b"http://www.w3.org/XML/1998/namespace";
pub(super) const XMLNS_URI: &[u8] = b"http://www.w3.org/2000/xmlns/";

/// The namespace bindings in scope, each resolved to the namespace the decoder knows it
/// by once, when it is declared. Resolving a name is then a look at the few prefixes in
/// scope, with no URI compared, and an element that declares nothing (all but the root of
/// a usual page) costs one search of its tag for `xmlns`. This is quick-xml's own
/// resolution (`NsReader`), rule for rule, including the bindings it refuses; the
/// reader's resolver walked every element's attributes a second time and compared URIs
/// for every name.
#[derive(Default)]
pub(super) struct Scopes {
    /// Prefix (empty for the default namespace, as `xmlns:=` also declares it), namespace,
    /// and the depth of the declaring element; innermost last.
    pub(super) bindings: Vec<(Box<[u8]>, Ns, usize)>,
}

impl Scopes {
    /// Takes in the bindings `s` (at depth `level`) declares, if its tag text `tag` has
    /// any. As quick-xml's resolver, reading stops at a malformed attribute (the decoder
    /// reports it where it reads attributes).
    pub(super) fn declare(
        &mut self,
        s: &BytesStart<'_>,
        tag: &str,
        level: usize,
    ) -> Result<(), NamespaceError> {
        if !has_xmlns(tag) {
            return Ok(());
        }
        for a in s.attributes().with_checks(false) {
            let Ok(a) = a else { break };
            let Some(decl) = a.key.as_namespace_binding() else {
                continue;
            };
            // quick-xml compares the value as written, without unescaping.
            let uri: &[u8] = &a.value;
            let prefix: &[u8] = match decl {
                PrefixDeclaration::Default => b"",
                PrefixDeclaration::Named(b"xml") if uri == XML_URI => continue,
                PrefixDeclaration::Named(b"xml") => {
                    return Err(NamespaceError::InvalidXmlPrefixBind(uri.to_vec()));
                }
                PrefixDeclaration::Named(b"xmlns") => {
                    return Err(NamespaceError::InvalidXmlnsPrefixBind(uri.to_vec()));
                }
                PrefixDeclaration::Named(p) if uri == XML_URI => {
                    return Err(NamespaceError::InvalidPrefixForXml(p.to_vec()));
                }
                PrefixDeclaration::Named(p) if uri == XMLNS_URI => {
                    return Err(NamespaceError::InvalidPrefixForXmlns(p.to_vec()));
                }
                PrefixDeclaration::Named(p) => p,
            };
            self.bindings.push((prefix.into(), ns_of_uri(uri), level));
        }
        Ok(())
    }

    /// Drops the bindings of the element at depth `level`, which closes.
    pub(super) fn pop(&mut self, level: usize) {
        while self.bindings.last().is_some_and(|b| b.2 >= level) {
            self.bindings.pop();
        }
    }

    /// The namespace of a prefixed name: the innermost binding of the prefix (none, or
    /// one that undeclares it, is no namespace the decoder knows).
    pub(super) fn prefixed(&self, p: &[u8]) -> Ns {
        if p.is_empty() {
            return Ns::Other;
        }
        self.bindings
            .iter()
            .rev()
            .find(|b| *b.0 == *p)
            .map_or(Ns::Other, |b| b.1)
    }

    /// An element's namespace and local name: unprefixed, the default namespace.
    pub(super) fn element<'n>(&self, name: QName<'n>) -> (Ns, &'n [u8]) {
        let (local, prefix) = name.decompose();
        let ns = match prefix {
            Some(p) => self.prefixed(p.into_inner()),
            None => self
                .bindings
                .iter()
                .rev()
                .find(|b| b.0.is_empty())
                .map_or(Ns::Other, |b| b.1),
        };
        (ns, local.into_inner())
    }

    /// An attribute's namespace and local name: unprefixed, no namespace, which the
    /// decoder files under [`Ns::Atom`] (an Atom element's own attributes).
    pub(super) fn attribute<'n>(&self, name: QName<'n>) -> (Ns, &'n [u8]) {
        let (local, prefix) = name.decompose();
        let ns = match prefix {
            Some(p) => self.prefixed(p.into_inner()),
            None => Ns::Atom,
        };
        (ns, local.into_inner())
    }
}

/// Whether a start tag's text holds `xmlns` (declares, or may declare, a namespace): asked
/// of every element read, with a searcher built once (`str::contains` set up its
/// two-way search on every call, 1.4 % of a page's decode).
pub(super) fn has_xmlns(tag: &str) -> bool {
    static XMLNS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"xmlns"));
    XMLNS.find(tag.as_bytes()).is_some()
}

/// `b`, a slice of the page `text`, as text of the page: the page was checked as UTF-8
/// once, so its pieces are not checked again (quick-xml cuts only at ASCII delimiters; a
/// piece that is not a slice of the page, which a reader of a `&str` does not make, is
/// checked).
pub(super) fn page_str<'a>(text: &'a str, b: &[u8]) -> Result<Cow<'a, str>> {
    let off = (b.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    match text.get(off..off.wrapping_add(b.len())) {
        Some(s) if off <= text.len() => Ok(Cow::Borrowed(s)),
        _ => std::str::from_utf8(b)
            .map(|s| Cow::Owned(s.to_string()))
            .context(Kind::Decode, "bad text"),
    }
}

/// Unescapes `v` (entity and character references), borrowing it when it has none.
pub(super) fn unescape(v: Cow<'_, str>) -> Result<Cow<'_, str>> {
    let bad = |e| Error::with_source(Kind::Decode, "bad attribute value", e);
    Ok(match v {
        Cow::Borrowed(b) => quick_xml::escape::unescape(b).map_err(bad)?,
        Cow::Owned(o) => Cow::Owned(quick_xml::escape::unescape(&o).map_err(bad)?.into_owned()),
    })
}

/// The part of a string `f` picks, borrowed from the page when the string is.
pub(super) fn sub<'a>(s: Cow<'a, str>, f: impl Fn(&str) -> &str) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(f(b)),
        Cow::Owned(o) => Cow::Owned(f(&o).to_string()),
    }
}

pub(super) fn short_rel(v: Cow<'_, str>) -> Cow<'_, str> {
    sub(v, |v| v.rsplit('#').next().unwrap_or(v))
}

/// One attribute: its namespace, local name and (unescaped) value.
pub(super) type Attr<'t, 'a> = (Ns, &'t [u8], Cow<'a, str>);

/// The attributes of one element, borrowed from the page (no copy unless a value has
/// escapes).
pub(super) struct Attrs<'t, 'a> {
    /// On the stack: GData elements carry at most six attributes, and this runs for every
    /// element of every entry (a heap vector here would be an allocation per element read).
    items: smallvec::SmallVec<[Attr<'t, 'a>; 8]>,
}

impl<'t, 'a> Attrs<'t, 'a> {
    pub(super) fn read(sc: &Scopes, s: &'t BytesStart<'_>, text: &'a str) -> Result<Attrs<'t, 'a>> {
        let mut items = smallvec::SmallVec::new();
        // quick-xml's duplicate check keeps a heap vector of the keys seen; the same check
        // is made below over the few raw keys without one.
        let mut keys: smallvec::SmallVec<[&'t [u8]; 8]> = smallvec::SmallVec::new();
        for a in s.attributes().with_checks(false) {
            let a = a.context(Kind::Decode, "bad attribute")?;
            let key = a.key.into_inner();
            if keys.contains(&key) {
                return Err(Error::decode(format!(
                    "attribute {} appears twice in <{}>",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(s.name().as_ref())
                )));
            }
            keys.push(key);
            if a.key.as_namespace_binding().is_some() {
                continue;
            }
            let (ns, local) = sc.attribute(a.key);
            // The value as written is a slice of the page; unescaped, a copy only where
            // it has references.
            let v = unescape(page_str(text, &a.value)?)?;
            items.push((ns, local, v));
        }
        Ok(Attrs { items })
    }
    pub(super) fn find(&self, ns: Ns, name: &str) -> Option<&Cow<'a, str>> {
        self.items
            .iter()
            .find(|(n, l, _)| *n == ns && *l == name.as_bytes())
            .map(|(_, _, v)| v)
    }
    /// An unprefixed attribute.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.find(Ns::Atom, name).map(|v| v.as_ref())
    }
    /// An unprefixed attribute, absent when empty.
    pub(super) fn opt(&self, name: &str) -> S<'a> {
        self.find(Ns::Atom, name).filter(|v| !v.is_empty()).cloned()
    }
    pub(super) fn gd(&self, name: &str) -> S<'a> {
        self.find(Ns::Gd, name).cloned()
    }
    pub(super) fn primary(&self) -> Option<bool> {
        Some(self.get("primary") == Some("true"))
    }
    pub(super) fn rel(&self) -> S<'a> {
        self.opt("rel").map(short_rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::reader::Reader;

    /// An element's namespace and local name, and its attributes'.
    type Resolved = (Ns, Vec<u8>, Vec<(Ns, Vec<u8>)>);

    /// The namespaces of every element and attribute of `doc` as the decoder's scopes
    /// resolve them, driven as `parse` drives them; an error as text.
    fn scoped(doc: &str) -> std::result::Result<Vec<Resolved>, String> {
        let mut r = Reader::from_str(doc);
        let mut sc = Scopes::default();
        let (mut depth, mut pending, mut out) = (0usize, None, Vec::new());
        loop {
            if let Some(l) = pending.take() {
                sc.pop(l);
            }
            let ev = r.read_event().map_err(|e| e.to_string())?;
            match ev {
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(ev, Event::Empty(_));
                    let level = depth + 1;
                    sc.declare(s, &page_str(doc, s).unwrap(), level)
                        .map_err(|e| e.to_string())?;
                    if empty {
                        pending = Some(level);
                    } else {
                        depth += 1;
                    }
                    let (ns, local) = sc.element(s.name());
                    let attrs = s
                        .attributes()
                        .with_checks(false)
                        .map_while(|a| a.ok())
                        .filter(|a| a.key.as_namespace_binding().is_none())
                        .map(|a| {
                            let (ns, l) = sc.attribute(a.key);
                            (ns, l.to_vec())
                        })
                        .collect();
                    out.push((ns, local.to_vec(), attrs));
                }
                Event::End(_) => {
                    sc.pop(depth);
                    depth -= 1;
                }
                Event::Eof => return Ok(out),
                _ => {}
            }
        }
    }

    /// The same, as quick-xml's `NsReader` resolves them: the reference.
    fn ns_reader(doc: &str) -> std::result::Result<Vec<Resolved>, String> {
        use quick_xml::name::ResolveResult;
        let of = |r: &ResolveResult, unprefixed_attr: bool| match r {
            ResolveResult::Bound(n) => ns_of_uri(n.as_ref()),
            ResolveResult::Unbound if unprefixed_attr => Ns::Atom,
            _ => Ns::Other,
        };
        let mut r = quick_xml::reader::NsReader::from_str(doc);
        let mut out = Vec::new();
        loop {
            match r.read_resolved_event().map_err(|e| e.to_string())? {
                (res, Event::Start(s)) | (res, Event::Empty(s)) => {
                    let ns = of(&res, false);
                    let attrs = s
                        .attributes()
                        .with_checks(false)
                        .map_while(|a| a.ok())
                        .filter(|a| a.key.as_namespace_binding().is_none())
                        .map(|a| {
                            let (res, l) = r.resolver().resolve_attribute(a.key);
                            (of(&res, true), l.as_ref().to_vec())
                        })
                        .collect();
                    out.push((ns, s.local_name().as_ref().to_vec(), attrs));
                }
                (_, Event::Eof) => return Ok(out),
                _ => {}
            }
        }
    }

    /// The decoder's own namespace scopes resolve every element and attribute as
    /// quick-xml's `NsReader` does, and refuse the same bindings, for documents that bind
    /// prefixes in every unusual way: the usual namespaces under other prefixes, a
    /// default namespace that is not Atom, prefixes rebound and undeclared on inner and
    /// on empty elements, `xmlns:` with no prefix, values with references, names with
    /// two colons or none before the colon, and the reserved `xml`/`xmlns` bindings.
    #[test]
    fn namespace_scopes_resolve_as_quick_xml_does() {
        let docs = [
            r#"<a:feed xmlns:a="http://www.w3.org/2005/Atom" xmlns="urn:other"><entry/><a:entry xmlns:g="http://schemas.google.com/g/2005" g:etag="x"><g:email xmlns:g="urn:not" g:x="1" y="2"/><g:email g:rel="r"/><id xmlns="http://www.w3.org/2005/Atom">i</id><x:y xmlns:x=""/><gd:z/></a:entry><entry/></a:feed>"#,
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><e xmlns:="urn:x"><f/></e><f/></feed>"#,
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><e xmlns=""><f/></e><g/><h xmlns="http://schemas.google.com/g/2005"/><i/></feed>"#,
            r#"<p:a xmlns:p="http://schemas.google.com/g/2005"><p:b xmlns:p="http://schemas.google.com/contact/2008"><p:c p:d="1"/></p:b><p:c p:d="1"/></p:a>"#,
            r#"<p:a xmlns:p="http://schemas.google.com/g/2005&#x20;"><p:b/></p:a>"#,
            r#"<a xmlns:os="http://a9.com/-/spec/opensearchrss/1.0/"><os:totalResults/><:b/><os:c:d os:e:f="1" :g="2"/></a>"#,
            r#"<feed xmlns:xml="http://www.w3.org/XML/1998/namespace"><xml:a xml:lang="en"/><xmlns:b/></feed>"#,
            r#"<feed><a b xmlns:p="http://schemas.google.com/g/2005"><p:c/></a></feed>"#,
            r#"<feed><a xmlns:p="http://schemas.google.com/g/2005" b><p:c/></a></feed>"#,
            r#"<feed xmlns:xml="urn:bad"/>"#,
            r#"<feed><a><b xmlns:xmlns="urn:x"/></a></feed>"#,
            r#"<feed><a xmlns:p="http://www.w3.org/XML/1998/namespace"/></feed>"#,
            r#"<feed><a xmlns:p="http://www.w3.org/2000/xmlns/"/></feed>"#,
            r#"<feed xmlns="http://www.w3.org/XML/1998/namespace"><a/></feed>"#,
        ];
        for doc in docs {
            let (ours, theirs) = (scoped(doc), ns_reader(doc));
            assert_eq!(ours, theirs, "{doc}");
        }
        // The refusals above are refusals.
        assert!(scoped(docs[9]).is_err() && scoped(docs[12]).is_err());
    }
}
