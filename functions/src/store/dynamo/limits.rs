//! `LimitStore` on the connections table: an owner's counters and sets are
//! items under `connectionId = limits#<owner>` (a connection id from API
//! Gateway never holds `#`), `sk` the counter's key or `set#<key>`, each
//! with `expiresAt` so DynamoDB's TTL forgets it.

use super::DynamoStore;
use super::codec::{get_n, n, s};
use super::errors::{backend, is_condition_failed};
use crate::ports::{Held, LimitStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};

fn partition(owner: &str) -> String {
    format!("limits#{owner}")
}

fn set_sk(key: &str) -> String {
    format!("set#{key}")
}

/// TTL attributes are in seconds.
fn ttl(expires_ms: i64) -> AttributeValue {
    n(expires_ms.div_euclid(1000) + 1)
}

impl DynamoStore {
    fn members(item: Option<&super::Item>) -> Vec<String> {
        item.and_then(|i| i.get("members"))
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl LimitStore for DynamoStore {
    async fn count(
        &self,
        owner: &str,
        key: &str,
        amount: u64,
        max: u64,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        // DynamoDB numbers hold 38 digits: a u64 is exact.
        let Some(room) = max.checked_sub(amount) else {
            return Ok(false);
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(partition(owner)))
            .key("sk", s(key))
            .update_expression("SET n = if_not_exists(n, :zero) + :amount, expiresAt = :exp")
            .condition_expression("attribute_not_exists(n) OR n <= :room")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":amount", n(amount))
            .expression_attribute_values(":room", n(room))
            .expression_attribute_values(":exp", ttl(expires_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                DynamoStore::count(self, "dynamodb:UpdateItem", out.consumed_capacity());
                self.stats.estimate(1.0);
                Ok(true)
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn counted(&self, owner: &str, key: &str, now_ms: i64) -> Result<u64, StoreError> {
        let owner = partition(owner);
        let Some(item) = self
            .get(
                &self.tables.connections,
                &[("connectionId", &owner), ("sk", key)],
                None,
            )
            .await?
        else {
            return Ok(0);
        };
        if get_n(&item, "expiresAt")? * 1000 <= now_ms {
            return Ok(0);
        }
        Ok(get_n(&item, "n")?.max(0) as u64)
    }

    async fn hold(
        &self,
        owner: &str,
        key: &str,
        member: &str,
        max: u32,
        expires_ms: i64,
    ) -> Result<Held, StoreError> {
        let pk = partition(owner);
        let sk = set_sk(key);
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(&pk))
            .key("sk", s(&sk))
            .update_expression("ADD members :m SET expiresAt = :exp")
            .condition_expression(
                "attribute_not_exists(members) OR size(members) < :max OR contains(members, :one)",
            )
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member.to_string()]))
            .expression_attribute_values(":one", s(member))
            .expression_attribute_values(":max", n(max))
            .expression_attribute_values(":exp", ttl(expires_ms))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                DynamoStore::count(self, "dynamodb:UpdateItem", out.consumed_capacity());
                self.stats.estimate(1.0);
                let before = DynamoStore::members(out.attributes.as_ref());
                Ok(if before.iter().any(|m| m == member) {
                    Held::Already
                } else {
                    Held::Added
                })
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                let item = self
                    .get(
                        &self.tables.connections,
                        &[("connectionId", &pk), ("sk", &sk)],
                        Some("members"),
                    )
                    .await?;
                Ok(Held::Full(DynamoStore::members(item.as_ref())))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn release(&self, owner: &str, key: &str, member: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(partition(owner)))
            .key("sk", s(set_sk(key)))
            .update_expression("DELETE members :m")
            .condition_expression("attribute_exists(sk)")
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member.to_string()]))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match out {
            Ok(out) => {
                DynamoStore::count(self, "dynamodb:UpdateItem", out.consumed_capacity());
                self.stats.estimate(1.0);
                Ok(())
            }
            // No set: nothing to take out (and nothing made).
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(())
            }
            Err(e) => Err(backend(e)),
        }
    }
}
