//! A real store with faults on demand: every call goes to the store inside,
//! except the chosen ones, which fail as a backend failure would (a
//! throttled or refused write, a lost connection).

use async_trait::async_trait;
use confab_functions::domain::records::{
    ActiveTurn, CreateOutcome, ListCursor, MessageRange, NewSession, NewTurn, Principal,
    SessionPatch, SessionQuery, SessionRecord, SessionRef, StartOutcome, SubscribeOutcome,
    Subscriber, TurnEnd,
};
use confab_functions::ports::{
    ConnectionStore, Held, LimitStore, SessionStore, Store, StoreError, TurnStore,
};
use confab_protocol::SessionId;
use confab_protocol::model::{LiveReply, Message, ProjectSummary, SessionSummary};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, thiserror::Error)]
#[error("injected fault")]
pub struct Injected;

/// `inner`, except that the next `finish_turns` calls of `finish_turn` fail.
pub struct Faulty {
    pub inner: Arc<dyn Store>,
    pub finish_turns: AtomicUsize,
}

impl Faulty {
    pub fn failing_finish(inner: Arc<dyn Store>, times: usize) -> Faulty {
        Faulty {
            inner,
            finish_turns: AtomicUsize::new(times),
        }
    }
}

#[async_trait]
impl SessionStore for Faulty {
    async fn create_session(&self, new: &NewSession) -> Result<CreateOutcome, StoreError> {
        self.inner.create_session(new).await
    }
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.get_session(id).await
    }
    async fn list_sessions(
        &self,
        owner: &str,
        query: &SessionQuery,
    ) -> Result<(Vec<SessionSummary>, Option<ListCursor>), StoreError> {
        self.inner.list_sessions(owner, query).await
    }
    async fn list_projects(&self, owner: &str) -> Result<Vec<ProjectSummary>, StoreError> {
        self.inner.list_projects(owner).await
    }
    async fn patch_session(
        &self,
        owner: &str,
        id: &str,
        patch: &SessionPatch,
    ) -> Result<Option<SessionSummary>, StoreError> {
        self.inner.patch_session(owner, id, patch).await
    }
    async fn delete_session(&self, owner: &str, id: &str) -> Result<Option<u64>, StoreError> {
        self.inner.delete_session(owner, id).await
    }
}

#[async_trait]
impl TurnStore for Faulty {
    async fn messages(
        &self,
        session_id: &str,
        range: MessageRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        self.inner.messages(session_id, range).await
    }
    async fn find_message(
        &self,
        session_id: &str,
        message_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        self.inner.find_message(session_id, message_id).await
    }
    async fn start_turn(
        &self,
        owner: &str,
        session_id: &str,
        turn: &NewTurn,
    ) -> Result<StartOutcome, StoreError> {
        self.inner.start_turn(owner, session_id, turn).await
    }
    async fn claim_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.inner.claim_turn(session_id, turn_id, now_ms).await
    }
    async fn checkpoint(
        &self,
        session_id: &str,
        turn_id: &str,
        live: &LiveReply,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .checkpoint(session_id, turn_id, live, now_ms)
            .await
    }
    async fn active_turn(
        &self,
        session_id: &str,
        turn_id: &str,
    ) -> Result<Option<ActiveTurn>, StoreError> {
        self.inner.active_turn(session_id, turn_id).await
    }
    async fn request_stop(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.request_stop(owner, session_id).await
    }
    async fn add_request(
        &self,
        session_id: &str,
        turn_id: &str,
        request: &confab_protocol::model::PendingRequest,
        now_ms: i64,
    ) -> Result<Option<SessionSummary>, StoreError> {
        self.inner
            .add_request(session_id, turn_id, request, now_ms)
            .await
    }
    async fn answer_request(
        &self,
        owner: &str,
        session_id: &str,
        request_id: &str,
        resolution: &confab_protocol::model::Resolution,
    ) -> Result<confab_functions::domain::records::Resolved, StoreError> {
        self.inner
            .answer_request(owner, session_id, request_id, resolution)
            .await
    }
    async fn park_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        parked: &confab_functions::domain::records::Parked,
    ) -> Result<bool, StoreError> {
        self.inner.park_turn(session_id, turn_id, parked).await
    }
    async fn change_queue(
        &self,
        owner: &str,
        session_id: &str,
        change: &confab_functions::domain::records::QueueChange,
    ) -> Result<confab_functions::domain::records::QueueOutcome, StoreError> {
        self.inner.change_queue(owner, session_id, change).await
    }
    async fn finish_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<Option<(Message, SessionSummary)>, StoreError> {
        let fail = self
            .finish_turns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(StoreError::backend(Injected));
        }
        self.inner.finish_turn(session_id, turn_id, end).await
    }
    async fn running_turns(&self) -> Result<Vec<(String, SessionId, ActiveTurn)>, StoreError> {
        self.inner.running_turns().await
    }
}

#[async_trait]
impl ConnectionStore for Faulty {
    async fn put_connection(
        &self,
        id: &str,
        who: &Principal,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.put_connection(id, who, now_ms).await
    }
    async fn connection(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        self.inner.connection(id).await
    }
    async fn renew_connection(&self, id: &str, who: &Principal) -> Result<bool, StoreError> {
        self.inner.renew_connection(id, who).await
    }
    async fn put_ticket(
        &self,
        ticket: &str,
        who: &Principal,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.put_ticket(ticket, who, expires_ms).await
    }
    async fn take_ticket(
        &self,
        ticket: &str,
        now_ms: i64,
    ) -> Result<Option<Principal>, StoreError> {
        self.inner.take_ticket(ticket, now_ms).await
    }
    async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        self.inner.delete_connection(id).await
    }
    async fn owner_connections(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        self.inner.owner_connections(owner).await
    }
    async fn subscribe(
        &self,
        connection_id: &str,
        session: &SessionRef,
        token: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<SubscribeOutcome, StoreError> {
        self.inner
            .subscribe(connection_id, session, token, max, now_ms)
            .await
    }
    async fn unsubscribe(&self, connection_id: &str, session_id: &str) -> Result<(), StoreError> {
        self.inner.unsubscribe(connection_id, session_id).await
    }
    async fn subscribers(&self, session_id: &str) -> Result<Vec<Subscriber>, StoreError> {
        self.inner.subscribers(session_id).await
    }
}

#[async_trait]
impl LimitStore for Faulty {
    async fn count(
        &self,
        owner: &str,
        key: &str,
        amount: u64,
        max: u64,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        self.inner.count(owner, key, amount, max, expires_ms).await
    }
    async fn counted(&self, owner: &str, key: &str, now_ms: i64) -> Result<u64, StoreError> {
        self.inner.counted(owner, key, now_ms).await
    }
    async fn hold(
        &self,
        owner: &str,
        key: &str,
        member: &str,
        max: u32,
        expires_ms: i64,
    ) -> Result<Held, StoreError> {
        self.inner.hold(owner, key, member, max, expires_ms).await
    }
    async fn release(&self, owner: &str, key: &str, member: &str) -> Result<(), StoreError> {
        self.inner.release(owner, key, member).await
    }
}
