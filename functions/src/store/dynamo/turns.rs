//! `TurnStore`: messages and the turn on the session row.

use super::billing::{item_size, session_size, units};
use super::codec::{Loaded, from_av, get_n, get_s, guard_sk, n, parse_session, s, to_av};
use super::errors::{Contention, backend, is_condition_failed};
use super::parts::INLINE_MAX;
use super::{BY_RUNNING, DynamoStore, MAX_ATTEMPTS, RUNNING};
use crate::domain::records::{
    self, ActiveTurn, MessageRange, NewTurn, Parked, QueueChange, QueueOutcome, Resolved,
    SessionRecord, StartOutcome, TurnEnd,
};
use crate::ports::{StoreError, TurnStore};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};
use confab_protocol::SessionId;
use confab_protocol::model::{LiveReply, Message, PendingRequest, Resolution, SessionSummary};

/// The waits of a queue change that lost a race on the session's row.
const QUEUE_BACKOFF: confab_protocol::backoff::Backoff = confab_protocol::backoff::Backoff {
    first: std::time::Duration::from_millis(10),
    max: std::time::Duration::from_millis(250),
    retries: 31,
    jitter: 1.0,
};

impl DynamoStore {
    /// Sends an `UpdateItem` of a few fields of the turn: true when it was
    /// written, false when its condition failed (not the turn any more, or
    /// claimed already).
    async fn update_turn_if(
        &self,
        req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<bool, StoreError> {
        match req
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                self.count("dynamodb:UpdateItem", out.consumed_capacity());
                self.stats.estimate(units(1024) * 2.0);
                Ok(true)
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// Reads the session (the owner's, when `owner` is given) and lets
    /// `change` edit its turn's requests and its summary; what `change`
    /// says changed is written back if no other write came in between, else
    /// all again. `absent` answers for a session or turn that is not there.
    async fn change_requests<T>(
        &self,
        session_id: &str,
        owner: Option<&str>,
        absent: impl Fn() -> T,
        mut change: impl FnMut(&mut ActiveTurn, &mut SessionSummary) -> (T, bool),
    ) -> Result<T, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded {
                mut record, rev, ..
            }) = self
                .load(session_id)
                .await?
                .filter(|l| owner.is_none_or(|o| l.record.owner == o))
            else {
                return Ok(absent());
            };
            let Some(turn) = record.turn.as_mut() else {
                return Ok(absent());
            };
            let (out, changed) = change(turn, &mut record.summary);
            if !changed
                || self
                    .put_requests(
                        session_id,
                        &turn.turn_id,
                        &turn.requests,
                        &record.summary,
                        rev,
                    )
                    .await?
            {
                return Ok(out);
            }
        }
        Err(backend(Contention))
    }

    /// Writes a turn's requests with the summary they imply, if the row is
    /// still at `rev` and runs `turn_id`; false when another write came
    /// first (read again and retry).
    async fn put_requests(
        &self,
        session_id: &str,
        turn_id: &str,
        requests: &[PendingRequest],
        summary: &SessionSummary,
        rev: i64,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .update_expression(
                "SET turn.requests = :reqs, summary = :summary, activityKey = :ak, titleLc = :tlc, rev = :next",
            )
            .condition_expression("rev = :rev AND turn.turnId = :t")
            .expression_attribute_values(":reqs", to_av(&requests)?)
            .expression_attribute_values(":rev", n(rev))
            .expression_attribute_values(":next", n(rev + 1))
            .expression_attribute_values(":t", s(turn_id))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        for (k, v) in Self::summary_values(summary)? {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(out) => {
                self.count("dynamodb:UpdateItem", out.consumed_capacity());
                self.stats
                    .estimate(2.0 * units(session_size(summary, None) + 1024));
                Ok(true)
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }
}

#[async_trait]
impl TurnStore for DynamoStore {
    async fn messages(
        &self,
        session_id: &str,
        range: MessageRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        match range {
            MessageRange::Latest { limit } => {
                self.read_messages(session_id, 0, u64::MAX, limit, false)
                    .await
            }
            MessageRange::Before { seq, limit } => {
                if seq <= 1 {
                    return Ok((Vec::new(), false));
                }
                self.read_messages(session_id, 0, seq - 1, limit, false)
                    .await
            }
            MessageRange::After { seq, limit } => {
                if seq == u64::MAX {
                    return Ok((Vec::new(), false));
                }
                self.read_messages(session_id, seq + 1, u64::MAX, limit, true)
                    .await
            }
        }
    }

    async fn find_message(
        &self,
        session_id: &str,
        message_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let guard = guard_sk(message_id);
        let Some(item) = self
            .get(
                &self.tables.messages,
                &[("sessionId", session_id), ("sk", &guard)],
                None,
            )
            .await?
        else {
            return Ok(None);
        };
        let seq = get_n(&item, "seq")?;
        self.message_at(session_id, seq as u64).await
    }

    async fn start_turn(
        &self,
        owner: &str,
        session_id: &str,
        turn: &NewTurn,
    ) -> Result<StartOutcome, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded {
                mut record, rev, ..
            }) = self
                .load(session_id)
                .await?
                .filter(|l| l.record.owner == owner)
            else {
                return Ok(StartOutcome::NotFound);
            };
            if record.turn.is_some() {
                if let Some(m) = self.find_message(session_id, &turn.message.id).await? {
                    return Ok(StartOutcome::Duplicate(m));
                }
                return Ok(StartOutcome::Running);
            }
            if !turn.take_from_queue(&mut record) {
                if let Some(m) = self.find_message(session_id, &turn.message.id).await? {
                    return Ok(StartOutcome::Duplicate(m));
                }
                return Ok(StartOutcome::NotQueued);
            }
            let seq = record.summary.message_count + 1;
            let message = turn.apply(&mut record.summary, seq);
            let sm = &record.summary;
            let mut values = vec![(":turn", to_av(&turn.turn)?), (":running", s(RUNNING))];
            let set = if turn.from_queue {
                values.push((":queue", to_av(&record.queue)?));
                ", turn = :turn, running = :running, queue = :queue"
            } else {
                ", turn = :turn, running = :running"
            };
            match self
                .append(
                    session_id,
                    sm,
                    rev,
                    set,
                    "attribute_not_exists(turn)",
                    values,
                    &message,
                )
                .await?
            {
                None => {
                    let sess = session_size(&record.summary, Some(&turn.turn));
                    self.stats.estimate(
                        2.0 * (units(sess) + self.message_units(&message)) + units(sess) + 1.0,
                    );
                    return Ok(StartOutcome::Started {
                        message,
                        session: record.summary,
                    });
                }
                Some(failed) => {
                    if failed.get(2) == Some(&true)
                        && let Some(m) = self.find_message(session_id, &turn.message.id).await?
                    {
                        return Ok(StartOutcome::Duplicate(m));
                    }
                }
            }
        }
        Err(backend(Contention))
    }

    async fn claim_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.update_turn_if(
            self.client
                .update_item()
                .table_name(&self.tables.sessions)
                .key("id", s(session_id))
                .update_expression("SET turn.claimed = :yes, turn.heartbeatMs = :now")
                .condition_expression(
                    "turn.turnId = :t AND (attribute_not_exists(turn.claimed) OR turn.claimed = :no)",
                )
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":t", s(turn_id))
        )
        .await
    }

    async fn park_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        parked: &Parked,
    ) -> Result<bool, StoreError> {
        self.update_turn_if(
            self.client
                .update_item()
                .table_name(&self.tables.sessions)
                .key("id", s(session_id))
                .update_expression("SET turn.parked = :p, turn.claimed = :no")
                .condition_expression("turn.turnId = :t")
                .expression_attribute_values(":p", to_av(parked)?)
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .expression_attribute_values(":t", s(turn_id)),
        )
        .await
    }

    async fn checkpoint(
        &self,
        session_id: &str,
        turn_id: &str,
        live: &LiveReply,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let content = serde_json::to_vec(&live.content).map_err(StoreError::corrupt)?;
        // A long reply's content goes to parts; the row keeps the rest.
        let (live_av, parts) = if content.len() <= INLINE_MAX {
            (to_av(live)?, None)
        } else {
            let mut head = live.clone();
            head.content = Vec::new();
            let parts = self.put_live_parts(session_id, turn_id, &content).await?;
            (to_av(&head)?, Some(to_av(&parts)?))
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .condition_expression("turn.turnId = :t")
            .expression_attribute_values(":live", live_av)
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":t", s(turn_id))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        req = match parts {
            Some(p) => req
                .update_expression(
                    "SET turn.live = :live, turn.heartbeatMs = :now, liveParts = :parts",
                )
                .expression_attribute_values(":parts", p),
            None => req.update_expression(
                "SET turn.live = :live, turn.heartbeatMs = :now REMOVE liveParts",
            ),
        };
        match req.send().await {
            Ok(out) => {
                self.count("dynamodb:UpdateItem", out.consumed_capacity());
                // The row's other attributes (summary, keys) are about 1 KiB.
                self.stats
                    .estimate(units(content.len().min(INLINE_MAX) + 1024));
                Ok(true)
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn active_turn(
        &self,
        session_id: &str,
        turn_id: &str,
    ) -> Result<Option<ActiveTurn>, StoreError> {
        let item = self
            .get(&self.tables.sessions, &[("id", session_id)], Some("turn"))
            .await?;
        let Some(t) = item.as_ref().and_then(|i| i.get("turn")) else {
            return Ok(None);
        };
        let t: ActiveTurn = from_av(t)?;
        Ok((t.turn_id == turn_id).then_some(t))
    }

    async fn request_stop(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match self
            .client
            .update_item()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .update_expression("SET turn.stopRequested = :yes")
            .condition_expression("#owner = :o AND attribute_exists(turn.turnId)")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .return_values(ReturnValue::AllNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                self.count("dynamodb:UpdateItem", out.consumed_capacity());
                if let Some(a) = out.attributes() {
                    self.stats.estimate(units(item_size(a)));
                }
                out.attributes()
                    .map(|a| parse_session(a).map(|l| l.record))
                    .transpose()
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(self
                    .load(session_id)
                    .await?
                    .map(|l| l.record)
                    .filter(|r| r.owner == owner))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn add_request(
        &self,
        session_id: &str,
        turn_id: &str,
        request: &PendingRequest,
        now_ms: i64,
    ) -> Result<Option<SessionSummary>, StoreError> {
        self.change_requests(
            session_id,
            None,
            || None,
            |turn, summary| {
                if turn.turn_id != turn_id {
                    return (None, false);
                }
                records::ask(turn, summary, request, now_ms);
                (Some(summary.clone()), true)
            },
        )
        .await
    }

    async fn answer_request(
        &self,
        owner: &str,
        session_id: &str,
        request_id: &str,
        resolution: &Resolution,
    ) -> Result<Resolved, StoreError> {
        // The conditional write is what makes an answer the first.
        self.change_requests(
            session_id,
            Some(owner),
            || Resolved::NotFound,
            |turn, summary| {
                let out = records::answer(turn, summary, request_id, resolution);
                let changed = matches!(out, Resolved::Now(..));
                (out, changed)
            },
        )
        .await
    }

    async fn finish_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<Option<(Message, SessionSummary)>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded {
                mut record,
                rev,
                live_parts: loaded_parts,
            }) = self.load(session_id).await?
            else {
                return Ok(None);
            };
            if record.turn.as_ref().is_none_or(|t| t.turn_id != turn_id) {
                return Ok(None);
            }
            let seq = record.summary.message_count + 1;
            let reply = end.apply(&mut record.summary, seq);
            let sm = &record.summary;
            if self
                .append(
                    session_id,
                    sm,
                    rev,
                    " REMOVE turn, running, liveParts",
                    "turn.turnId = :t",
                    vec![(":t", s(turn_id))],
                    &reply,
                )
                .await?
                .is_none()
            {
                if let Some(p) = &loaded_parts {
                    self.drop_live_parts(session_id, &p.turn_id).await;
                }
                // Billed at the larger of before (with the live reply) and after.
                let before = session_size(&record.summary, record.turn.as_ref());
                let after = session_size(&record.summary, None);
                self.stats.estimate(
                    2.0 * (units(before.max(after)) + self.message_units(&reply))
                        + units(after)
                        + 1.0,
                );
                return Ok(Some((reply, record.summary)));
            }
        }
        Err(backend(Contention))
    }

    async fn change_queue(
        &self,
        owner: &str,
        session_id: &str,
        change: &QueueChange,
    ) -> Result<QueueOutcome, StoreError> {
        // Many tabs queueing at once all read and write the one row: each
        // lost race waits a little, with jitter, so that they spread out.
        for attempt in 0..=QUEUE_BACKOFF.retries {
            if attempt > 0
                && let Some(wait) = QUEUE_BACKOFF.delay(attempt, rand::random())
            {
                tokio::time::sleep(wait).await;
            }
            let Some(Loaded {
                mut record, rev, ..
            }) = self
                .load(session_id)
                .await?
                .filter(|l| l.record.owner == owner)
            else {
                return Ok(QueueOutcome::NotFound);
            };
            let (out, changed) = change.apply(&mut record);
            if !changed {
                return Ok(out);
            }
            // `Next` also asks the running turn to stop.
            let stop = record.turn.as_ref().is_some_and(|t| t.stop_requested);
            let mut req = self
                .client
                .update_item()
                .table_name(&self.tables.sessions)
                .key("id", s(session_id))
                .update_expression(if stop {
                    "SET queue = :queue, rev = :next, turn.stopRequested = :yes"
                } else {
                    "SET queue = :queue, rev = :next"
                })
                .condition_expression("rev = :rev")
                .expression_attribute_values(":queue", to_av(&record.queue)?)
                .expression_attribute_values(":rev", n(rev))
                .expression_attribute_values(":next", n(rev + 1))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            if stop {
                req = req.expression_attribute_values(":yes", AttributeValue::Bool(true));
            }
            match req.send().await {
                Ok(o) => {
                    self.count("dynamodb:UpdateItem", o.consumed_capacity());
                    return Ok(out);
                }
                Err(e) if is_condition_failed(&e) => {
                    self.stats.request("dynamodb:UpdateItem");
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend(Contention))
    }

    async fn running_turns(&self) -> Result<Vec<(String, SessionId, ActiveTurn)>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.sessions,
                Some(BY_RUNNING),
                "running",
                RUNNING,
                None,
            )
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let id = get_s(&r, "id")?;
            // The index lags; the row itself says whether the turn runs.
            if let Some(l) = self.load_full(id).await?
                && let Some(t) = l.record.turn
            {
                out.push((l.record.owner, l.record.summary.id, t));
            }
        }
        Ok(out)
    }
}
