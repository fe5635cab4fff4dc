//! `LimitStore` on the connections table: an owner's counters and sets are
//! items under `connectionId = limits#<owner>` (a connection id from API
//! Gateway never holds `#`), `sk` the counter's key or `set#<key>`, each
//! with `expiresAt` so DynamoDB's TTL forgets it.

use super::DynamoStore;
use super::codec::{get_n, n, s};
use super::errors::{backend, is_condition_failed};
use crate::ports::{Held, LimitStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
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
    /// Sends an `UpdateItem` of one small item and counts it: its output, or
    /// None when its condition failed.
    async fn conditional_update(
        &self,
        update: UpdateItemFluentBuilder,
    ) -> Result<Option<UpdateItemOutput>, StoreError> {
        let result = update
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                DynamoStore::count(self, "dynamodb:UpdateItem", out.consumed_capacity());
                self.stats.estimate(1.0);
                Ok(Some(out))
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(None)
            }
            Err(e) => Err(backend(e)),
        }
    }

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
        let update = self
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
            .expression_attribute_values(":exp", ttl(expires_ms));
        Ok(self.conditional_update(update).await?.is_some())
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
        let update = self
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
            .return_values(ReturnValue::AllOld);
        match self.conditional_update(update).await? {
            Some(out) => {
                let before = DynamoStore::members(out.attributes.as_ref());
                Ok(if before.iter().any(|m| m == member) {
                    Held::Already
                } else {
                    Held::Added
                })
            }
            None => {
                let item = self
                    .get(
                        &self.tables.connections,
                        &[("connectionId", &pk), ("sk", &sk)],
                        Some("members"),
                    )
                    .await?;
                Ok(Held::Full(DynamoStore::members(item.as_ref())))
            }
        }
    }

    async fn release(&self, owner: &str, key: &str, member: &str) -> Result<(), StoreError> {
        // No set: nothing to take out (and nothing made).
        let update = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(partition(owner)))
            .key("sk", s(set_sk(key)))
            .update_expression("DELETE members :m")
            .condition_expression("attribute_exists(sk)")
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member.to_string()]));
        self.conditional_update(update).await.map(|_| ())
    }
}
