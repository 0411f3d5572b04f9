//! An update merged into the landed entry: only the elements of the changed column
//! groups are replaced (every element the schema does not model survives), unchanged list
//! items are kept as they landed, and the entry's `gd:etag` is the version the change was
//! based on.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::render::{elements_of, group, render_column};
use super::{ATOM, GD};
use crate::error::{Error, Kind, Result};
use crate::model::schema::ContactRecord;

/// Whether a resolved name is in namespace `ns`.
pub(super) fn ns_eq(r: &ResolveResult, ns: &str) -> bool {
    matches!(r, ResolveResult::Bound(n) if n.as_ref() == ns.as_bytes())
}

/// The list items of `merged` rendered for an update: an item whose modelled values equal
/// those of a landed item is sent as the landed element, as it came (`spans`, the landed
/// elements of the column in document order, the order the decoder read them in), so the
/// attributes and children the schema does not model survive; other items are rendered.
fn keep_items<T: PartialEq + Clone>(
    merged: &[T],
    landed: &[T],
    spans: &[&str],
    one: impl Fn(T) -> ContactRecord,
    column: &str,
) -> String {
    let mut used = vec![false; landed.len()];
    let mut out = String::new();
    for item in merged {
        let j = (0..landed.len().min(spans.len())).find(|&j| !used[j] && landed[j] == *item);
        match j {
            Some(j) => {
                used[j] = true;
                out.push_str(spans[j]);
            }
            None => out.push_str(&render_column(column, &one(item.clone()))),
        }
    }
    out
}

/// Renders a list column for an update (see [`keep_items`]); `None` for other columns.
fn render_list(
    column: &str,
    merged: &ContactRecord,
    landed: &ContactRecord,
    spans: &[&str],
) -> Option<String> {
    type R = ContactRecord;
    let d = R::default;
    Some(match column {
        "emails" => keep_items(
            &merged.emails,
            &landed.emails,
            spans,
            |x| R {
                emails: vec![x],
                ..d()
            },
            column,
        ),
        "phones" => keep_items(
            &merged.phones,
            &landed.phones,
            spans,
            |x| R {
                phones: vec![x],
                ..d()
            },
            column,
        ),
        "addresses" => keep_items(
            &merged.addresses,
            &landed.addresses,
            spans,
            |x| R {
                addresses: vec![x],
                ..d()
            },
            column,
        ),
        "ims" => keep_items(
            &merged.ims,
            &landed.ims,
            spans,
            |x| R {
                ims: vec![x],
                ..d()
            },
            column,
        ),
        "organizations" => keep_items(
            &merged.organizations,
            &landed.organizations,
            spans,
            |x| R {
                organizations: vec![x],
                ..d()
            },
            column,
        ),
        "websites" => keep_items(
            &merged.websites,
            &landed.websites,
            spans,
            |x| R {
                websites: vec![x],
                ..d()
            },
            column,
        ),
        "relations" => keep_items(
            &merged.relations,
            &landed.relations,
            spans,
            |x| R {
                relations: vec![x],
                ..d()
            },
            column,
        ),
        "events" => keep_items(
            &merged.events,
            &landed.events,
            spans,
            |x| R {
                events: vec![x],
                ..d()
            },
            column,
        ),
        "extended_properties" => keep_items(
            &merged.extended_properties,
            &landed.extended_properties,
            spans,
            |x| R {
                extended_properties: vec![x],
                ..d()
            },
            column,
        ),
        // Removed memberships are in the entry but not in `groups`: no one-to-one order.
        _ => return None,
    })
}

