//! Records → Arrow arrays column by column, straight into typed builders (no serde, no
//! intermediate JSON tape): each column of the schema is built in one pass over the
//! records, so a page of contacts costs a few allocations per column.
//!
//! The schema stays the source of truth: columns are looked up by the names of
//! `schemas/contacts.v1.json`, and a schema field this code does not know is an error,
//! caught by the tests that convert every record the emulators make.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, ListArray, ListBuilder, StringBuilder, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields, SchemaRef};

use super::{
    Address, ContactRecord, Email, Event, ExtendedProperty, Im, Organization, Phone, Photo,
    Relation, Website,
};
use crate::error::{Error, Result};

/// One scalar value of a record or of a list item.
#[derive(Clone, Copy)]
enum Cell<'a> {
    Str(Option<&'a str>),
    Bool(Option<bool>),
}

/// A struct whose scalar fields can be read by schema name; the getter is resolved once
/// per column, not per value.
trait Cells {
    fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>>;
}

macro_rules! cells {
    ($t:ty { $($name:literal => $kind:ident $f:ident),* $(,)? }) => {
        impl Cells for $t {
            fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>> {
                match name {
                    $($name => {
                        fn get(x: &$t) -> Cell<'_> {
                            cells!(@cell $kind x.$f)
                        }
                        Some(get)
                    })*
                    _ => None,
                }
            }
        }
    };
    (@cell s $e:expr) => { Cell::Str($e.as_deref()) };
    (@cell r $e:expr) => { Cell::Str(Some($e.as_str())) };
    (@cell b $e:expr) => { Cell::Bool($e) };
    (@cell rb $e:expr) => { Cell::Bool(Some($e)) };
}

cells!(Email { "address" => s address, "type" => s kind, "label" => s label, "primary" => b primary, "display_name" => s display_name });
cells!(Phone { "number" => s number, "type" => s kind, "label" => s label, "primary" => b primary, "uri" => s uri });
cells!(Address {
    "type" => s kind, "label" => s label, "primary" => b primary, "street" => s street,
    "po_box" => s po_box, "neighborhood" => s neighborhood, "city" => s city,
    "region" => s region, "postcode" => s postcode, "country" => s country,
    "formatted" => s formatted,
});
cells!(Im { "address" => s address, "protocol" => s protocol, "type" => s kind, "label" => s label, "primary" => b primary });
cells!(Organization {
    "name" => s name, "title" => s title, "department" => s department, "type" => s kind,
    "label" => s label, "primary" => b primary,
});
cells!(Website { "href" => s href, "type" => s kind, "label" => s label, "primary" => b primary });
cells!(Relation { "name" => s name, "type" => s kind, "label" => s label });
cells!(Event { "type" => s kind, "label" => s label, "start" => s start });
cells!(Photo { "href" => s href, "etag" => s etag });
cells!(ExtendedProperty { "name" => s name, "value" => s value, "xml" => s xml });
cells!(ContactRecord {
    "source" => r source, "account" => r account, "id" => r id, "etag" => s etag,
    "deleted" => rb deleted, "display_name" => s display_name, "given_name" => s given_name,
    "family_name" => s family_name, "middle_name" => s middle_name, "prefix" => s prefix,
    "suffix" => s suffix, "nickname" => s nickname, "file_as" => s file_as,
    "notes" => s notes, "birthday" => s birthday, "native" => s native, "raw" => s raw,
    "_run_id" => r _run_id,
});

