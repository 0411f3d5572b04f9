//! The emulator's own small XML tree: a namespace-aware parser (prefixes are resolved, so
//! `ns0:email` from ElementTree clients is the same as `gd:email`) and a serializer that
//! writes canonical prefixes. Written for the emulator only; the Google client has its own
//! streaming decoder, so that a misreading of the protocol in one is caught by the other.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

pub const ATOM: &str = "http://www.w3.org/2005/Atom";
pub const GD: &str = "http://schemas.google.com/g/2005";
pub const GCONTACT: &str = "http://schemas.google.com/contact/2008";
pub const BATCH: &str = "http://schemas.google.com/gdata/batch";
pub const APP: &str = "http://www.w3.org/2007/app";
pub const OPENSEARCH: &str = "http://a9.com/-/spec/opensearch/1.1/";

/// Known namespaces and the prefixes the emulator writes for them (atom is the default).
const PREFIXES: &[(&str, &str)] = &[
    (GD, "gd"),
    (GCONTACT, "gContact"),
    (BATCH, "batch"),
    (APP, "app"),
    (OPENSEARCH, "openSearch"),
];

/// An element: namespace URI (empty for none), local name, attributes, children.
#[derive(Debug, Clone, PartialEq)]
pub struct El {
    pub ns: String,
    pub name: String,
    /// (namespace URI or empty, local name, value)
    pub attrs: Vec<(String, String, String)>,
    pub children: Vec<Node>,
}

/// A child node.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    El(El),
    Text(String),
    /// A CDATA section, kept as one so that it is written back as it came.
    CData(String),
}

impl El {
    pub fn new(ns: &str, name: &str) -> El {
        El {
            ns: ns.into(),
            name: name.into(),
            attrs: vec![],
            children: vec![],
        }
    }
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> El {
        self.attrs.push((String::new(), name.into(), value.into()));
        self
    }
    pub fn attr_ns(mut self, ns: &str, name: &str, value: impl Into<String>) -> El {
        self.attrs.push((ns.into(), name.into(), value.into()));
        self
    }
    pub fn child(mut self, c: El) -> El {
        self.children.push(Node::El(c));
        self
    }
    pub fn text(mut self, t: impl Into<String>) -> El {
        self.children.push(Node::Text(t.into()));
        self
    }
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, n, _)| ns.is_empty() && n == name)
            .map(|(_, _, v)| v.as_str())
    }
    pub fn get_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, n, _)| a == ns && n == name)
            .map(|(_, _, v)| v.as_str())
    }
    pub fn elements(&self) -> impl Iterator<Item = &El> {
        self.children
            .iter()
            .filter_map(|c| if let Node::El(e) = c { Some(e) } else { None })
    }
    pub fn find(&self, ns: &str, name: &str) -> Option<&El> {
        self.elements().find(|e| e.is(ns, name))
    }
    pub fn find_all<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.elements().filter(move |e| e.is(ns, name))
    }
    /// All text content, concatenated.
    pub fn text_content(&self) -> String {
        let mut s = String::new();
        for c in &self.children {
            match c {
                Node::Text(t) | Node::CData(t) => s.push_str(t),
                Node::El(e) => s.push_str(&e.text_content()),
            }
        }
        s
    }
}

