//! Validation both sides share: the limits of the contract and the forms of ids.

use std::fmt;

/// Largest message text, in UTF-8 bytes after trimming.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Largest REST request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest first-message preview, in characters.
pub const PREVIEW_CHARS: usize = 120;
/// The project of a session created without one.
pub const DEFAULT_PROJECT: &str = "default";
/// Page size limits of `GET /api/sessions` and the message pages.
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_PAGE: usize = 50;

/// What is wrong with a value, phrased for the person who sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
    /// True when the value is too large rather than malformed.
    pub too_large: bool,
}

impl Invalid {
    fn new(field: &'static str, reason: impl Into<String>) -> Invalid {
        Invalid {
            field,
            reason: reason.into(),
            too_large: false,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}

/// A session or message id: a UUID, lowercase and hyphenated.
pub fn id(field: &'static str, value: &str) -> Result<(), Invalid> {
    let ok = value.len() == 36
        && uuid::Uuid::try_parse(value).is_ok_and(|u| u.hyphenated().to_string() == value);
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must be a lowercase hyphenated UUID such as 0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70",
        ))
    }
}

/// A socket connection id: 1 to 128 of `A-Z a-z 0-9 + / = _ -` (API
/// Gateway's are base64, the local gateway's UUIDs).
pub fn connection_id(value: &str) -> Result<(), Invalid> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "connection id",
            "must be 1 to 128 of A-Z, a-z, 0-9, '+', '/', '=', '_' and '-'",
        ))
    }
}

/// What an [`Invalid`] that is too large says after its field.
const TOO_LARGE_LIMIT: &str = "bytes; the limit is ";

/// Whether an error message (a deserializer's, which keeps only the text of
/// the [`Invalid`] behind it) is about a value over its size limit.
pub fn names_too_large(message: &str) -> bool {
    message.contains(TOO_LARGE_LIMIT)
}

/// Message text: 1 byte to 32 KiB after trimming. Returns the trimmed text,
/// which is what gets stored.
pub fn message_text(value: &str) -> Result<&str, Invalid> {
    let t = value.trim();
    if t.is_empty() {
        return Err(Invalid::new("text", "must not be empty"));
    }
    if t.len() > MAX_MESSAGE_BYTES {
        return Err(Invalid {
            field: "text",
            reason: format!("is {} {TOO_LARGE_LIMIT}{MAX_MESSAGE_BYTES} bytes", t.len()),
            too_large: true,
        });
    }
    Ok(t)
}

/// A title: 1 to 200 characters after trimming. Returns the trimmed title.
pub fn title(value: &str) -> Result<&str, Invalid> {
    let t = value.trim();
    let n = t.chars().count();
    if n == 0 {
        return Err(Invalid::new("title", "must not be empty"));
    }
    if n > MAX_TITLE_CHARS {
        return Err(Invalid::new(
            "title",
            format!("is {n} characters; the limit is {MAX_TITLE_CHARS}"),
        ));
    }
    Ok(t)
}

/// A project id: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn project_id(value: &str) -> Result<(), Invalid> {
    let bytes = value.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes[1.min(bytes.len())..]
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if first_ok && rest_ok && bytes.len() <= 64 {
        Ok(())
    } else {
        Err(Invalid::new(
            "projectId",
            "must be 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
        ))
    }
}

/// A page size: 1..=100, 50 when absent.
pub fn limit(value: Option<usize>) -> Result<usize, Invalid> {
    match value {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(Invalid::new("limit", format!("must be 1 to {MAX_PAGE}"))),
    }
}

/// The first characters of a first message, for lists.
pub fn preview(text: &str) -> String {
    text.chars().take(PREVIEW_CHARS).collect()
}

/// A title made from the first message when none is given: its first line,
/// at most 80 characters.
pub fn default_title(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim();
    let mut out: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("New session");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_lowercase_hyphenated_uuids() {
        assert!(id("id", "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70").is_ok());
        assert!(id("id", "0192F0C1-7E3A-7CC0-8A8E-0D3C4B5A6F70").is_err());
        assert!(id("id", "0192f0c17e3a7cc08a8e0d3c4b5a6f70").is_err());
        assert!(id("id", "{0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70}").is_err());
        assert!(id("id", "urn:uuid:0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70").is_err());
        assert!(id("id", "").is_err());
        assert!(id("id", "../../etc/passwd").is_err());
    }

    #[test]
    fn message_text_bounds() {
        assert_eq!(message_text("  hi \n").unwrap(), "hi");
        assert!(message_text("").is_err());
        assert!(message_text(" \n\t ").is_err());
        let max = "a".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(message_text(&max).unwrap().len(), MAX_MESSAGE_BYTES);
        let padded = format!("  {max}  ");
        assert!(
            message_text(&padded).is_ok(),
            "surrounding space is not counted"
        );
        let over = "a".repeat(MAX_MESSAGE_BYTES + 1);
        let err = message_text(&over).unwrap_err();
        assert!(err.too_large);
        // Multi-byte characters count in bytes, not characters.
        let euros = "€".repeat(MAX_MESSAGE_BYTES / 3 + 1);
        assert!(message_text(&euros).is_err());
    }

    #[test]
    fn title_bounds_count_characters() {
        assert!(title("").is_err());
        assert!(title("   ").is_err());
        assert_eq!(title(" a ").unwrap(), "a");
        assert!(title(&"é".repeat(200)).is_ok());
        assert!(title(&"é".repeat(201)).is_err());
    }

    #[test]
    fn project_id_form() {
        for ok in ["default", "a", "0", "my-project_2", &"a".repeat(64)] {
            assert!(project_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a b",
            "a/b",
            "..",
            "é",
            &"a".repeat(65),
        ] {
            assert!(project_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limit_bounds() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(1)).unwrap(), 1);
        assert_eq!(limit(Some(100)).unwrap(), 100);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(101)).is_err());
    }

    #[test]
    fn previews_and_default_titles() {
        let long = "x".repeat(500);
        assert_eq!(preview(&long).chars().count(), 120);
        assert_eq!(default_title("\n  Fix the build  \nmore"), "Fix the build");
        assert_eq!(default_title(&long).chars().count(), 81);
    }
}
