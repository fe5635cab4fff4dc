//! The billing model: item sizes and write units by DynamoDB's rules, and
//! what the store reports to `AwsStats`.

use super::codec::to_av;
use super::{DynamoStore, Item};
use crate::domain::records::ActiveTurn;
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};
use confab_protocol::model::{Message, SessionSummary};

/// The size DynamoDB bills an attribute value at: UTF-8 bytes of strings,
/// about one byte per two digits of a number, 3 bytes per map or list plus 1
/// per element.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        _ => 1,
    }
}

/// The billed size of an item: names and values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write units of one item of `bytes` (1 KiB each, at least 1).
pub(super) fn units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// About the size of a session row holding `rec` (the search attributes
/// counted at their summary's length).
pub(super) fn session_size(summary: &SessionSummary, turn: Option<&ActiveTurn>) -> usize {
    let av = |v: Result<AttributeValue, StoreError>| v.map(|v| value_size(&v)).unwrap_or(0);
    80 + summary.id.len() * 3
        + summary.project_id.len()
        + summary.title.len()
        + summary.first_message_preview.len()
        + av(to_av(summary))
        + turn.map_or(0, |t| av(to_av(t)))
}

impl DynamoStore {
    pub(super) fn count(&self, kind: &str, cc: Option<&ConsumedCapacity>) {
        self.stats.request(kind);
        self.capacity(cc);
    }

    pub(super) fn capacity(&self, cc: Option<&ConsumedCapacity>) {
        if let Some(cc) = cc {
            let read = cc.read_capacity_units().unwrap_or(0.0);
            let write = cc.write_capacity_units().unwrap_or(0.0);
            // Some answers give only the total; writes report write units.
            if read == 0.0 && write == 0.0 {
                self.stats.capacity(0.0, cc.capacity_units().unwrap_or(0.0));
            } else {
                self.stats.capacity(read, write);
            }
        }
    }

    pub(super) fn capacities(&self, kind: &str, ccs: &[ConsumedCapacity]) {
        self.stats.request(kind);
        for cc in ccs {
            self.capacity(Some(cc));
        }
    }

    /// Write units of a message row and its id guard.
    pub(super) fn message_units(&self, m: &Message) -> f64 {
        let row = to_av(m).map(|v| value_size(&v)).unwrap_or(0) + 40 + m.session_id.len();
        units(row) + 1.0
    }
}
