//! One component per file.

pub mod banner;
pub mod composer;
pub mod markdown;
pub mod message_view;
pub mod request_card;
pub mod session_item;
pub mod sidebar;
pub mod tool_card;
