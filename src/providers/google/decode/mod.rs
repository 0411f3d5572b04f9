//! Atom feed → contacts, streaming and namespace-aware (prefixes are resolved, never
//! compared). Every element of protocol note §4 that the schema models is mapped; unknown
//! elements are tolerated and kept in `raw`, the entry as a standalone document with the
//! namespace declarations it needs.
//!
//! A page goes straight to Arrow: the decoder keeps each value as a slice of the page
//! (a copy only where the XML had to be unescaped), the list items of every entry in one
//! vector per list, and the typed builders then copy each string once, into its column.

mod parser;
mod raw;
mod row;
mod scopes;

use std::borrow::Cow;

use arrow::array::RecordBatch;

use crate::error::{Context, Kind, Result};
use crate::model::schema::ContactRecord;
use parser::parse;
use row::GRow;

const ATOM: &[u8] = b"http://www.w3.org/2005/Atom";
const GD: &[u8] = b"http://schemas.google.com/g/2005";
const GCONTACT: &[u8] = b"http://schemas.google.com/contact/2008";
const OPENSEARCH: &[u8] = b"http://a9.com/-/spec/opensearch/1.1/";
const OPENSEARCH_V1: &[u8] = b"http://a9.com/-/spec/opensearchrss/1.0/";
const PHOTO_REL: &str = "http://schemas.google.com/contacts/2008/rel#photo";
/// How deep elements may nest in a page. A GData entry is 5 levels deep and an extended
/// property's XML adds a few; the limit stops a hostile page long before quick-xml's
/// 16-bit nesting counter could wrap and lose track of where an entry ends.
pub const MAX_DEPTH: usize = 256;

/// One decoded feed page.
#[derive(Debug)]
pub struct FeedPage {
    /// The feed's `<updated>` (server time), as sent.
    pub updated: Option<String>,
    /// `openSearch:totalResults`.
    pub total_results: Option<usize>,
    /// The `rel="next"` link.
    pub next: Option<String>,
    /// Entries in page order, one row each of the contacts schema; placeholders have
    /// `deleted = true`.
    pub batch: RecordBatch,
}

impl FeedPage {
    /// The entries as records (read back from the batch).
    pub fn records(&self) -> Result<Vec<ContactRecord>> {
        crate::model::schema::batches_to_records(std::slice::from_ref(&self.batch))
    }
}

/// A value of the page: a slice of it, or owned where the XML was unescaped.
type S<'a> = Option<Cow<'a, str>>;

pub use crate::model::extract::RecordContext;

/// Decodes one feed page into a batch of the contacts schema. `what` names the page in
/// errors.
pub fn decode_feed(body: &[u8], ctx: &RecordContext, what: &str) -> Result<FeedPage> {
    decode_feed_inner(body, ctx).map_err(|e| e.context(what))
}

