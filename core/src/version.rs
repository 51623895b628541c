//! Server versions as the module API reports them, and the feature floor we support.
//!
//! `RedisModule_GetServerVersion` packs a version as `0x00MMmmpp`. Keeping the decoding and the
//! comparison here lets the module refuse old servers with a precise message, and lets tests
//! check that decision without a server.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerVersion {
    /// Major version (7 for Redis 7.0.15).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Patch level.
    pub patch: u8,
}

/// The oldest server the module supports: Redis 7.0 (Debian 12's `redis-server`).
pub const MIN_SUPPORTED: ServerVersion = ServerVersion {
    major: 7,
    minor: 0,
    patch: 0,
};

impl ServerVersion {
    /// Decodes the `0x00MMmmpp` integer returned by `RedisModule_GetServerVersion`.
    pub fn from_packed(packed: i32) -> Self {
        let p = packed as u32;
        ServerVersion {
            major: ((p >> 16) & 0xff) as u8,
            minor: ((p >> 8) & 0xff) as u8,
            patch: (p & 0xff) as u8,
        }
    }

    /// Whether this server is at least [`MIN_SUPPORTED`].
    pub fn is_supported(self) -> bool {
        self >= MIN_SUPPORTED
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_packed_versions() {
        let v = ServerVersion::from_packed(0x0007_000f);
        assert_eq!(v.to_string(), "7.0.15");
        assert!(v.is_supported());
        let v = ServerVersion::from_packed(0x0006_020e);
        assert_eq!(v.to_string(), "6.2.14");
        assert!(!v.is_supported());
        assert!(ServerVersion::from_packed(0x0008_0600) > ServerVersion::from_packed(0x0007_0400));
    }
}

/// Extracts `valkey 8.1.1` or `redis 7.0.15` from the text of `INFO server`.
///
/// Valkey reports `redis_version:7.2.4` for compatibility and its own version apart, so the
/// Valkey field wins when both are present.
pub fn server_identity(info_server: &str) -> Option<String> {
    let field = |name: &str| {
        info_server
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if let Some(v) = field("valkey_version:") {
        return Some(format!("valkey {v}"));
    }
    field("redis_version:").map(|v| format!("redis {v}"))
}

/// Whether the server named by `display_version` (see [`server_identity`]) may keep a string
/// value in one allocation with its key and expiry: Valkey 8.1 and later. Valkey 8.0 and
/// Redis embed a value in its object only up to 44 bytes, with the key apart. An unreadable
/// Valkey version counts as one that does, which is the cautious answer for the callers (they
/// leave such values to the server's own write).
pub fn embeds_values_with_keys(display_version: &str) -> bool {
    let Some(version) = display_version.strip_prefix("valkey ") else {
        return false;
    };
    let mut parts = version.split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (8, 1),
        _ => true,
    }
}

#[cfg(test)]
mod identity_tests {
    use super::server_identity;

    #[test]
    fn prefers_valkey_version() {
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\n";
        assert_eq!(server_identity(valkey).as_deref(), Some("valkey 8.1.1"));
        let redis = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(server_identity(redis).as_deref(), Some("redis 7.0.15"));
        assert_eq!(server_identity("nothing"), None);
    }

    #[test]
    fn valkey_embeds_values_with_keys_from_8_1() {
        use super::embeds_values_with_keys;
        for (version, embeds) in [
            ("redis 7.0.15", false),
            ("redis 8.6.3", false),
            ("valkey 7.2.5", false),
            ("valkey 8.0.1", false),
            ("valkey 8.1.0", true),
            ("valkey 9.1.2", true),
            ("valkey 10.0.0", true),
            ("valkey unstable", true),
        ] {
            assert_eq!(embeds_values_with_keys(version), embeds, "{version}");
        }
    }
}

/// The names of the modules listed in the text of `INFO modules`
/// (`module:name=opt,ver=...`), other than `own`.
pub fn other_modules<'a>(info_modules: &'a str, own: &str) -> Vec<&'a str> {
    info_modules
        .lines()
        .filter_map(|l| l.strip_prefix("module:name="))
        .map(|rest| rest.split(',').next().unwrap_or_default().trim())
        .filter(|name| !name.is_empty() && *name != own)
        .collect()
}

#[cfg(test)]
mod modules_tests {
    use super::other_modules;

    #[test]
    fn lists_every_module_but_ours() {
        let info = "# Modules\r\nmodule:name=search,ver=80600,api=1,filters=0,usedby=[],\
                    using=[],options=[]\r\nmodule:name=opt,ver=100,api=1,filters=1,usedby=[],\
                    using=[],options=[handle-io-errors]\r\n";
        assert_eq!(other_modules(info, "opt"), vec!["search"]);
        assert!(other_modules("# Modules\r\n", "opt").is_empty());
        assert!(other_modules("module:name=opt,ver=1\r\n", "opt").is_empty());
    }
}
