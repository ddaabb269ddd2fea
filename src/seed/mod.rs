//! Seeding a new replica of a running source. Everything that would make seeding fail is
//! checked before anything is changed; then the target is filled (from a logical snapshot,
//! from a physical snapshot restored as its data directory, or by a direct clone of the
//! source), attached with GTID auto-positioning, and verified against the source.

pub mod attach;
pub mod checksum;
pub mod direct_clone;
pub mod preflight;
pub mod resume;