/// A page's body, checked as UTF-8 once, read ([`parse`]) and built into a batch through
/// a [`GRow`] per entry.
fn decode_feed_inner(body: &[u8], ctx: &RecordContext) -> Result<FeedPage> {
    let text = crate::http::body_text(body).context(Kind::Decode, "the body is not UTF-8")?;
    let p = parse(text)?;
    let rows: Vec<GRow<'_, '_>> = p
        .entries
        .iter()
        .map(|e| GRow {
            e,
            items: &p.items,
            raws: &p.raws,
            ctx,
        })
        .collect();
    Ok(FeedPage {
        batch: crate::model::schema::rows_to_batch(&rows)?,
        updated: p.updated,
        total_results: p.total_results,
        next: p.next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RecordContext {
        RecordContext {
            source: "s".into(),
            account: "example.com".into(),
            run_id: "r".into(),
            synced_at_us: 0,
        }
    }

    /// A v3-shaped feed (captured shapes, prefixes as an ElementTree client writes them).
    const FEED: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns='http://www.w3.org/2005/Atom' xmlns:openSearch='http://a9.com/-/spec/opensearch/1.1/' xmlns:gContact='http://schemas.google.com/contact/2008' xmlns:batch='http://schemas.google.com/gdata/batch' xmlns:gd='http://schemas.google.com/g/2005' gd:etag='W/&quot;CEQNQHgyeCt7I2A9WhFSEEs.&quot;'>
<id>example.com</id><updated>2013-06-12T18:39:51.690Z</updated>
<link rel='next' type='application/atom+xml' href='https://www.google.com/m8/feeds/contacts/example.com/full?max-results=2&amp;start-index=3'/>
<openSearch:totalResults>3</openSearch:totalResults>
<entry gd:etag='&quot;Qn85fzVSLit7I2A9WhJXFkoNRQE.&quot;'>
 <id>http://www.google.com/m8/feeds/contacts/example.com/base/2fc67238aede7ff</id>
 <updated>2013-06-12T18:39:51.123Z</updated>
 <title>Zoë &amp; Co</title>
 <content type='text'>line1
line2 &lt;b&gt;</content>
 <link rel='http://schemas.google.com/contacts/2008/rel#photo' type='image/*' href='https://www.google.com/m8/feeds/photos/media/example.com/2fc67238aede7ff' gd:etag='&quot;ph.&quot;'/>
 <gd:name><gd:givenName>Zoë</gd:givenName><gd:familyName>O'Brien</gd:familyName><gd:fullName>Zoë O'Brien</gd:fullName></gd:name>
 <gd:email rel='http://schemas.google.com/g/2005#work' address='zoe@example.org' primary='true'/>
 <gd:email label='Obsolete' address='old@example.org'/>
 <gd:phoneNumber rel='http://schemas.google.com/g/2005#mobile' uri='tel:+44-7554-257819'>+44 7554 257819</gd:phoneNumber>
 <gd:im address='zoe' protocol='http://schemas.google.com/g/2005#GOOGLE_TALK' rel='http://schemas.google.com/g/2005#other'/>
 <gd:structuredPostalAddress rel='http://schemas.google.com/g/2005#work'><gd:street>1 Main St
Apt 2</gd:street><gd:city>東京</gd:city><gd:country code='JP'>Japan</gd:country></gd:structuredPostalAddress>
 <gd:organization rel='http://schemas.google.com/g/2005#work'><gd:orgName>Acme</gd:orgName><gd:orgTitle>CEO</gd:orgTitle></gd:organization>
 <gContact:website href='http://blog.example' rel='blog'/>
 <gContact:relation rel='spouse'>Sam</gContact:relation>
 <gContact:event rel='anniversary'><gd:when startTime='2010-05-01'/></gContact:event>
 <gContact:birthday when='--05-06'/>
 <gContact:groupMembershipInfo deleted='false' href='http://www.google.com/m8/feeds/groups/example.com/base/6'/>
 <gContact:groupMembershipInfo deleted='true' href='http://www.google.com/m8/feeds/groups/example.com/base/7'/>
 <gd:extendedProperty name='crm' value='42'/>
 <gd:extendedProperty name='blob'><info xmlns='urn:x' a='1'>x &amp; y</info></gd:extendedProperty>
 <gContact:userDefinedField key='k' value='v'/>
 <unknown:thing xmlns:unknown='urn:unknown'>kept</unknown:thing>
</entry>
<ns0:entry xmlns:ns0='http://www.w3.org/2005/Atom' xmlns:ns1='http://schemas.google.com/g/2005' ns1:etag='"del."'>
 <ns0:id>http://www.google.com/m8/feeds/contacts/example.com/base/aa</ns0:id>
 <ns0:updated>2013-06-12T18:40:00.000Z</ns0:updated><ns0:title/>
 <ns1:deleted/>
</ns0:entry>
</feed>"#;

    #[cfg(feature = "emulator")]
    #[test]
    fn decodes_a_v3_feed() {
        let p = decode_feed(FEED.as_bytes(), &ctx(), "page 1").unwrap();
        assert_eq!(p.updated.as_deref(), Some("2013-06-12T18:39:51.690Z"));
        assert_eq!(p.total_results, Some(3));
        assert!(p.next.as_deref().unwrap().ends_with("start-index=3"));
        let entries = p.records().unwrap();
        assert_eq!(entries.len(), 2);
        let e = &entries[0];
        assert_eq!(e.id, "2fc67238aede7ff");
        assert_eq!(e.etag.as_deref(), Some("\"Qn85fzVSLit7I2A9WhJXFkoNRQE.\""));
        assert_eq!(e.display_name.as_deref(), Some("Zoë O'Brien"));
        assert_eq!(e.notes.as_deref(), Some("line1\nline2 <b>"));
        assert_eq!(e.emails.len(), 2);
        assert_eq!(e.emails[0].kind.as_deref(), Some("work"));
        assert_eq!(e.emails[0].primary, Some(true));
        assert_eq!(e.emails[1].label.as_deref(), Some("Obsolete"));
        assert_eq!(e.emails[1].kind, None);
        assert_eq!(e.emails[1].primary, Some(false));
        assert_eq!(e.phones[0].uri.as_deref(), Some("tel:+44-7554-257819"));
        assert_eq!(e.phones[0].number.as_deref(), Some("+44 7554 257819"));
        assert_eq!(e.ims[0].protocol.as_deref(), Some("GOOGLE_TALK"));
        assert_eq!(e.addresses[0].street.as_deref(), Some("1 Main St\nApt 2"));
        assert_eq!(e.addresses[0].city.as_deref(), Some("東京"));
        assert_eq!(e.organizations[0].title.as_deref(), Some("CEO"));
        assert_eq!(e.websites[0].kind.as_deref(), Some("blog"));
        assert_eq!(e.relations[0].name.as_deref(), Some("Sam"));
        assert_eq!(e.events[0].start.as_deref(), Some("2010-05-01"));
        assert_eq!(e.birthday.as_deref(), Some("--05-06"));
        assert_eq!(
            e.groups,
            vec!["http://www.google.com/m8/feeds/groups/example.com/base/6".to_string()]
        );
        assert_eq!(e.extended_properties[0].value.as_deref(), Some("42"));
        assert_eq!(
            e.extended_properties[1].xml.as_deref(),
            Some("<info xmlns='urn:x' a='1'>x &amp; y</info>")
        );
        assert_eq!(e.photo.as_ref().unwrap().etag.as_deref(), Some("\"ph.\""));
        assert!(!e.deleted);
        // raw parses on its own and keeps the unknown element.
        let raw = e.raw.as_deref().unwrap();
        assert!(
            raw.contains("urn:unknown") && raw.contains("xmlns:gd="),
            "{raw}"
        );
        crate::emulator::xml::parse(raw.as_bytes()).unwrap();
        let d = &entries[1];
        assert_eq!(d.id, "aa");
        assert!(d.deleted);
        crate::emulator::xml::parse(d.raw.as_deref().unwrap().as_bytes()).unwrap();
    }

    /// Values arrive as slices of the page where they can, and are put together where
    /// the XML splits them: around an entity, a comment or a CDATA section.
    #[test]
    fn values_split_by_the_xml_come_out_whole() {
        let feed = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005"><updated>2013-06-12T18:39:51.690Z</updated>
<entry><id>http://x/base/a&amp;b</id><updated>2013-06-12T18:39:51.123Z</updated>
<gd:name><gd:givenName>Jo<!-- c -->hn</gd:givenName><gd:familyName>O'<![CDATA[<Neil>]]>!</gd:familyName><gd:fullName>plain</gd:fullName></gd:name>
<gd:email address="a&#64;x.org" rel="http://schemas.google.com/g/2005#home" label=""/>
</entry></feed>"#;
        let p = decode_feed(feed.as_bytes(), &ctx(), "p").unwrap();
        let e = &p.records().unwrap()[0];
        assert_eq!(e.id, "a&b");
        assert_eq!(e.given_name.as_deref(), Some("John"));
        assert_eq!(e.family_name.as_deref(), Some("O'<Neil>!"));
        assert_eq!(e.display_name.as_deref(), Some("plain"));
        assert_eq!(e.emails[0].address.as_deref(), Some("a@x.org"));
        assert_eq!(e.emails[0].kind.as_deref(), Some("home"));
        // An empty attribute is absent, as an empty element is.
        assert_eq!(e.emails[0].label, None);
        assert_eq!(p.updated.as_deref(), Some("2013-06-12T18:39:51.690Z"));
    }

    #[test]
    fn bad_bodies_give_clear_errors() {
        let html = b"<HTML><HEAD><TITLE>Cannot request contacts belonging to another domain (x.com).</TITLE></HEAD><BODY><H2>Error 403</H2></BODY></HTML>";
        let e = decode_feed(html, &ctx(), "page 1 of example.com")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HTML page")
                && e.contains("another domain")
                && e.contains("page 1 of example.com"),
            "{e}"
        );
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><feed xmlns="http://www.w3.org/2005/Atom">&b;</feed>"#;
        assert!(
            decode_feed(bomb, &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("DOCTYPE")
        );
        let cut = &FEED.as_bytes()[..FEED.len() / 2];
        assert!(decode_feed(cut, &ctx(), "p").is_err());
        let no_id =
            br#"<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>x</title></entry></feed>"#;
        assert!(
            decode_feed(no_id, &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("no <id>")
        );
        assert!(
            decode_feed(b"", &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        // Attributes are read without quick-xml's own uniqueness check; ours must refuse
        // a repeated one, prefixed or not.
        for twice in [
            r#"<entry gd:etag="a" gd:etag="b"><id>x</id></entry>"#,
            r#"<entry><id>x</id><gd:email address="a@x" rel="r" address="b@x"/></entry>"#,
        ] {
            let feed = format!(
                r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005">{twice}</feed>"#
            );
            let e = decode_feed(feed.as_bytes(), &ctx(), "page 3")
                .unwrap_err()
                .to_string();
            assert!(e.contains("appears twice") && e.contains("page 3"), "{e}");
        }
    }

    /// Every shape of `gd:extendedProperty` keeps its whole content (issue: text-only
    /// properties and all but the first of several elements were dropped).
    #[test]
    fn extended_properties_keep_every_shape() {
        let feed = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005">
<entry><id>http://x/base/e1</id><updated>2013-06-12T18:39:51.123Z</updated>
<gd:extendedProperty name='attr' value='v &amp; w'/>
<gd:extendedProperty name='legacy.id'>plain text payload</gd:extendedProperty>
<gd:extendedProperty name='two'><a xmlns='urn:x'>1</a><b xmlns='urn:x'/></gd:extendedProperty>
<gd:extendedProperty name='mixed'>lead <i xmlns='urn:x'>in</i> tail</gd:extendedProperty>
<gd:extendedProperty name='cdata'><![CDATA[x < y & z]]></gd:extendedProperty>
<gd:extendedProperty name='entities'>Fish &amp; Chips &#233; &lt;ok&gt;</gd:extendedProperty>
<gd:extendedProperty name='pretty'>
    <info xmlns='urn:x'>deep<j><k>er</k></j></info>
  </gd:extendedProperty>
<gd:extendedProperty name='empty'/>
<gd:extendedProperty name='blank'>  </gd:extendedProperty>
<gd:extendedProperty name='spaced'>  two spaces  </gd:extendedProperty>
<gd:postalAddress rel='http://schemas.google.com/g/2005#home' primary='true'>1 Old Road
Springfield</gd:postalAddress>
<gd:postalAddress label='Cabin'/>
</entry>
<entry><id>http://x/base/e2</id><updated>2013-06-12T18:39:51.123Z</updated></entry></feed>"#;
        let p = decode_feed(feed.as_bytes(), &ctx(), "p").unwrap();
        let r = p.records().unwrap();
        assert_eq!(r.len(), 2, "the entry after the properties is not lost");
        let got: Vec<(Option<&str>, Option<&str>, Option<&str>)> = r[0]
            .extended_properties
            .iter()
            .map(|p| (p.name.as_deref(), p.value.as_deref(), p.xml.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("attr"), Some("v & w"), None),
                (Some("legacy.id"), None, Some("plain text payload")),
                (
                    Some("two"),
                    None,
                    Some("<a xmlns='urn:x'>1</a><b xmlns='urn:x'/>")
                ),
                (
                    Some("mixed"),
                    None,
                    Some("lead <i xmlns='urn:x'>in</i> tail")
                ),
                (Some("cdata"), None, Some("<![CDATA[x < y & z]]>")),
                (
                    Some("entities"),
                    None,
                    Some("Fish &amp; Chips &#233; &lt;ok&gt;")
                ),
                (
                    Some("pretty"),
                    None,
                    Some("<info xmlns='urn:x'>deep<j><k>er</k></j></info>")
                ),
                (Some("empty"), None, None),
                (Some("blank"), None, None),
                (Some("spaced"), None, Some("  two spaces  ")),
            ]
        );
        // The legacy unstructured address lands as one, its text the formatted address.
        let a = &r[0].addresses;
        assert_eq!(a.len(), 2);
        assert_eq!(
            (
                a[0].kind.as_deref(),
                a[0].primary,
                a[0].formatted.as_deref()
            ),
            (Some("home"), Some(true), Some("1 Old Road\nSpringfield"))
        );
        assert_eq!(
            (a[1].label.as_deref(), a[1].formatted.as_deref()),
            (Some("Cabin"), None)
        );
    }

    /// A page nested deeper than the limit fails whole: no entry of it may disappear.
    #[test]
    fn deep_nesting_fails_the_page() {
        let deep = "<x>".repeat(100_000) + &"</x>".repeat(100_000);
        let feed = format!(
            r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005"><entry><id>a</id><updated>2013-06-12T18:39:51.123Z</updated><gd:extendedProperty name="d">{deep}</gd:extendedProperty></entry><entry><id>b</id><updated>2013-06-12T18:39:51.123Z</updated></entry></feed>"#
        );
        let e = decode_feed(feed.as_bytes(), &ctx(), "page 2 of example.com")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deeper than 256") && e.contains("page 2 of example.com"),
            "{e}"
        );
    }

    /// An HTML error page with a doctype is named as one, not as an entity attack.
    #[test]
    fn an_html_page_with_a_doctype_is_named() {
        let html = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>x</body></html>";
        let e = decode_feed(html, &ctx(), "page 1").unwrap_err().to_string();
        assert!(
            e.contains("HTML page") && e.contains("502 Bad Gateway"),
            "{e}"
        );
    }
    /// A feed that binds the usual namespaces under unusual prefixes, makes another
    /// namespace the default, and rebinds and undeclares prefixes inside entries reads
    /// by namespace, never by prefix: the decoder's scopes (its fast path) stay exact.
    #[test]
    fn unusual_prefix_bindings_read_by_namespace() {
        let feed = r#"<atom:feed xmlns:atom="http://www.w3.org/2005/Atom" xmlns="urn:not-atom" xmlns:g="http://schemas.google.com/g/2005" xmlns:c="http://schemas.google.com/contact/2008" xmlns:os="http://a9.com/-/spec/opensearch/1.1/">
<atom:updated>2013-06-12T18:39:51.690Z</atom:updated><os:totalResults>2</os:totalResults>
<updated>1999-01-01T00:00:00Z</updated>
<atom:entry g:etag='"e1"'>
 <atom:id>http://x/base/one</atom:id><atom:updated>2013-06-12T18:39:51.123Z</atom:updated>
 <id>http://x/base/WRONG</id>
 <g:name><g:givenName>Ann</g:givenName><name><familyName>Nope</familyName></name></g:name>
 <gd:email address="lost@x" xmlns:gd="urn:not-gd"/>
 <x:email xmlns:x="http://schemas.google.com/g/2005" address="a@x"/>
 <x:email address="unbound@x"/>
 <g:email address="b@x" rel="http://schemas.google.com/g/2005#home" primary="true" g:primary="false"/>
 <g:phoneNumber xmlns:g="urn:other">0 ignored</g:phoneNumber>
 <g:phoneNumber>+1 555</g:phoneNumber>
 <c:nickname xmlns:c="">nope</c:nickname>
 <c:fileAs>F</c:fileAs>
 <g:extendedProperty name="p"><g:q xmlns:g="urn:inner">in</g:q></g:extendedProperty>
 <g:email address="after@x"/>
</atom:entry>
<entry xmlns="http://www.w3.org/2005/Atom" xmlns:atom="urn:not-atom"><id>http://x/base/two</id><updated>2013-06-12T18:39:51.123Z</updated><atom:id>http://x/base/WRONG</atom:id></entry>
</atom:feed>"#;
        let p = decode_feed(feed.as_bytes(), &ctx(), "p").unwrap();
        assert_eq!(p.updated.as_deref(), Some("2013-06-12T18:39:51.690Z"));
        assert_eq!(p.total_results, Some(2));
        let r = p.records().unwrap();
        assert_eq!(r.len(), 2);
        let e = &r[0];
        assert_eq!((e.id.as_str(), e.etag.as_deref()), ("one", Some("\"e1\"")));
        assert_eq!(e.given_name.as_deref(), Some("Ann"));
        assert_eq!(e.family_name, None);
        let emails: Vec<_> = e
            .emails
            .iter()
            .map(|m| (m.address.as_deref(), m.kind.as_deref(), m.primary))
            .collect();
        assert_eq!(
            emails,
            vec![
                (Some("a@x"), None, Some(false)),
                (Some("b@x"), Some("home"), Some(true)),
                (Some("after@x"), None, Some(false)),
            ]
        );
        let phones: Vec<_> = e.phones.iter().map(|p| p.number.as_deref()).collect();
        assert_eq!(phones, vec![Some("+1 555")]);
        assert_eq!(
            (e.nickname.as_deref(), e.file_as.as_deref()),
            (None, Some("F"))
        );
        assert_eq!(
            e.extended_properties[0].xml.as_deref(),
            Some(r#"<g:q xmlns:g="urn:inner">in</g:q>"#)
        );
        assert_eq!(r[1].id, "two");
        // A binding the XML namespaces forbid fails the page, wherever it is.
        let bad = feed.replace(
            r#"<g:q xmlns:g="urn:inner">"#,
            r#"<g:q xmlns:xml="urn:inner">"#,
        );
        let err = decode_feed(bad.as_bytes(), &ctx(), "p")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("malformed XML") && err.contains("'xml'"),
            "{err}"
        );
    }

    /// An entry's own namespace declarations are read as XML: one written with spaces
    /// around `=` is not declared a second time in `raw` (a duplicate attribute), and an
    /// attribute value holding the text `xmlns:gd=` (and a `>`) stands for no
    /// declaration, so the feed's, which the entry needs, is kept.
    #[test]
    fn raw_reads_the_entrys_own_declarations_as_xml() {
        use quick_xml::events::Event;
        use quick_xml::name::ResolveResult;
        let feed = "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:gd='http://schemas.google.com/g/2005'>\
            <entry xmlns:gd = 'http://schemas.google.com/g/2005' gd:etag='\"a\"'>\
            <id>http://x/m8/feeds/contacts/d/base/a1</id><gd:email address='a@x'/></entry>\
            <entry gd:etag='\"b\"' title='a > b, xmlns:gd=1'>\
            <id>http://x/m8/feeds/contacts/d/base/b1</id><gd:email address='b@x'/></entry></feed>";
        let page = decode_feed(feed.as_bytes(), &ctx(), "test page").unwrap();
        let entries = page.records().unwrap();
        assert_eq!(entries.len(), 2);
        for e in &entries {
            let raw = e.raw.as_deref().unwrap();
            let mut r = quick_xml::reader::NsReader::from_str(raw);
            let mut emails = 0;
            loop {
                match r.read_resolved_event().unwrap() {
                    (res, Event::Start(s) | Event::Empty(s)) => {
                        // Attributes checked as XML does: a duplicate is an error.
                        for a in s.attributes() {
                            a.unwrap_or_else(|err| panic!("{err}: {raw}"));
                        }
                        if s.local_name().as_ref() == b"email" {
                            emails += 1;
                            assert!(
                                matches!(res, ResolveResult::Bound(ns) if ns.as_ref() == GD),
                                "{raw}"
                            );
                        }
                    }
                    (_, Event::Eof) => break,
                    _ => {}
                }
            }
            assert_eq!(emails, 1, "{raw}");
        }
    }

    /// A standalone entry carries the feed's declarations it may use and no others: a
    /// feed declaring many namespaces made every `raw` larger by all of them. (`dev:` in
    /// the title is no use of `v:`: a prefix counts only after a character that cannot be
    /// part of a name.)
    #[test]
    fn raw_keeps_only_the_declarations_an_entry_may_use() {
        let feed = "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:gd='http://schemas.google.com/g/2005' \
            xmlns:gContact='http://schemas.google.com/contact/2008' xmlns:batch='http://schemas.google.com/gdata/batch' \
            xmlns:openSearch='http://a9.com/-/spec/opensearch/1.1/' xmlns:sf='urn:sf' xmlns:q='urn:q' xmlns:v='urn:v'>\
            <id>d</id><updated>2024-01-01T00:00:00Z</updated>\
            <entry gd:etag='\"e\"'><id>http://x/m8/feeds/contacts/d/base/a1</id>\
            <updated>2024-01-01T00:00:00Z</updated><title>dev:ops</title><sf:Contact>1</sf:Contact>\
            <gd:extendedProperty name='t' value='v'/><x type='q:name' xmlns='urn:own'/></entry></feed>";
        let page = decode_feed(feed.as_bytes(), &ctx(), "test page").unwrap();
        let entries = page.records().unwrap();
        let raw = entries[0].raw.as_deref().unwrap();
        for kept in [
            "xmlns='http://www.w3.org/2005/Atom'",
            "xmlns:gd=",
            "xmlns:sf=",
            "xmlns:q=",
        ] {
            assert!(
                raw.contains(&kept.replace('\'', "\"")),
                "{kept} missing: {raw}"
            );
        }
        for dropped in [
            "xmlns:gContact=",
            "xmlns:batch=",
            "xmlns:openSearch=",
            "xmlns:v=",
        ] {
            assert!(!raw.contains(dropped), "{dropped} kept: {raw}");
        }
        crate::emulator::xml::parse(raw.as_bytes()).unwrap();
    }
}
