//! The row builder's side of a page: the list items of its entries (one vector per
//! list, each entry holding ranges of them), the entries' scalar values, and [`GRow`],
//! the view of one entry the schema's typed builders read.

use std::borrow::Cow;
use std::ops::Range;

use super::{RecordContext, S};
use crate::model::schema::builders::{Cell, Cells, Row};

/// Schema columns of a list item, each a field of the decoder's item.
macro_rules! xml_cells {
    ($t:ident { $($name:literal => $kind:ident $f:ident),* $(,)? }) => {
        impl Cells for $t<'_> {
            fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>> {
                match name {
                    $($name => {
                        fn get<'x>(x: &'x $t<'_>) -> Cell<'x> {
                            xml_cells!(@cell $kind x.$f)
                        }
                        Some(get)
                    })*
                    _ => None,
                }
            }
        }
    };
    (@cell s $e:expr) => { Cell::Str($e.as_deref()) };
    (@cell b $e:expr) => { Cell::Bool($e) };
}

/// Declares the decoder's list items: plain structs of page values, and their columns.
macro_rules! xml_items {
    ($($(#[$m:meta])* $t:ident { $($name:literal => $kind:ident $f:ident),* $(,)? })*) => {$(
        $(#[$m])*
        #[derive(Debug, Default)]
        pub(super) struct $t<'a> {
            $(pub(super) $f: xml_items!(@ty $kind 'a),)*
        }
        xml_cells!($t { $($name => $kind $f),* });
    )*};
    (@ty s $a:lifetime) => { S<$a> };
    (@ty b $a:lifetime) => { Option<bool> };
}

xml_items! {
    /// `gd:email`.
    EmailX { "address" => s address, "type" => s kind, "label" => s label, "primary" => b primary, "display_name" => s display_name }
    /// `gd:phoneNumber`.
    PhoneX { "number" => s number, "type" => s kind, "label" => s label, "primary" => b primary, "uri" => s uri }
    /// `gd:structuredPostalAddress`.
    AddressX {
        "type" => s kind, "label" => s label, "primary" => b primary, "street" => s street,
        "po_box" => s po_box, "neighborhood" => s neighborhood, "city" => s city,
        "region" => s region, "postcode" => s postcode, "country" => s country,
        "formatted" => s formatted,
    }
    /// `gd:im`.
    ImX { "address" => s address, "protocol" => s protocol, "type" => s kind, "label" => s label, "primary" => b primary }
    /// `gd:organization`.
    OrgX {
        "name" => s name, "title" => s title, "department" => s department, "type" => s kind,
        "label" => s label, "primary" => b primary,
    }
    /// `gContact:website`.
    WebsiteX { "href" => s href, "type" => s kind, "label" => s label, "primary" => b primary }
    /// `gContact:relation`.
    RelationX { "name" => s name, "type" => s kind, "label" => s label }
    /// `gContact:event`.
    EventX { "type" => s kind, "label" => s label, "start" => s start }
    /// The photo `link`.
    PhotoX { "href" => s href, "etag" => s etag }
    /// `gd:extendedProperty`.
    ExtPropX { "name" => s name, "value" => s value, "xml" => s xml }
}

/// The list items of a page's entries, one vector per list; an entry holds ranges.
#[derive(Default)]
pub(super) struct Items<'a> {
    pub(super) emails: Vec<EmailX<'a>>,
    pub(super) phones: Vec<PhoneX<'a>>,
    pub(super) addresses: Vec<AddressX<'a>>,
    pub(super) ims: Vec<ImX<'a>>,
    pub(super) organizations: Vec<OrgX<'a>>,
    pub(super) websites: Vec<WebsiteX<'a>>,
    pub(super) relations: Vec<RelationX<'a>>,
    pub(super) events: Vec<EventX<'a>>,
    pub(super) extended_properties: Vec<ExtPropX<'a>>,
    pub(super) groups: Vec<Cow<'a, str>>,
}

/// Where an entry's items are in [`Items`]: one position per list.
#[derive(Clone, Copy, Default)]
pub(super) struct Marks([u32; 10]);

impl Items<'_> {
    pub(super) fn marks(&self) -> Marks {
        Marks(
            [
                self.emails.len(),
                self.phones.len(),
                self.addresses.len(),
                self.ims.len(),
                self.organizations.len(),
                self.websites.len(),
                self.relations.len(),
                self.events.len(),
                self.extended_properties.len(),
                self.groups.len(),
            ]
            .map(|n| n as u32),
        )
    }
}

/// One entry as read: its scalar values, and where its list items are.
#[derive(Default)]
pub(super) struct Entry<'a> {
    pub(super) id: Cow<'a, str>,
    pub(super) etag: S<'a>,
    pub(super) updated: Option<i64>,
    pub(super) deleted: bool,
    pub(super) display_name: S<'a>,
    pub(super) given_name: S<'a>,
    pub(super) family_name: S<'a>,
    pub(super) middle_name: S<'a>,
    pub(super) prefix: S<'a>,
    pub(super) suffix: S<'a>,
    pub(super) nickname: S<'a>,
    pub(super) file_as: S<'a>,
    pub(super) notes: S<'a>,
    pub(super) birthday: S<'a>,
    pub(super) photo: Option<PhotoX<'a>>,
    /// The entry as a standalone document, a range of the page's `raws`.
    pub(super) raw: Range<usize>,
    pub(super) from: Marks,
    pub(super) to: Marks,
}

