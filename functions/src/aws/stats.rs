//! Counts of what the AWS adapters asked of AWS, for benchmarks and logs.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Requests by kind (`dynamodb:PutItem`, `apigw:PostToConnection`, ...) and
/// the capacity DynamoDB reported consuming.
#[derive(Debug, Default)]
pub struct AwsStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct StatsSnapshot {
    pub requests: BTreeMap<String, u64>,
    /// As DynamoDB's `ReturnConsumedCapacity` answered (an emulator may
    /// answer less exactly than DynamoDB).
    pub write_units: f64,
    pub read_units: f64,
    /// Write units by DynamoDB's published rules, from the sizes of the
    /// items written (`dynamo::item_size`), transactions doubled, index
    /// writes included.
    pub estimated_write_units: f64,
}

impl StatsSnapshot {
    /// Requests whose kind starts with `prefix`.
    pub fn count(&self, prefix: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let mut requests = BTreeMap::new();
        for (k, v) in &self.requests {
            let d = v - earlier.requests.get(k).copied().unwrap_or(0);
            if d > 0 {
                requests.insert(k.clone(), d);
            }
        }
        StatsSnapshot {
            requests,
            write_units: self.write_units - earlier.write_units,
            read_units: self.read_units - earlier.read_units,
            estimated_write_units: self.estimated_write_units - earlier.estimated_write_units,
        }
    }
}

type Inner = StatsSnapshot;

impl AwsStats {
    pub fn request(&self, kind: &str) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *s.requests.entry(kind.to_string()).or_default() += 1;
    }

    pub fn capacity(&self, read: f64, write: f64) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.read_units += read;
        s.write_units += write;
    }

    pub fn estimate(&self, write_units: f64) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.estimated_write_units += write_units;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