/// Parses a document into its root element. Entities other than the five predefined
/// ones and character references are refused (no DTD processing, so no entity bombs).
pub fn parse(input: &[u8]) -> Result<El, String> {
    let text = std::str::from_utf8(input).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let mut r = NsReader::from_str(text);
    let mut stack: Vec<El> = Vec::new();
    let mut root: Option<El> = None;
    loop {
        let pos = r.buffer_position();
        let (res, ev) = r
            .read_resolved_event()
            .map_err(|e| format!("XML error after byte {pos}: {e}"))?;
        match ev {
            Event::Start(s) | Event::Empty(s) if root.is_some() => {
                let _ = s;
                return Err("content after the root element".into());
            }
            Event::Start(ref s) | Event::Empty(ref s) => {
                let ns = match res {
                    ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                    ResolveResult::Unbound => String::new(),
                    ResolveResult::Unknown(p) => {
                        return Err(format!(
                            "unknown namespace prefix {}",
                            String::from_utf8_lossy(&p)
                        ));
                    }
                };
                let mut el = El::new(&ns, &String::from_utf8_lossy(s.local_name().as_ref()));
                for a in s.attributes() {
                    let a = a.map_err(|e| format!("bad attribute: {e}"))?;
                    let key = a.key;
                    if key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (ans, local) = r.resolver().resolve_attribute(key);
                    let ans = match ans {
                        ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                        ResolveResult::Unbound => String::new(),
                        ResolveResult::Unknown(p) => {
                            return Err(format!(
                                "unknown namespace prefix {}",
                                String::from_utf8_lossy(&p)
                            ));
                        }
                    };
                    let v = a
                        .decode_and_unescape_value(r.decoder())
                        .map_err(|e| format!("bad attribute value: {e}"))?;
                    el.attrs.push((
                        ans,
                        String::from_utf8_lossy(local.as_ref()).into_owned(),
                        v.into_owned(),
                    ));
                }
                if matches!(ev, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(p) => p.children.push(Node::El(el)),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(p) => p.children.push(Node::El(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(p) = stack.last_mut() {
                    let s = t.decode().map_err(|e| format!("bad text: {e}"))?;
                    push_text(p, &s);
                }
            }
            Event::GeneralRef(g) => {
                let c = crate::xml::reference_char(&g)?;
                if let Some(p) = stack.last_mut() {
                    push_text(p, c.encode_utf8(&mut [0; 4]));
                }
            }
            Event::CData(c) => {
                if let Some(p) = stack.last_mut() {
                    p.children
                        .push(Node::CData(String::from_utf8_lossy(&c).into_owned()));
                }
            }
            Event::DocType(_) => return Err("DOCTYPE is not allowed".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("document ends inside an element".into());
    }
    root.ok_or_else(|| "empty document".into())
}

fn push_text(p: &mut El, s: &str) {
    if let Some(Node::Text(last)) = p.children.last_mut() {
        last.push_str(s);
    } else {
        p.children.push(Node::Text(s.to_string()));
    }
}

/// Escapes text for element content and attribute values.
pub fn esc(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push('\n'),
            c => out.push(c),
        }
    }
}

fn prefix_of(ns: &str) -> Option<&'static str> {
    PREFIXES.iter().find(|(u, _)| *u == ns).map(|(_, p)| *p)
}

/// Serializes an element. Known namespaces use their canonical prefixes (declared by the
/// caller on an ancestor when `declared` is true); unknown ones get a local declaration.
pub fn write(el: &El, out: &mut String, default_ns: &str) {
    let mut counter = 0;
    write_inner(el, out, default_ns, &mut counter);
}

fn write_inner(el: &El, out: &mut String, default_ns: &str, counter: &mut usize) {
    let mut decls = String::new();
    let mut new_default = default_ns.to_string();
    let tag = if el.ns == default_ns {
        el.name.clone()
    } else if let Some(p) = prefix_of(&el.ns) {
        format!("{p}:{}", el.name)
    } else if el.ns == ATOM {
        format!("atom:{}", el.name)
    } else {
        // A foreign namespace: make it this subtree's default.
        decls.push_str(" xmlns=\"");
        esc(&el.ns, &mut decls);
        decls.push('"');
        new_default = el.ns.clone();
        el.name.clone()
    };
    out.push('<');
    out.push_str(&tag);
    out.push_str(&decls);
    for (ns, name, v) in &el.attrs {
        out.push(' ');
        if !ns.is_empty() {
            match prefix_of(ns) {
                Some(p) => {
                    out.push_str(p);
                    out.push(':');
                }
                None => {
                    *counter += 1;
                    let p = format!("ns{counter}");
                    out.push_str(&format!("xmlns:{p}=\""));
                    esc(ns, out);
                    out.push_str(&format!("\" {p}:"));
                }
            }
        }
        out.push_str(name);
        out.push_str("=\"");
        esc(v, out);
        out.push('"');
    }
    if el.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    write_children(&el.children, out, &new_default, counter);
    out.push_str("</");
    out.push_str(&tag);
    out.push('>');
}

fn write_children(children: &[Node], out: &mut String, default_ns: &str, counter: &mut usize) {
    for c in children {
        match c {
            Node::Text(t) => esc(t, out),
            Node::CData(t) => {
                out.push_str("<![CDATA[");
                out.push_str(t);
                out.push_str("]]>");
            }
            Node::El(e) => write_inner(e, out, default_ns, counter),
        }
    }
}

/// Serializes an element's content (its children, not its own tags), as [`write`] would
/// inside it.
pub fn write_content(el: &El, out: &mut String, default_ns: &str) {
    let mut counter = 0;
    write_children(&el.children, out, default_ns, &mut counter);
}

/// Parses a fragment of content (text, elements, CDATA, several at the top level) into
/// nodes, as the children of an element in `default_ns` would be.
pub fn parse_content(fragment: &str, default_ns: &str) -> Result<Vec<Node>, String> {
    let doc = format!("<w xmlns=\"{default_ns}\">{fragment}</w>");
    parse(doc.as_bytes()).map(|w| w.children)
}

/// The namespace declarations the emulator puts on a feed or standalone entry.
pub fn root_decls(with_batch: bool, with_opensearch: bool) -> String {
    let mut s = format!(
        " xmlns=\"{ATOM}\" xmlns:gd=\"{GD}\" xmlns:gContact=\"{GCONTACT}\" xmlns:app=\"{APP}\""
    );
    if with_batch {
        s.push_str(&format!(" xmlns:batch=\"{BATCH}\""));
    }
    if with_opensearch {
        s.push_str(&format!(" xmlns:openSearch=\"{OPENSEARCH}\""));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_resolved_and_rewritten() {
        let doc = br#"<ns0:entry xmlns:ns0="http://www.w3.org/2005/Atom" xmlns:ns1="http://schemas.google.com/g/2005"><ns1:email address="a&amp;b@x" rel="http://schemas.google.com/g/2005#work"/><x:foo xmlns:x="urn:x" k="v">t</x:foo></ns0:entry>"#;
        let el = parse(doc).unwrap();
        assert!(el.is(ATOM, "entry"));
        let email = el.find(GD, "email").unwrap();
        assert_eq!(email.get("address"), Some("a&b@x"));
        let mut out = String::new();
        write(&el, &mut out, ATOM);
        assert_eq!(
            out,
            r#"<entry><gd:email address="a&amp;b@x" rel="http://schemas.google.com/g/2005#work"/><foo xmlns="urn:x" k="v">t</foo></entry>"#
        );
    }

    #[test]
    fn entity_bombs_and_doctypes_are_refused() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><entry>&lol2;</entry>"#;
        assert!(parse(bomb).is_err());
        assert!(parse(b"<entry>&unknown;</entry>").is_err());
        assert!(parse(b"<entry><a></entry>").is_err());
    }
}
