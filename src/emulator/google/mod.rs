//! The Google Domain Shared Contacts API (GData v3) emulator: feed paging, queries,
//! deletion placeholders, single-entry writes with ETags, batch, validation, error bodies
//! as Google sends them, and an OAuth2 token endpoint for service-account JWTs.
//!
//! Four rooms: `store` (the contacts, their versions and the truth the tests compare
//! with), `render` (entries and feeds as the API writes them, and its error bodies),
//! `routes` (the axum routes, the authorization and version gate in front of them, and
//! the token endpoint) and `writes` (inserts, updates, deletes and batches, checked by
//! the API's rules).

mod render;
mod routes;
mod store;
mod writes;

pub use render::{gdata_error, person_to_content};
pub use routes::routes;
pub(crate) use routes::{authorized, query_pairs};
pub use store::{GContact, GoogleStore, photo_bytes};

// The rooms share these imports and each other's items through `use super::*`.
use {render::*, store::*, writes::*};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};

use crate::emulator::data::{ExtValue, Generator, Kind, Person};
use crate::emulator::xml::{self, APP, ATOM, BATCH, El, GCONTACT, GD};
use crate::emulator::{EmulatorConfig, MutationSummary, Shared, Truth, hash64};
use crate::model::schema::{self, ContactRecord};

const KIND_SCHEME: &str = "http://schemas.google.com/g/2005#kind";
const CONTACT_KIND: &str = "http://schemas.google.com/contact/2008#contact";
const PHOTO_REL: &str = "http://schemas.google.com/contacts/2008/rel#photo";
const MAX_EXT_PROPS: usize = 10;
const MAX_DATA_BYTES: usize = 2048;
const MAX_BATCH: usize = 100;
