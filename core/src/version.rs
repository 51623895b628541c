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
    match valkey_major_minor(display_version) {
        None => false,
        Some(Some(version)) => version >= (8, 1),
        Some(None) => true,
    }
}

/// The longest string value that the server named by `display_version` may keep inside its
/// object (`embstr`), where a write in place (`RedisModule_StringDMA`) would leave a separate
/// (`raw`) one. An upper bound: every longer value is raw after SET.
/// - Redis, and Valkey up to 8.0: 44 bytes (a 64-byte object without the key).
/// - Valkey 8.1: the object holds the key and expiry too, and embeds within 64 bytes: its
///   16-byte header and the value's 8-bit sds header and terminator (4) leave 44 at most
///   (measured on 8.1.1: 41 with an empty name, 40 with a 1-byte one, 32 with that and a TTL).
/// - Valkey 9.1: within 128 bytes, its header 8 bytes: 116 at most (measured on 9.1.2: 113
///   with an empty name, 112 with a 1-byte one, 104 with a TTL). 9.0, not measured, gets the
///   same bound, which is safe whichever budget it has.
/// - An unreadable Valkey version: 255, the most an 8-bit sds, and so an embedded value, holds.
pub fn longest_embedded_value(display_version: &str) -> usize {
    match valkey_major_minor(display_version) {
        None => 44,
        Some(Some(version)) if version < (9, 0) => 44,
        Some(Some(_)) => 116,
        Some(None) => 255,
    }
}

/// Whether the server named by `display_version` may leave a client in another database
/// after delivering a keyspace event to a module: Valkey 8.1 and 9.0 select the event's
/// database on the client that runs the command and never select its own back
/// (valkey-io/valkey#4024, fixed in 9.1; 8.1.1 measured). An unreadable Valkey version counts
/// as one that may: the callers' remedy changes nothing on a server that is fixed.
pub fn leaves_client_in_event_db(display_version: &str) -> bool {
    match valkey_major_minor(display_version) {
        None => false,
        Some(Some(version)) => ((8, 1)..(9, 1)).contains(&version),
        Some(None) => true,
    }
}

/// `None` for a server other than Valkey; for Valkey its (major, minor), `None` when unreadable.
fn valkey_major_minor(display_version: &str) -> Option<Option<(u32, u32)>> {
    let version = display_version.strip_prefix("valkey ")?;
    let mut parts = version.split('.').map(str::parse::<u32>);
    Some(match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    })
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

    #[test]
    fn valkey_8_1_to_9_0_leave_clients_in_the_event_db() {
        use super::leaves_client_in_event_db;
        for (version, leaves) in [
            ("redis 7.0.15", false),
            ("redis 8.6.3", false),
            ("valkey 8.0.1", false),
            ("valkey 8.1.1", true),
            ("valkey 9.0.3", true),
            ("valkey 9.1.2", false),
            ("valkey unstable", true),
        ] {
            assert_eq!(leaves_client_in_event_db(version), leaves, "{version}");
        }
    }

    #[test]
    fn the_longest_embedded_value_follows_the_object_budget() {
        use super::longest_embedded_value;
        for (version, longest) in [
            ("redis 7.0.15", 44),
            ("redis 8.6.3", 44),
            ("valkey 8.0.1", 44),
            ("valkey 8.1.1", 44),
            ("valkey 9.0.0", 116),
            ("valkey 9.1.2", 116),
            ("valkey 10.0.0", 116),
            ("valkey unstable", 255),
        ] {
            assert_eq!(longest_embedded_value(version), longest, "{version}");
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
