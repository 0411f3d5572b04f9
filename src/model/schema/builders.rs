//! Rows → Arrow arrays column by column, straight into typed builders (no serde, no
//! intermediate JSON tape): each column of the schema is built in one pass over the
//! rows, so a page of contacts costs a few allocations per column. A row is anything that
//! implements [`Row`]: a [`ContactRecord`], or what a decoder parsed, borrowing the page's
//! text, so that a page goes to Arrow with each string copied once. [`read`] is the way
//! back, column by column into records.
//!
//! The schema stays the source of truth: columns are looked up by the names of
//! `schemas/contacts.v1.json`, and a schema field this code does not know is an error,
//! caught by the tests that convert every record the emulators make.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, ListArray, ListBuilder, RecordBatch, StringBuilder,
    StructArray, TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields, SchemaRef, TimestampMicrosecondType};

use super::{
    Address, ContactRecord, Email, Event, ExtendedProperty, Im, Organization, Phone, Photo,
    Relation, Website,
};
use crate::error::{Error, Result};

/// One scalar value of a row or of a list item.
#[derive(Clone, Copy)]
pub(crate) enum Cell<'a> {
    Str(Option<&'a str>),
    Bool(Option<bool>),
    /// A value the source never has, null in a column of either type.
    Null,
}

/// A struct whose scalar fields can be read by schema name; the getter is resolved once
/// per column, not per value. A name the type does not know is `None`, which the
/// builders report as an error, so a schema change cannot be silently dropped.
pub(crate) trait Cells {
    fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>>;
}