/// An entry with what it refers to, as the builders read it.
pub(super) struct GRow<'p, 'a> {
    pub(super) e: &'p Entry<'a>,
    pub(super) items: &'p Items<'a>,
    pub(super) raws: &'p str,
    pub(super) ctx: &'p RecordContext,
}

impl GRow<'_, '_> {
    fn span(&self, k: usize) -> Range<usize> {
        self.e.from.0[k] as usize..self.e.to.0[k] as usize
    }
}

impl Cells for GRow<'_, '_> {
    fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>> {
        let get: fn(&Self) -> Cell<'_> = match name {
            "source" => |x| Cell::Str(Some(&x.ctx.source)),
            "account" => |x| Cell::Str(Some(&x.ctx.account)),
            "_run_id" => |x| Cell::Str(Some(&x.ctx.run_id)),
            "id" => |x| Cell::Str(Some(&x.e.id)),
            "etag" => |x| Cell::Str(x.e.etag.as_deref()),
            "deleted" => |x| Cell::Bool(Some(x.e.deleted)),
            "display_name" => |x| Cell::Str(x.e.display_name.as_deref()),
            "given_name" => |x| Cell::Str(x.e.given_name.as_deref()),
            "family_name" => |x| Cell::Str(x.e.family_name.as_deref()),
            "middle_name" => |x| Cell::Str(x.e.middle_name.as_deref()),
            "prefix" => |x| Cell::Str(x.e.prefix.as_deref()),
            "suffix" => |x| Cell::Str(x.e.suffix.as_deref()),
            "nickname" => |x| Cell::Str(x.e.nickname.as_deref()),
            "file_as" => |x| Cell::Str(x.e.file_as.as_deref()),
            "notes" => |x| Cell::Str(x.e.notes.as_deref()),
            "birthday" => |x| Cell::Str(x.e.birthday.as_deref()),
            // GData has no provider-native extras beyond `raw`.
            "native" => |_| Cell::Str(None),
            "raw" => |x| Cell::Str(Some(&x.raws[x.e.raw.clone()])),
            _ => return None,
        };
        Some(get)
    }
}

impl<'a> Row for GRow<'_, 'a> {
    type Email = EmailX<'a>;
    type Phone = PhoneX<'a>;
    type Address = AddressX<'a>;
    type Im = ImX<'a>;
    type Organization = OrgX<'a>;
    type Website = WebsiteX<'a>;
    type Relation = RelationX<'a>;
    type Event = EventX<'a>;
    type ExtendedProperty = ExtPropX<'a>;
    type Group = Cow<'a, str>;
    type Photo = PhotoX<'a>;
    fn updated(&self) -> Option<i64> {
        self.e.updated
    }
    fn synced_at(&self) -> i64 {
        self.ctx.synced_at_us
    }
    fn emails(&self) -> &[EmailX<'a>] {
        &self.items.emails[self.span(0)]
    }
    fn phones(&self) -> &[PhoneX<'a>] {
        &self.items.phones[self.span(1)]
    }
    fn addresses(&self) -> &[AddressX<'a>] {
        &self.items.addresses[self.span(2)]
    }
    fn ims(&self) -> &[ImX<'a>] {
        &self.items.ims[self.span(3)]
    }
    fn organizations(&self) -> &[OrgX<'a>] {
        &self.items.organizations[self.span(4)]
    }
    fn websites(&self) -> &[WebsiteX<'a>] {
        &self.items.websites[self.span(5)]
    }
    fn relations(&self) -> &[RelationX<'a>] {
        &self.items.relations[self.span(6)]
    }
    fn events(&self) -> &[EventX<'a>] {
        &self.items.events[self.span(7)]
    }
    fn extended_properties(&self) -> &[ExtPropX<'a>] {
        &self.items.extended_properties[self.span(8)]
    }
    fn groups(&self) -> &[Cow<'a, str>] {
        &self.items.groups[self.span(9)]
    }
    fn photo(&self) -> Option<&PhotoX<'a>> {
        self.e.photo.as_ref()
    }
}