/// One scalar column of `items`, typed by `field`.
fn scalar_column<T: Cells>(field: &Field, items: &[&T]) -> Result<ArrayRef> {
    let get = T::getter(field.name()).ok_or_else(|| unknown(field))?;
    match field.data_type() {
        DataType::Utf8 => {
            let bytes: usize = items
                .iter()
                .map(|x| match get(x) {
                    Cell::Str(s) => s.map_or(0, str::len),
                    Cell::Bool(_) => 0,
                })
                .sum();
            let mut b = StringBuilder::with_capacity(items.len(), bytes);
            for x in items {
                match get(x) {
                    Cell::Str(s) => b.append_option(s),
                    Cell::Bool(_) => return Err(mistyped(field)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(items.len());
            for x in items {
                match get(x) {
                    Cell::Bool(v) => b.append_option(v),
                    Cell::Str(_) => return Err(mistyped(field)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        _ => Err(mistyped(field)),
    }
}

/// The children of a struct column, one per field of `fields`.
fn struct_children<T: Cells>(fields: &Fields, items: &[&T]) -> Result<Vec<ArrayRef>> {
    fields.iter().map(|f| scalar_column(f, items)).collect()
}

/// A `list<struct>` column: one list per record, from `lists`.
fn struct_list<'a, T: Cells + 'a>(
    field: &Field,
    lists: impl Iterator<Item = &'a [T]>,
) -> Result<ArrayRef> {
    let DataType::List(item) = field.data_type() else {
        return Err(mistyped(field));
    };
    let DataType::Struct(children) = item.data_type() else {
        return Err(mistyped(field));
    };
    let mut offsets = vec![0i32];
    let mut items: Vec<&T> = Vec::new();
    for l in lists {
        items.extend(l.iter());
        offsets.push(items.len() as i32);
    }
    let structs = StructArray::try_new_with_length(
        children.clone(),
        struct_children(children, &items)?,
        None,
        items.len(),
    )?;
    Ok(Arc::new(ListArray::try_new(
        item.clone(),
        OffsetBuffer::new(offsets.into()),
        Arc::new(structs),
        None,
    )?))
}

fn unknown(field: &Field) -> Error {
    Error::other(format!(
        "the contacts schema has a column {} that the Arrow conversion does not know",
        field.name()
    ))
}

fn mistyped(field: &Field) -> Error {
    Error::other(format!(
        "the contacts schema column {} has a type ({}) the Arrow conversion does not build",
        field.name(),
        field.data_type()
    ))
}

/// Builds one batch of `schema` (the contacts schema) from `records`.
pub(super) fn build(schema: &SchemaRef, records: &[ContactRecord]) -> Result<ArrayRefs> {
    let all: Vec<&ContactRecord> = records.iter().collect();
    let n = records.len();
    schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef> {
            let ts = |v: Vec<Option<i64>>| -> ArrayRef {
                let tz = match f.data_type() {
                    DataType::Timestamp(_, tz) => tz.clone(),
                    _ => None,
                };
                Arc::new(TimestampMicrosecondArray::from(v).with_timezone_opt(tz))
            };
            Ok(match f.name().as_str() {
                "updated" => ts(records.iter().map(|r| r.updated).collect()),
                "_synced_at" => ts(records.iter().map(|r| Some(r._synced_at)).collect()),
                "emails" => struct_list(f, records.iter().map(|r| r.emails.as_slice()))?,
                "phones" => struct_list(f, records.iter().map(|r| r.phones.as_slice()))?,
                "addresses" => struct_list(f, records.iter().map(|r| r.addresses.as_slice()))?,
                "ims" => struct_list(f, records.iter().map(|r| r.ims.as_slice()))?,
                "organizations" => {
                    struct_list(f, records.iter().map(|r| r.organizations.as_slice()))?
                }
                "websites" => struct_list(f, records.iter().map(|r| r.websites.as_slice()))?,
                "relations" => struct_list(f, records.iter().map(|r| r.relations.as_slice()))?,
                "events" => struct_list(f, records.iter().map(|r| r.events.as_slice()))?,
                "extended_properties" => {
                    struct_list(f, records.iter().map(|r| r.extended_properties.as_slice()))?
                }
                "groups" => {
                    let DataType::List(item) = f.data_type() else {
                        return Err(mistyped(f));
                    };
                    let mut b = ListBuilder::with_capacity(StringBuilder::new(), n)
                        .with_field(item.clone());
                    for r in records {
                        for g in &r.groups {
                            b.values().append_value(g);
                        }
                        b.append(true);
                    }
                    Arc::new(b.finish())
                }
                "photo" => {
                    let DataType::Struct(children) = f.data_type() else {
                        return Err(mistyped(f));
                    };
                    // A missing photo is a null struct; its children hold nulls there.
                    let empty = Photo::default();
                    let photos: Vec<&Photo> = records
                        .iter()
                        .map(|r| r.photo.as_ref().unwrap_or(&empty))
                        .collect();
                    let nulls = NullBuffer::from_iter(records.iter().map(|r| r.photo.is_some()));
                    Arc::new(StructArray::try_new_with_length(
                        children.clone(),
                        struct_children(children, &photos)?,
                        Some(nulls),
                        n,
                    )?)
                }
                _ => scalar_column(f, &all)?,
            })
        })
        .collect()
}

/// The columns of one batch.
pub(super) type ArrayRefs = Vec<ArrayRef>;