/// The way back: a struct whose scalar fields can be set by schema name.
trait SetCells: Cells + Default {
    /// Stores a value read from Arrow into the field called `name`.
    fn setter(name: &str) -> Option<fn(&mut Self, Cell<'_>)>;
}

/// A contact as the builders read it: the scalar columns through [`Cells`], the
/// timestamps, lists and photo through accessors.
pub(crate) trait Row: Cells {
    type Email: Cells;
    type Phone: Cells;
    type Address: Cells;
    type Im: Cells;
    type Organization: Cells;
    type Website: Cells;
    type Relation: Cells;
    type Event: Cells;
    type ExtendedProperty: Cells;
    type Group: AsRef<str>;
    /// A missing photo reads as the default's (null) fields.
    type Photo: Cells + Default;
    fn updated(&self) -> Option<i64>;
    fn synced_at(&self) -> i64;
    fn emails(&self) -> &[Self::Email];
    fn phones(&self) -> &[Self::Phone];
    fn addresses(&self) -> &[Self::Address];
    fn ims(&self) -> &[Self::Im];
    fn organizations(&self) -> &[Self::Organization];
    fn websites(&self) -> &[Self::Website];
    fn relations(&self) -> &[Self::Relation];
    fn events(&self) -> &[Self::Event];
    fn extended_properties(&self) -> &[Self::ExtendedProperty];
    fn groups(&self) -> &[Self::Group];
    fn photo(&self) -> Option<&Self::Photo>;
}

impl Row for ContactRecord {
    type Email = Email;
    type Phone = Phone;
    type Address = Address;
    type Im = Im;
    type Organization = Organization;
    type Website = Website;
    type Relation = Relation;
    type Event = Event;
    type ExtendedProperty = ExtendedProperty;
    type Group = String;
    type Photo = Photo;
    fn updated(&self) -> Option<i64> {
        self.updated
    }
    fn synced_at(&self) -> i64 {
        self._synced_at
    }
    fn emails(&self) -> &[Email] {
        &self.emails
    }
    fn phones(&self) -> &[Phone] {
        &self.phones
    }
    fn addresses(&self) -> &[Address] {
        &self.addresses
    }
    fn ims(&self) -> &[Im] {
        &self.ims
    }
    fn organizations(&self) -> &[Organization] {
        &self.organizations
    }
    fn websites(&self) -> &[Website] {
        &self.websites
    }
    fn relations(&self) -> &[Relation] {
        &self.relations
    }
    fn events(&self) -> &[Event] {
        &self.events
    }
    fn extended_properties(&self) -> &[ExtendedProperty] {
        &self.extended_properties
    }
    fn groups(&self) -> &[String] {
        &self.groups
    }
    fn photo(&self) -> Option<&Photo> {
        self.photo.as_ref()
    }
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
        impl SetCells for $t {
            fn setter(name: &str) -> Option<fn(&mut Self, Cell<'_>)> {
                match name {
                    $($name => {
                        fn set(x: &mut $t, c: Cell<'_>) {
                            cells!(@set $kind x.$f, c)
                        }
                        Some(set)
                    })*
                    _ => None,
                }
            }
        }
    };
    (@set s $e:expr, $c:ident) => { if let Cell::Str(v) = $c { $e = v.map(str::to_string) } };
    (@set r $e:expr, $c:ident) => { if let Cell::Str(v) = $c { $e = v.unwrap_or_default().to_string() } };
    (@set b $e:expr, $c:ident) => { if let Cell::Bool(v) = $c { $e = v } };
    (@set rb $e:expr, $c:ident) => { if let Cell::Bool(v) = $c { $e = v.unwrap_or_default() } };
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
                    Cell::Bool(_) | Cell::Null => 0,
                })
                .sum();
            let mut b = StringBuilder::with_capacity(items.len(), bytes);
            for x in items {
                match get(x) {
                    Cell::Str(s) => b.append_option(s),
                    Cell::Null => b.append_null(),
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
                    Cell::Null => b.append_null(),
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
pub(super) fn build<R: Row>(schema: &SchemaRef, records: &[R]) -> Result<ArrayRefs> {
    let all: Vec<&R> = records.iter().collect();
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
                "updated" => ts(records.iter().map(Row::updated).collect()),
                "_synced_at" => ts(records.iter().map(|r| Some(r.synced_at())).collect()),
                "emails" => struct_list(f, records.iter().map(Row::emails))?,
                "phones" => struct_list(f, records.iter().map(Row::phones))?,
                "addresses" => struct_list(f, records.iter().map(Row::addresses))?,
                "ims" => struct_list(f, records.iter().map(Row::ims))?,
                "organizations" => struct_list(f, records.iter().map(Row::organizations))?,
                "websites" => struct_list(f, records.iter().map(Row::websites))?,
                "relations" => struct_list(f, records.iter().map(Row::relations))?,
                "events" => struct_list(f, records.iter().map(Row::events))?,
                "extended_properties" => {
                    struct_list(f, records.iter().map(Row::extended_properties))?
                }
                "groups" => {
                    let DataType::List(item) = f.data_type() else {
                        return Err(mistyped(f));
                    };
                    let mut b = ListBuilder::with_capacity(StringBuilder::new(), n)
                        .with_field(item.clone());
                    for r in records {
                        for g in r.groups() {
                            b.values().append_value(g.as_ref());
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
                    let empty = R::Photo::default();
                    let photos: Vec<&R::Photo> = records
                        .iter()
                        .map(|r| r.photo().unwrap_or(&empty))
                        .collect();
                    let nulls = NullBuffer::from_iter(records.iter().map(|r| r.photo().is_some()));
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

/// Reads one scalar column into `items` (one per value of `col`).
fn read_scalar<T: SetCells>(field: &Field, col: &dyn Array, items: &mut [T]) -> Result<()> {
    let set = T::setter(field.name()).ok_or_else(|| unknown(field))?;
    match col.data_type() {
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            for (i, x) in items.iter_mut().enumerate() {
                set(x, Cell::Str(a.is_valid(i).then(|| a.value(i))));
            }
        }
        DataType::Boolean => {
            let a = col.as_boolean();
            for (i, x) in items.iter_mut().enumerate() {
                set(x, Cell::Bool(a.is_valid(i).then(|| a.value(i))));
            }
        }
        _ => return Err(mistyped(field)),
    }
    Ok(())
}

/// Reads a struct array into one `T` per row (a null row reads as its children's values,
/// which are null).
fn read_structs<T: SetCells>(field: &Field, col: &dyn Array) -> Result<Vec<T>> {
    let structs = col.as_struct_opt().ok_or_else(|| mistyped(field))?;
    let mut items: Vec<T> = (0..structs.len()).map(|_| T::default()).collect();
    for (f, child) in structs.fields().iter().zip(structs.columns()) {
        read_scalar(f, child.as_ref(), &mut items)?;
    }
    Ok(items)
}

/// Reads a `list<struct>` column into each record's list (a null list reads as empty).
fn read_struct_list<T: SetCells>(
    field: &Field,
    col: &dyn Array,
    records: &mut [ContactRecord],
    slot: fn(&mut ContactRecord) -> &mut Vec<T>,
) -> Result<()> {
    let list = col.as_list_opt::<i32>().ok_or_else(|| mistyped(field))?;
    let offsets = list.value_offsets();
    let mut items = read_structs::<T>(field, list.values().as_ref())?.into_iter();
    let mut at = 0usize;
    for (i, r) in records.iter_mut().enumerate() {
        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
        // Offsets only grow; the values before `start` belong to no row of this slice.
        let _ = items.by_ref().take(start - at).count();
        let values: Vec<T> = items.by_ref().take(end - start).collect();
        at = end;
        if list.is_valid(i) {
            *slot(r) = values;
        }
    }
    Ok(())
}

/// Reads records from `batch`, which has exactly the contacts schema's columns and types
/// (see [`crate::arrow_util::normalize_batch`]).
pub(super) fn read(batch: &RecordBatch) -> Result<Vec<ContactRecord>> {
    let mut records: Vec<ContactRecord> = (0..batch.num_rows())
        .map(|_| ContactRecord::default())
        .collect();
    let schema = batch.schema();
    for (f, col) in schema.fields().iter().zip(batch.columns()) {
        let col = col.as_ref();
        match f.name().as_str() {
            "updated" | "_synced_at" => {
                let a = col
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .ok_or_else(|| mistyped(f))?;
                for (i, r) in records.iter_mut().enumerate() {
                    let v = a.is_valid(i).then(|| a.value(i));
                    if f.name() == "updated" {
                        r.updated = v;
                    } else {
                        r._synced_at = v.unwrap_or_default();
                    }
                }
            }
            "emails" => read_struct_list(f, col, &mut records, |r| &mut r.emails)?,
            "phones" => read_struct_list(f, col, &mut records, |r| &mut r.phones)?,
            "addresses" => read_struct_list(f, col, &mut records, |r| &mut r.addresses)?,
            "ims" => read_struct_list(f, col, &mut records, |r| &mut r.ims)?,
            "organizations" => read_struct_list(f, col, &mut records, |r| &mut r.organizations)?,
            "websites" => read_struct_list(f, col, &mut records, |r| &mut r.websites)?,
            "relations" => read_struct_list(f, col, &mut records, |r| &mut r.relations)?,
            "events" => read_struct_list(f, col, &mut records, |r| &mut r.events)?,
            "extended_properties" => {
                read_struct_list(f, col, &mut records, |r| &mut r.extended_properties)?
            }
            "groups" => {
                let list = col.as_list_opt::<i32>().ok_or_else(|| mistyped(f))?;
                let values = list
                    .values()
                    .as_string_opt::<i32>()
                    .ok_or_else(|| mistyped(f))?;
                for (i, r) in records.iter_mut().enumerate() {
                    if list.is_valid(i) {
                        let range =
                            list.value_offsets()[i] as usize..list.value_offsets()[i + 1] as usize;
                        // A null group name cannot be sent anywhere; it reads as absent.
                        r.groups = range
                            .filter(|&j| values.is_valid(j))
                            .map(|j| values.value(j).to_string())
                            .collect();
                    }
                }
            }
            "photo" => {
                let photos = read_structs::<Photo>(f, col)?;
                for (i, (r, p)) in records.iter_mut().zip(photos).enumerate() {
                    r.photo = col.is_valid(i).then_some(p);
                }
            }
            _ => read_scalar(f, col, &mut records)?,
        }
    }
    Ok(records)
}
