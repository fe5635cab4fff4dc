//! `ConnectionStore` on the connections table.

use super::codec::{ConnectionRow, SubscriptionRow, expires_at, get_s, item, s};
use super::errors::backend;
use super::{BY_OWNER, BY_SESSION, CONN_SK, DynamoStore};
use crate::domain::records::{SubscribeOutcome, Subscriber};
use crate::ports::{ConnectionStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, ReturnConsumedCapacity, TransactWriteItem};

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn put_connection(&self, id: &str, owner: &str, now_ms: i64) -> Result<(), StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(item(&ConnectionRow {
                connection_id: id,
                sk: CONN_SK,
                owner,
                connected_ms: now_ms,
                expires_at: expires_at(now_ms),
            })?))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        self.count("dynamodb:PutItem", out.consumed_capacity());
        self.stats.estimate(2.0);
        Ok(())
    }

    async fn connection_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.get(
            &self.tables.connections,
            &[("connectionId", id), ("sk", CONN_SK)],
            None,
        )
        .await?
        .as_ref()
        .map(|i| get_s(i, "owner").map(str::to_string))
        .transpose()
    }

    async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        let keys = self
            .subscription_rows(id)
            .await?
            .into_iter()
            .map(|mut r| {
                r.retain(|k, _| k == "connectionId" || k == "sk");
                r
            })
            .collect();
        self.delete_keys(&self.tables.connections, keys).await
    }

    async fn owner_connections(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.connections,
                Some(BY_OWNER),
                "owner",
                owner,
                None,
            )
            .await?;
        rows.iter()
            .map(|r| get_s(r, "connectionId").map(str::to_string))
            .collect()
    }

    async fn subscribe(
        &self,
        connection_id: &str,
        session_id: &str,
        token: &str,
        max: usize,
    ) -> Result<SubscribeOutcome, StoreError> {
        let rows = self.subscription_rows(connection_id).await?;
        let this = format!("sub#{session_id}");
        let mut owner = None;
        let mut held = 0;
        for r in &rows {
            match get_s(r, "sk")? {
                CONN_SK => owner = Some(get_s(r, "owner")?.to_string()),
                sk if sk.starts_with("sub#") && sk != this => held += 1,
                _ => {}
            }
        }
        if held >= max {
            return Ok(SubscribeOutcome::TooMany);
        }
        let Some(owner) = owner else {
            return Ok(SubscribeOutcome::NotFound);
        };
        let now = crate::clock::now_ms();
        // The session must exist and be the connection owner's when the row
        // is written: a session deleted meanwhile gets no subscription.
        let check = ConditionCheck::builder()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .condition_expression("#owner = :o")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(&owner))
            .build()
            .map_err(backend)?;
        let put = Put::builder()
            .table_name(&self.tables.connections)
            .set_item(Some(item(&SubscriptionRow {
                connection_id,
                sk: this,
                session_id,
                token,
                expires_at: expires_at(now),
            })?))
            .build()
            .map_err(backend)?;
        match self
            .transact(vec![
                TransactWriteItem::builder().condition_check(check).build(),
                TransactWriteItem::builder().put(put).build(),
            ])
            .await?
        {
            None => {
                // Condition check and row, doubled; the bySession row.
                self.stats.estimate(2.0 * 2.0 + 1.0);
                Ok(SubscribeOutcome::Subscribed)
            }
            Some(_) => Ok(SubscribeOutcome::NotFound),
        }
    }

    async fn unsubscribe(&self, connection_id: &str, session_id: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(connection_id))
            .key("sk", s(format!("sub#{session_id}")))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        self.count("dynamodb:DeleteItem", out.consumed_capacity());
        self.stats.estimate(2.0);
        Ok(())
    }

    async fn subscribers(&self, session_id: &str) -> Result<Vec<Subscriber>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.connections,
                Some(BY_SESSION),
                "sessionId",
                session_id,
                None,
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Subscriber {
                    connection_id: get_s(r, "connectionId")?.to_string(),
                    token: get_s(r, "token")?.to_string(),
                })
            })
            .collect()
    }
}
