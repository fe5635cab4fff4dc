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

/// A fresh UUIDv7 as an id of whichever kind is wanted (`SessionId`,
/// `TurnId`, ...), or as a plain string.
pub fn new_id<T: From<uuid::Uuid>>() -> T {
    T::from(uuid::Uuid::now_v7())
}

/// A fresh UUIDv7, lowercase and hyphenated, for what is not an id of the
/// contract (subscription tokens).
pub fn new_token() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}
