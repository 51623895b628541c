//! Serde types of every structured reply, shared by the module and `optctl`.
//!
//! The module serialises these for `FORMAT JSON` replies and turns the same values into RESP
//! maps and arrays otherwise; `optctl` deserialises the JSON. One definition means the two can
//! never drift apart.

use serde::{Deserialize, Serialize};

/// Reply of `OPT.STATUS`: what `optctl status` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Module name as listed by `MODULE LIST` (`opt`).
    pub module: String,
    /// Module version (the crate's version).
    pub module_version: String,
    /// Server version, `major.minor.patch`.
    pub server_version: String,
    /// Optional server APIs the module looked for at load, and whether each was found.
    pub features: Vec<Feature>,
    /// Every `opt.*` config with its current value.
    pub configs: Vec<ConfigValue>,
}

/// An optional server capability detected at load time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// Short name, e.g. `command-filter`.
    pub name: String,
    /// Whether this server provides it.
    pub available: bool,
    /// What the module does with it, or how it degrades without it.
    pub note: String,
}

/// One config and its current value, as `CONFIG GET` would print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    /// Full name, `opt.<name>`.
    pub name: String,
    /// Current value as text.
    pub value: String,
}

/// One line of `OPT.HELP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpEntry {
    /// Command name.
    pub command: String,
    /// Syntax on one line.
    pub syntax: String,
    /// What it does.
    pub summary: String,
}
