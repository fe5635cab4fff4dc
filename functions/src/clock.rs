//! Wall-clock time and fresh ids.

use confab_protocol::Timestamp;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now() -> Timestamp {
    Timestamp::from_millis(now_ms())
}

/// A fresh UUIDv7, lowercase and hyphenated.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}