/// The landed entry with the changed column groups replaced and `gd:etag` set to `etag`.
/// With `landed` (the contact `raw` was decoded into), list items that did not change are
/// kept as the landed elements, unmodelled attributes and children included.
pub fn update_entry(
    raw: &str,
    merged: &ContactRecord,
    changed: &[String],
    etag: Option<&str>,
    landed: Option<&ContactRecord>,
) -> Result<String> {
    let mut groups: Vec<&str> = Vec::new();
    for c in changed {
        if !groups.contains(&group(c)) {
            groups.push(group(c));
        }
    }
    let mut r = NsReader::from_str(raw);
    let mut w = quick_xml::Writer::new(Vec::new());
    let mut depth = 0usize;
    let mut skip_until: Option<usize> = None;
    // The dropped elements of each changed group, as spans of `raw`, in document order.
    let mut spans: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut open_span: Option<(&str, usize)> = None;
    loop {
        let before = r.buffer_position() as usize;
        let (res, ev) = r.read_resolved_event().map_err(unparsable)?;
        match ev {
            Event::Eof => break,
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                let level = depth + 1;
                if !empty {
                    depth += 1;
                }
                if skip_until.is_some() {
                    continue;
                }
                if level == 2
                    && let Some(c) = changed_column(changed, &res, s)
                {
                    let g = group(c);
                    if empty {
                        let end = r.buffer_position() as usize;
                        spans.entry(g).or_default().push(span(raw, before, end)?);
                    } else {
                        skip_until = Some(level);
                        open_span = Some((g, before));
                    }
                    continue;
                }
                if level == 1 {
                    let start = entry_start(&r, s, etag);
                    w.write_event(if empty {
                        Event::Empty(start)
                    } else {
                        Event::Start(start)
                    })
                    .map_err(unparsable)?;
                    continue;
                }
                w.write_event(ev.borrow()).map_err(unparsable)?;
            }
            Event::End(ref e) => {
                let level = depth;
                depth = depth.saturating_sub(1);
                if let Some(l) = skip_until {
                    if level == l {
                        skip_until = None;
                        if let Some((g, start)) = open_span.take() {
                            let end = r.buffer_position() as usize;
                            spans.entry(g).or_default().push(span(raw, start, end)?);
                        }
                    }
                    continue;
                }
                if level == 1 {
                    let new = replacement(&groups, merged, landed, &spans);
                    w.get_mut().extend_from_slice(new.as_bytes());
                }
                w.write_event(Event::End(e.clone())).map_err(unparsable)?;
            }
            other => {
                if skip_until.is_none() {
                    w.write_event(other).map_err(unparsable)?;
                }
            }
        }
    }
    String::from_utf8(w.into_inner()).map_err(unparsable)
}

/// `raw[from..to]`, two positions the reader reported in it.
fn span(raw: &str, from: usize, to: usize) -> Result<&str> {
    raw.get(from..to).ok_or_else(|| {
        Error::decode(format!(
            "the landed raw entry does not parse near byte {from} (run sync --full-refresh)"
        ))
    })
}

/// The changed column whose element `s` (a child of the entry, in namespace `res`) is.
fn changed_column<'c>(
    changed: &'c [String],
    res: &ResolveResult,
    s: &BytesStart<'_>,
) -> Option<&'c String> {
    changed.iter().find(|c| {
        let (ns, names) = elements_of(c);
        ns_eq(res, ns)
            && names
                .iter()
                .any(|n| s.local_name().as_ref() == n.as_bytes())
    })
}

/// The entry's start tag `s` again, with `gd:etag` set to the version the change was
/// based on (and `xmlns:gd` declared for it).
fn entry_start(r: &NsReader<&[u8]>, s: &BytesStart<'_>, etag: Option<&str>) -> BytesStart<'static> {
    let mut start = BytesStart::new(String::from_utf8_lossy(s.name().as_ref()).into_owned());
    for a in s.attributes().flatten() {
        let (ans, local) = r.resolver().resolve_attribute(a.key);
        if ns_eq(&ans, GD) && local.as_ref() == b"etag" {
            continue;
        }
        start.push_attribute(a);
    }
    let has_gd = s
        .attributes()
        .flatten()
        .any(|a| a.key.as_ref() == b"xmlns:gd");
    if !has_gd {
        start.push_attribute(("xmlns:gd", GD));
    }
    if let Some(e) = etag {
        start.push_attribute(("gd:etag", e));
    }
    start
}

/// The elements of the changed groups, rendered from `merged`, that go where the
/// dropped ones were; with `landed`, unchanged list items are the landed elements.
fn replacement(
    groups: &[&str],
    merged: &ContactRecord,
    landed: Option<&ContactRecord>,
    spans: &HashMap<&str, Vec<&str>>,
) -> String {
    let mut new = String::new();
    for g in groups {
        let kept = landed
            .and_then(|l| render_list(g, merged, l, spans.get(g).map_or(&[][..], Vec::as_slice)));
        match kept {
            Some(k) => new.push_str(&k),
            None => new.push_str(&render_column(
                if *g == "name" { "display_name" } else { g },
                merged,
            )),
        }
    }
    new
}

/// The `atom:id` text of a raw entry.
pub fn atom_id(raw: &str) -> Option<String> {
    let mut r = NsReader::from_str(raw);
    let mut depth = 0usize;
    let mut in_id = false;
    loop {
        match r.read_resolved_event().ok()? {
            (res, Event::Start(s)) => {
                depth += 1;
                in_id = depth == 2 && ns_eq(&res, ATOM) && s.local_name().as_ref() == b"id";
            }
            (_, Event::Text(t)) if in_id => return Some(t.decode().ok()?.trim().to_string()),
            (_, Event::End(_)) => {
                depth = depth.saturating_sub(1);
                in_id = false;
            }
            (_, Event::Eof) => return None,
            _ => {}
        }
    }
}

/// A landed raw entry the XML reader or writer stopped at, the reader's error kept.
fn unparsable(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(
        Kind::Decode,
        "the landed raw entry does not parse (run sync --full-refresh)",
        e,
    )
}
