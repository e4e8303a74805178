//! Names the server gives meaning to in storage, which no client may name (issue #26).
//!
//! A leaf: identity validation (account, user, peer ids) and storage paths both apply it.

/// Prefix of every name a backend gives meaning to in storage: local temp files, S3 directory
/// markers, lock leases, move intents, publishing flags, probes and segment-log folders.
pub const INTERNAL_PREFIX: &str = ".longship-";

/// The one "is this segment a storage-internal name" predicate (spec §5.5): the server's own
/// names (anything starting with [`INTERNAL_PREFIX`]) and the names upstream's storage gives
/// meaning to. Such a name is never listed, stat'ed, read or found, and no user, account, peer
/// or path segment a client names may be one (400, "reserved").
pub fn is_internal_name(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
        || matches!(name, ".path.ovlock" | ".redirect.json" | ".sync_log.json")
        || name.starts_with(".exact.ovlock.")
}
