//! Ids and message text as types, checked once, where they are read: a value
//! of one of these types is valid, so nothing past the edge checks again.
//! Each reads and writes as a plain JSON string (`#[serde(try_from)]`); a
//! bad one fails deserialization with a message that says what is wrong.

use crate::validate::{self, Invalid};
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_type {
    ($(#[$doc:meta])* $name:ident, $read:expr, $schema:tt) => {
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }

        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            pub fn parse(value: impl Into<String>) -> Result<$name, Invalid> {
                let read: fn(String) -> Result<String, Invalid> = $read;
                read(value.into()).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(value: String) -> Result<$name, Invalid> {
                $name::parse(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Invalid;
            fn from_str(value: &str) -> Result<$name, Invalid> {
                $name::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl From<&$name> for String {
            fn from(value: &$name) -> String {
                value.0.clone()
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

macro_rules! uuid_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        string_type!(
            $(#[$doc])* $name,
            |v| validate::id($field, &v).map(|()| v),
            {
                "type": "string",
                "format": "uuid",
                "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
            }
        );

        impl From<uuid::Uuid> for $name {
            /// A UUID is always a valid id, written lowercase and hyphenated.
            fn from(u: uuid::Uuid) -> $name {
                $name(u.hyphenated().to_string())
            }
        }
    };
}

uuid_type!(
    /// A session's id: a UUID the client makes (v7), lowercase and hyphenated.
    SessionId,
    "session id"
);
uuid_type!(
    /// A message's id: a UUID; the client makes its own messages' ids.
    MessageId,
    "message id"
);
uuid_type!(
    /// A turn's id: a UUID the server makes.
    TurnId,
    "turn id"
);
uuid_type!(
    /// A pending request's id: a UUID the server makes.
    RequestId,
    "request id"
);
string_type!(
    /// A socket connection's id: API Gateway's (base64, such as
    /// `L0SM9cOFvHcCIhw=`) or the local gateway's (a UUID): 1 to 128 of
    /// `A-Z a-z 0-9 + / = _ -`.
    ConnectionId,
    |v| validate::connection_id(&v).map(|()| v),
    { "type": "string", "pattern": "^[A-Za-z0-9+/=_-]{1,128}$" }
);
string_type!(
    /// A project's id: `[a-z0-9][a-z0-9_-]{0,63}`.
    ProjectId,
    |v| validate::project_id(&v).map(|()| v),
    { "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$" }
);
string_type!(
    /// What a user wrote: 1 byte to 32 KiB once trimmed. It is trimmed when
    /// read, and stored as trimmed.
    MessageText,
    |v| validate::message_text(&v).map(str::to_string),
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 8192,
        "pattern": "\\S",
        "description": "1 byte to 32 KiB of UTF-8 once trimmed (8,192 characters always fit)"
    }
);

impl ProjectId {
    /// The project of a session created without one.
    pub fn default_project() -> ProjectId {
        ProjectId(validate::DEFAULT_PROJECT.to_string())
    }
}

impl From<uuid::Uuid> for ConnectionId {
    /// How the local gateway names its connections.
    fn from(u: uuid::Uuid) -> ConnectionId {
        ConnectionId(u.hyphenated().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_when_read() {
        let ok = "\"0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70\"";
        let id: SessionId = serde_json::from_str(ok).unwrap();
        assert_eq!(id, "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70");
        assert_eq!(serde_json::to_string(&id).unwrap(), ok);
        let err = serde_json::from_str::<SessionId>("\"../etc\"").unwrap_err();
        assert!(err.to_string().starts_with("session id must be"), "{err}");
        assert!(serde_json::from_str::<MessageId>("7").is_err());
        assert!(serde_json::from_str::<ProjectId>("\"A\"").is_err());
        assert!(ConnectionId::parse("L0SM9cOFvHcCIhw=").is_ok());
        assert!(ConnectionId::parse("a b").is_err());
        assert!(ConnectionId::parse("").is_err());
    }

    #[test]
    fn message_text_is_trimmed_and_bounded() {
        assert_eq!(MessageText::parse("  hi \n").unwrap(), "hi");
        let read: MessageText = serde_json::from_str("\"  hi \"").unwrap();
        assert_eq!(read, "hi", "read as trimmed");
        assert!(serde_json::from_str::<MessageText>("\"   \"").is_err());
        let over = format!("\"{}\"", "a".repeat(validate::MAX_MESSAGE_BYTES + 1));
        let err = serde_json::from_str::<MessageText>(&over).unwrap_err();
        assert!(validate::names_too_large(&err.to_string()), "{err}");
    }

    #[test]
    fn uuids_make_valid_ids() {
        let u = uuid::Uuid::nil();
        let id = TurnId::from(u);
        assert_eq!(TurnId::parse(id.to_string()).unwrap(), id);
    }
}
