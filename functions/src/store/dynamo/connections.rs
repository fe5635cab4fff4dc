//! `ConnectionStore` on the connections table.

use super::codec::{ConnectionRow, SubscriptionRow, expires_at, get_n, get_s, item, n, s, sub_sk};
use super::errors::backend;
use super::{BY_OWNER, BY_SESSION, CONN_SK, DynamoStore};
use crate::domain::records::{
    Principal, RESUBSCRIBE_EVERY_MS, SessionRef, SubscribeOutcome, Subscriber,
};
use crate::ports::{ConnectionStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    ConditionCheck, Delete, Put, ReturnConsumedCapacity, ReturnValue, TransactWriteItem, Update,
};

/// Where a socket ticket is kept: beside the connections, never a valid
/// connection id (those have no `#`).
fn ticket_key(ticket: &str) -> String {
    format!("ticket#{ticket}")
}
const TICKET_SK: &str = "ticket";

/// When the token a connection or ticket stands for expires, if it does.
fn auth_exp(item: &super::Item) -> Result<Option<i64>, StoreError> {
    item.get("authExp")
        .map(|_| get_n(item, "authExp"))
        .transpose()
}

impl DynamoStore {
    /// Removes one subscription row and takes it off its connection's
    /// count, in one transaction; a row that is not there changes nothing.
    pub(super) async fn drop_subscription(
        &self,
        connection_id: &str,
        session_id: &str,
    ) -> Result<(), StoreError> {
        let delete = Delete::builder()
            .table_name(&self.tables.connections)
            .key("connectionId", s(connection_id))
            .key("sk", s(sub_sk(session_id)))
            .condition_expression("attribute_exists(sk)")
            .build()
            .map_err(backend)?;
        let count = Update::builder()
            .table_name(&self.tables.connections)
            .key("connectionId", s(connection_id))
            .key("sk", s(CONN_SK))
            .update_expression("SET subs = subs - :one")
            .condition_expression("subs > :zero")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(backend)?;
        match self
            .transact(vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder().update(count).build(),
            ])
            .await?
        {
            None => {
                self.stats.estimate(2.0 * 2.0 + 1.0);
                Ok(())
            }
            Some(failed) if failed.first() == Some(&true) => Ok(()),
            // The connection row is gone (or uncounted): the row alone.
            Some(_) => {
                self.delete_keys(
                    &self.tables.connections,
                    vec![std::collections::HashMap::from([
                        ("connectionId".to_string(), s(connection_id)),
                        ("sk".to_string(), s(sub_sk(session_id))),
                    ])],
                )
                .await
            }
        }
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn put_connection(
        &self,
        id: &str,
        who: &Principal,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(item(&ConnectionRow {
                connection_id: id,
                sk: CONN_SK,
                owner: &who.owner,
                connected_ms: now_ms,
                subs: 0,
                expires_at: expires_at(now_ms),
                auth_exp: who.auth_expires_ms,
            })?))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        self.count("dynamodb:PutItem", out.consumed_capacity());
        self.stats.estimate(2.0);
        Ok(())
    }

    async fn connection(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        self.get(
            &self.tables.connections,
            &[("connectionId", id), ("sk", CONN_SK)],
            None,
        )
        .await?
        .as_ref()
        .map(|i| {
            Ok(Principal {
                owner: get_s(i, "owner")?.to_string(),
                auth_expires_ms: auth_exp(i)?,
            })
        })
        .transpose()
    }

    async fn put_ticket(
        &self,
        ticket: &str,
        who: &Principal,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        // Not `owner`: the row must stay out of the owner index of sockets.
        let mut put = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .item("connectionId", s(ticket_key(ticket)))
            .item("sk", s(TICKET_SK))
            .item("ticketOwner", s(&who.owner))
            .item("usableMs", n(expires_ms))
            .item("expiresAt", n(expires_ms.div_euclid(1000) + 60))
            .condition_expression("attribute_not_exists(sk)")
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if let Some(e) = who.auth_expires_ms {
            put = put.item("authExp", n(e));
        }
        let out = put.send().await.map_err(backend)?;
        self.count("dynamodb:PutItem", out.consumed_capacity());
        self.stats.estimate(1.0);
        Ok(())
    }

    async fn take_ticket(
        &self,
        ticket: &str,
        now_ms: i64,
    ) -> Result<Option<Principal>, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(ticket_key(ticket)))
            .key("sk", s(TICKET_SK))
            .condition_expression("attribute_exists(ticketOwner) AND usableMs > :now")
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match out {
            Ok(out) => {
                self.count("dynamodb:DeleteItem", out.consumed_capacity());
                self.stats.estimate(1.0);
                let Some(old) = out.attributes else {
                    return Ok(None);
                };
                Ok(Some(Principal {
                    owner: get_s(&old, "ticketOwner")?.to_string(),
                    auth_expires_ms: auth_exp(&old)?,
                }))
            }
            Err(e) if super::errors::is_condition_failed(&e) => {
                self.stats.request("dynamodb:DeleteItem");
                Ok(None)
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn renew_connection(&self, id: &str, who: &Principal) -> Result<bool, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(id))
            .key("sk", s(CONN_SK))
            .condition_expression("#owner = :o")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(&who.owner))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        update = match who.auth_expires_ms {
            Some(e) => update
                .update_expression("SET authExp = :e")
                .expression_attribute_values(":e", n(e)),
            None => update.update_expression("REMOVE authExp"),
        };
        match update.send().await {
            Ok(out) => {
                self.count("dynamodb:UpdateItem", out.consumed_capacity());
                self.stats.estimate(1.0);
                Ok(true)
            }
            Err(e) if super::errors::is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
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
        session: &SessionRef,
        token: &str,
        max: usize,
        now: i64,
    ) -> Result<SubscribeOutcome, StoreError> {
        let row = item(&SubscriptionRow {
            connection_id,
            sk: sub_sk(&session.id),
            session_id: &session.id,
            token,
            session_owner: &session.owner,
            incarnation: &session.incarnation,
            expires_at: expires_at(now),
            renewed_ms: now,
        })?;
        // The session must exist, be the owner's, and be this incarnation
        // when the row is written: a session deleted meanwhile gets no
        // subscription, in the same condition.
        let check = ConditionCheck::builder()
            .table_name(&self.tables.sessions)
            .key("id", s(session.id.as_str()))
            .condition_expression("#owner = :o AND incarnation = :inc")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(&session.owner))
            .expression_attribute_values(":inc", s(&session.incarnation))
            .build()
            .map_err(backend)?;
        let check = TransactWriteItem::builder().condition_check(check).build();
        // A new row: counted on the connection row in the same transaction,
        // so racing subscribes cannot pass the cap together.
        let put = Put::builder()
            .table_name(&self.tables.connections)
            .set_item(Some(row.clone()))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(backend)?;
        let count = Update::builder()
            .table_name(&self.tables.connections)
            .key("connectionId", s(connection_id))
            .key("sk", s(CONN_SK))
            .update_expression("SET subs = if_not_exists(subs, :zero) + :one")
            .condition_expression("#owner = :o AND (attribute_not_exists(subs) OR subs < :max)")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(&session.owner))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .build()
            .map_err(backend)?;
        let failed = self
            .transact(vec![
                TransactWriteItem::builder().put(put).build(),
                check.clone(),
                TransactWriteItem::builder().update(count).build(),
            ])
            .await?;
        let Some(failed) = failed else {
            // Row, check and counter, doubled; the index row.
            self.stats.estimate(3.0 * 2.0 + 1.0);
            return Ok(SubscribeOutcome::Subscribed);
        };
        if failed.get(1) == Some(&true) {
            return Ok(SubscribeOutcome::NotFound);
        }
        if failed.first() != Some(&true) {
            // The counter's condition: at the cap, or the connection is gone
            // (or another owner's).
            return Ok(match self.connection(connection_id).await? {
                Some(p) if p.owner == session.owner => SubscribeOutcome::TooMany,
                _ => SubscribeOutcome::NotFound,
            });
        }
        // Held already: renew the row (a new token), under the same check,
        // unless it was renewed a moment ago.
        let renew = Put::builder()
            .table_name(&self.tables.connections)
            .set_item(Some(row))
            .condition_expression(
                "attribute_exists(sk) AND (attribute_not_exists(renewedMs) OR renewedMs <= :cutoff)",
            )
            .expression_attribute_values(":cutoff", n(now - RESUBSCRIBE_EVERY_MS))
            .build()
            .map_err(backend)?;
        match self
            .transact(vec![TransactWriteItem::builder().put(renew).build(), check])
            .await?
        {
            None => {
                self.stats.estimate(2.0 * 2.0 + 1.0);
                Ok(SubscribeOutcome::Subscribed)
            }
            Some(failed) if failed.first() == Some(&true) && failed.get(1) != Some(&true) => {
                let sk = sub_sk(&session.id);
                let held = self
                    .get(
                        &self.tables.connections,
                        &[("connectionId", connection_id), ("sk", &sk)],
                        Some("sk"),
                    )
                    .await?;
                Ok(if held.is_some() {
                    SubscribeOutcome::TooSoon
                } else {
                    SubscribeOutcome::NotFound
                })
            }
            // Deleted meanwhile.
            Some(_) => Ok(SubscribeOutcome::NotFound),
        }
    }

    async fn unsubscribe(&self, connection_id: &str, session_id: &str) -> Result<(), StoreError> {
        self.drop_subscription(connection_id, session_id).await
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
                    // Rows from before owners were recorded match nothing.
                    owner: get_s(r, "sessionOwner").unwrap_or_default().to_string(),
                    incarnation: get_s(r, "incarnation").unwrap_or_default().to_string(),
                })
            })
            .collect()
    }
}
