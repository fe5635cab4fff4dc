//! `SessionStore` on the sessions table.

use super::billing::{session_size, units};
use super::codec::{Loaded, SessionRow, activity_key, corrupt, from_av, get_id, get_s, item, n, s};
use super::errors::{Contention, backend, is_condition_failed};
use super::{BY_OWNER, BY_SESSION, DynamoStore, Item, MAX_ATTEMPTS, RUNNING};
use crate::domain::records::{
    CreateOutcome, ListCursor, NewSession, SessionPatch, SessionQuery, SessionRecord,
};
use crate::ports::{SessionStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, ReturnConsumedCapacity, TransactWriteItem};
use confab_protocol::Timestamp;
use confab_protocol::model::{ProjectSummary, SessionSummary};
use std::collections::HashMap;

/// A filtered list (`q`, `projectId`) reads at most about this many of the
/// owner's sessions per request (whole pages of 100), then answers with what
/// matched so far, maybe nothing, and a cursor to read on from: a search
/// costs a bounded read, however many sessions its owner has.
pub const FILTER_SCAN_MAX: usize = 500;

/// The list cursor that resumes after the index key `k`.
fn cursor_at(k: &Item) -> Result<ListCursor, StoreError> {
    let ak = get_s(k, "activityKey")?;
    let (ms, id) = ak
        .split_once('#')
        .ok_or_else(|| corrupt("bad activityKey".into()))?;
    Ok(ListCursor {
        activity_ms: ms.parse().map_err(|_| corrupt("bad activityKey".into()))?,
        id: id.parse().map_err(StoreError::corrupt)?,
    })
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn create_session(&self, new: &NewSession) -> Result<CreateOutcome, StoreError> {
        let sm = &new.summary;
        let mut first = new.first.clone();
        first.seq = 1;
        for _ in 0..MAX_ATTEMPTS {
            let row = SessionRow {
                id: sm.id.clone(),
                owner: new.owner.clone(),
                incarnation: new.incarnation.clone(),
                project_id: sm.project_id.clone(),
                activity_key: activity_key(sm.last_message_at.millis(), &sm.id),
                title_lc: sm.title.to_lowercase(),
                first_lc: first.plain_text().to_lowercase(),
                summary: sm.clone(),
                turn: Some(new.turn.clone()),
                running: Some(RUNNING.into()),
                rev: 0,
                live_parts: None,
                queue: None,
            };
            let session = Put::builder()
                .table_name(&self.tables.sessions)
                .set_item(Some(item(&row)?))
                .condition_expression("attribute_not_exists(id)")
                .build()
                .map_err(backend)?;
            let [row, guard] = self.message_puts(&first).await?;
            match self
                .transact(vec![
                    TransactWriteItem::builder().put(session).build(),
                    row,
                    guard,
                ])
                .await?
            {
                None => {
                    let sess = session_size(sm, Some(&new.turn));
                    // Transactions bill twice; the row also lands in byOwner
                    // and byRunning.
                    self.stats.estimate(
                        2.0 * (units(sess) + self.message_units(&first)) + units(sess) + 1.0,
                    );
                    return Ok(CreateOutcome::Created);
                }
                Some(_) => {
                    if let Some(l) = self.load(&sm.id).await? {
                        return Ok(CreateOutcome::Exists(l.record));
                    }
                    // Deleted in between (its messages going): try again.
                }
            }
        }
        Err(backend(Contention))
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.load_full(id).await?.map(|l| l.record))
    }

    async fn list_sessions(
        &self,
        owner: &str,
        q: &SessionQuery,
    ) -> Result<(Vec<SessionSummary>, Option<ListCursor>), StoreError> {
        let mut filters = Vec::new();
        let mut values: Item = HashMap::new();
        values.insert(":o".into(), s(owner));
        let mut key = "#owner = :o".to_string();
        if let Some(c) = &q.after {
            key.push_str(" AND activityKey < :c");
            values.insert(":c".into(), s(activity_key(c.activity_ms, &c.id)));
        }
        if let Some(p) = &q.project_id {
            filters.push("projectId = :p".to_string());
            values.insert(":p".into(), s(p));
        }
        if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
            filters.push("(contains(titleLc, :t) OR contains(firstLc, :t))".to_string());
            values.insert(":t".into(), s(t));
        }
        let want = q.limit + 1;
        let mut out: Vec<SessionSummary> = Vec::new();
        let mut start: Option<Item> = None;
        let mut scanned = 0;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.tables.sessions)
                .index_name(BY_OWNER)
                .key_condition_expression(&key)
                .expression_attribute_names("#owner", "owner")
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .projection_expression("summary")
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            if filters.is_empty() {
                req = req.limit((want - out.len()) as i32);
            } else {
                req = req
                    .filter_expression(filters.join(" AND "))
                    .limit(want.max(100) as i32);
            }
            let page = req.send().await.map_err(backend)?;
            self.count("dynamodb:Query", page.consumed_capacity());
            scanned += page.scanned_count().max(0) as usize;
            for item in page.items() {
                if out.len() < want {
                    out.push(from_av(
                        item.get("summary")
                            .ok_or_else(|| corrupt("index row without summary".into()))?,
                    )?);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() && out.len() < want => {
                    if !filters.is_empty() && scanned >= FILTER_SCAN_MAX {
                        // Bounded: a short page, and where the next one
                        // starts reading.
                        return Ok((out, Some(cursor_at(k)?)));
                    }
                    start = Some(k.clone())
                }
                _ => break,
            }
        }
        let next = ListCursor::page(&mut out, q.limit);
        Ok((out, next))
    }

    async fn list_projects(&self, owner: &str) -> Result<Vec<ProjectSummary>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.sessions,
                Some(BY_OWNER),
                "owner",
                owner,
                Some("id, projectId, activityKey"),
            )
            .await?;
        // Rows come newest first, so a project's first row is its latest.
        let mut projects: Vec<ProjectSummary> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for r in &rows {
            let project = get_s(r, "projectId")?;
            match at.get(project) {
                Some(&i) => projects[i].session_count += 1,
                None => {
                    let ak = get_s(r, "activityKey")?;
                    let ms = ak
                        .split('#')
                        .next()
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| corrupt("bad activityKey".into()))?;
                    at.insert(project.to_string(), projects.len());
                    projects.push(ProjectSummary {
                        id: get_id(r, "projectId")?,
                        last_session_id: get_id(r, "id")?,
                        last_activity_at: Timestamp::from_millis(ms),
                        session_count: 1,
                    });
                }
            }
        }
        Ok(projects)
    }

    async fn patch_session(
        &self,
        owner: &str,
        id: &str,
        patch: &SessionPatch,
    ) -> Result<Option<SessionSummary>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded {
                mut record, rev, ..
            }) = self.load(id).await?.filter(|l| l.record.owner == owner)
            else {
                return Ok(None);
            };
            let sm = &mut record.summary;
            patch.apply(sm);
            let mut req = self
                .client
                .update_item()
                .table_name(&self.tables.sessions)
                .key("id", s(id))
                .update_expression(
                    "SET summary = :summary, activityKey = :ak, titleLc = :tlc, rev = :next",
                )
                .condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(rev))
                .expression_attribute_values(":next", n(rev + 1))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            for (k, v) in Self::summary_values(sm)? {
                req = req.expression_attribute_values(k, v);
            }
            match req.send().await {
                Ok(out) => {
                    self.count("dynamodb:UpdateItem", out.consumed_capacity());
                    let size = session_size(&record.summary, record.turn.as_ref());
                    self.stats.estimate(units(size) + units(size));
                    return Ok(Some(record.summary));
                }
                Err(e) if is_condition_failed(&e) => {
                    self.stats.request("dynamodb:UpdateItem");
                    continue;
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend(Contention))
    }

    async fn delete_session(&self, owner: &str, id: &str) -> Result<Option<u64>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded { record, rev, .. }) =
                self.load(id).await?.filter(|l| l.record.owner == owner)
            else {
                return Ok(None);
            };
            // Messages first: the session row goes last, so a failure half
            // way leaves a session that can be deleted again, never orphans
            // that a new session with this id would inherit.
            let keys = self
                .query_eq(
                    &self.tables.messages,
                    None,
                    "sessionId",
                    id,
                    Some("sessionId, sk"),
                )
                .await?;
            self.delete_keys(&self.tables.messages, keys).await?;
            let subs = self
                .query_eq(
                    &self.tables.connections,
                    Some(BY_SESSION),
                    "sessionId",
                    id,
                    None,
                )
                .await?;
            // Each off its connection's count too. A row the index has not
            // shown yet stays behind; it names this incarnation, which no
            // later session under this id has, so fan-out skips it.
            for r in &subs {
                self.drop_subscription(get_s(r, "connectionId")?, id)
                    .await?;
            }
            match self
                .client
                .delete_item()
                .table_name(&self.tables.sessions)
                .key("id", s(id))
                .condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(rev))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
            {
                Ok(out) => {
                    self.count("dynamodb:DeleteItem", out.consumed_capacity());
                    return Ok(Some(record.summary.version + 1));
                }
                // A message arrived meanwhile: delete again.
                Err(e) if is_condition_failed(&e) => {
                    self.stats.request("dynamodb:DeleteItem");
                    continue;
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend(Contention))
    }
}
