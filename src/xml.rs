//! XML helpers shared by the readers of XML bodies (the Atom and DAV decoders, the
//! write-back's reading of landed entries, the emulator's request parser).

use quick_xml::events::BytesRef;

/// The character an XML reference stands for: a character reference (`&#233;`,
/// `&#xE9;`) or one of the five predefined entities. Anything else is refused, naming
/// it: a document's own entities (declared in a DTD) are never expanded, which keeps
/// entity bombs and external entities out.
pub fn reference_char(r: &BytesRef<'_>) -> Result<char, String> {
    if r.is_char_ref() {
        return r
            .resolve_char_ref()
            .map_err(|e| format!("bad character reference: {e}"))?
            .ok_or_else(|| "bad character reference".to_string());
    }
    let name = r.decode().map_err(|e| format!("bad entity: {e}"))?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .and_then(|s| s.chars().next())
        .ok_or_else(|| {
            format!("undefined entity &{name}; (only the five predefined entities are allowed)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::Reader;
    use quick_xml::events::Event;

    /// Every reference of a text, resolved or refused.
    fn refs(xml: &str) -> Vec<Result<char, String>> {
        let mut r = Reader::from_str(xml);
        let mut out = Vec::new();
        loop {
            match r.read_event().unwrap() {
                Event::GeneralRef(g) => out.push(reference_char(&g)),
                Event::Eof => return out,
                _ => {}
            }
        }
    }

    #[test]
    fn predefined_and_character_references_resolve_and_others_are_refused() {
        let got = refs("<a>&lt;&gt;&amp;&apos;&quot;&#233;&#xE9;&#x1F980;</a>");
        let want: Vec<Result<char, String>> = "<>&'\"éé🦀".chars().map(Ok).collect();
        assert_eq!(got, want);
        for bad in ["&lol;", "&#0;", "&#xD800;", "&#xFFFFFFFF;"] {
            let got = refs(&format!("<a>{bad}</a>"));
            assert_eq!(got.len(), 1, "{bad}");
            let err = got[0].clone().unwrap_err();
            assert!(
                err.contains("entity") || err.contains("reference"),
                "{bad}: {err}"
            );
        }
        assert!(
            refs("<a>&lol;</a>")[0]
                .clone()
                .unwrap_err()
                .contains("&lol;")
        );
    }
}
