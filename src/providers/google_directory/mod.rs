//! Google's directory through the People API (`people.listDirectoryPeople`): a read-only
//! source of a domain's shared contacts and its users' directory profiles.

pub mod config;
pub mod cursor;
pub mod decode;
