//! Pure-Rust heart of redis-cache-optimizer.
//!
//! Everything here runs without a Redis server and without FFI, so it can be unit-tested and
//! benchmarked on its own: the module (`module/`) is thin glue that feeds live data into these
//! types, and `optctl` (`ctl/`) reads the same serde report types back from JSON replies.

#![warn(missing_docs)]

pub mod advise;
pub mod args;
mod chunked;
pub mod cluster;
pub mod config;
pub mod expiring;
pub mod freshness;
pub mod freshness_index;
pub mod glob;
pub mod hash_secret;
pub mod hotkeys;
mod idtable;
pub mod keyspace;
pub mod keyspace_diff;
pub mod keyspec;
pub mod known_big_keys;
pub mod memsize;
mod name_map;
pub mod pattern;
pub mod persist;
pub mod report;
pub mod sketch;
pub mod tag_transfer;
pub mod tags;
#[cfg(test)]
mod test_rng;
pub mod version;
