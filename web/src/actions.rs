//! The controller: what a person can do, as methods of the app state. Each
//! action calls the API and applies the answer to the state machines; pages
//! render the state and call actions; the socket only carries frames. No
//! action makes up a server event to reuse a code path.

use crate::api::{self, ApiError};
use crate::state::{AppState, SocketCmd};
use confab_protocol::client::{CurrentSession, Effect};
use confab_protocol::model::{Block, Message, MessageStatus, PermissionMode, Role};
use confab_protocol::rest::{NewMessage, SendAnswer, SendMessageResponse};
use confab_protocol::{
    MessageId, MessageText, ProjectId, SessionId, SessionSummary, Timestamp, TurnId,
};
use dioxus::prelude::*;

impl AppState {
    /// Runs `f` on the current session if it is still `id`.
    pub fn with_current<T>(
        mut self,
        id: &SessionId,
        f: impl FnOnce(&mut CurrentSession) -> T,
    ) -> Option<T> {
        self.current
            .with_mut(|c| c.as_mut().filter(|c| *c.session_id() == *id).map(f))
    }

    /// A summary the server answered with: into the list and, when it is
    /// on screen, the current session (which may ask to catch up).
    fn took_summary(mut self, socket: Coroutine<SocketCmd>, s: SessionSummary) {
        let effect = self.with_current(&s.id, |c| c.apply_summary(&s));
        if let Some(Effect::Resubscribe { .. }) = effect {
            socket.send(SocketCmd::SubscribeCurrent);
        }
        self.sessions.write().upsert(s);
    }

    /// Shows session `id`: from the server, or ready for a first message
    /// when the server does not know it.
    pub fn open_session(mut self, socket: Coroutine<SocketCmd>, id: SessionId) {
        let same = self
            .current
            .peek()
            .as_ref()
            .is_some_and(|c| *c.session_id() == id);
        if same {
            return;
        }
        let leaving = self
            .current
            .peek()
            .as_ref()
            .filter(|c| c.summary().is_some())
            .map(|c| c.session_id().clone());
        if let Some(old) = leaving {
            socket.send(SocketCmd::Unsubscribe(old));
        }
        self.current
            .set(Some(CurrentSession::new_loading(id.clone())));
        spawn(async move {
            match api::session(&id).await {
                Ok(d) => {
                    self.with_current(&id, |c| c.apply_detail(&d));
                    self.sessions.write().upsert(d.session);
                    socket.send(SocketCmd::SubscribeCurrent);
                }
                Err(ApiError::NotFound) => {
                    self.with_current(&id, |c| c.not_found());
                }
                Err(e) => {
                    self.with_current(&id, |c| c.load_failed(e.to_string()));
                }
            }
        });
    }

    /// Sends what the user typed: creates the session with it when the
    /// server does not have the session yet. A text the server would refuse
    /// is refused here; `restore` gets the text back whenever it is not sent.
    pub fn send_message(
        mut self,
        socket: Coroutine<SocketCmd>,
        sid: SessionId,
        project: ProjectId,
        typed: String,
        mut restore: Signal<Option<String>>,
    ) {
        let text = match MessageText::parse(typed.as_str()) {
            Ok(t) => t,
            Err(e) => {
                self.notice.set(Some(format!("Not sent: {e}.")));
                restore.set(Some(typed));
                return;
            }
        };
        let message_id = MessageId::from(uuid::Uuid::now_v7());
        let mine = Message {
            id: message_id.clone(),
            session_id: sid.clone(),
            seq: 0,
            role: Role::User,
            // The server gives the turn; the nil id stands until it answers.
            turn_id: TurnId::from(uuid::Uuid::nil()),
            created_at: Timestamp::from_millis(js_sys::Date::now() as i64),
            content: vec![Block::text(text.as_str())],
            status: MessageStatus::Complete,
            error: None,
            usage: None,
        };
        let message = NewMessage {
            id: message_id.clone(),
            text,
        };
        // Not yet on the server (also after a failed first send): create it.
        let creating = self
            .current
            .peek()
            .as_ref()
            .is_some_and(|c| c.summary().is_none());
        let failed = move |e: ApiError| {
            self.with_current(&sid, |c| {
                c.send_failed(&message_id, e.to_string());
            });
            restore.set(Some(typed));
        };
        if creating {
            self.with_current(&mine.session_id, |c| c.begin_create(mine.clone()));
            let mode = self.start_mode();
            let sid = mine.session_id.clone();
            spawn(async move {
                match api::create(&sid, &project, mode, message).await {
                    Ok(r) => {
                        self.with_current(&sid, |c| c.apply_created(&r));
                        self.sessions.write().upsert(r.session);
                        socket.send(SocketCmd::SubscribeCurrent);
                    }
                    Err(e) => failed(e),
                }
            });
        } else {
            self.with_current(&mine.session_id, |c| c.add_pending(mine.clone()));
            let sid = mine.session_id.clone();
            spawn(async move {
                match api::send(&sid, message).await {
                    Ok(SendAnswer::Started(r)) => self.took_sent(r),
                    // A turn runs: it waits in the queue, shown there.
                    Ok(SendAnswer::Queued(r)) => {
                        self.with_current(&sid, |c| c.apply_queued(&r));
                    }
                    Err(e) => failed(e),
                }
            });
        }
    }

    fn took_sent(mut self, r: SendMessageResponse) {
        self.with_current(&r.session.id, |c| c.apply_sent(&r));
        self.sessions.write().upsert(r.session);
    }

    /// "Send now": starts queued message `mid` of `sid`, stopping the
    /// running turn first. Every tab, this one included, hears what
    /// changed as events (`session.queue`, `message.created`).
    pub fn start_queued(mut self, sid: SessionId, mid: MessageId) {
        spawn(async move {
            if let Err(e) = api::start_queued(&sid, &mid).await {
                self.notice.set(Some(e.to_string()));
            }
        });
    }

    /// Cancels queued message `mid` of `sid`; `then` runs once it is gone.
    pub fn cancel_queued(mut self, sid: SessionId, mid: MessageId, then: impl FnOnce() + 'static) {
        spawn(async move {
            match api::cancel_queued(&sid, &mid).await {
                Ok(()) => {
                    self.with_current(&sid, |c| c.apply_cancelled(&mid));
                    then();
                }
                Err(e) => self.notice.set(Some(e.to_string())),
            }
        });
    }

    /// Stops the running turn of `sid`.
    pub fn stop_turn(mut self, socket: Coroutine<SocketCmd>, sid: SessionId) {
        spawn(async move {
            match api::stop(&sid).await {
                Ok(s) => self.took_summary(socket, s),
                Err(e) => self.notice.set(Some(e.to_string())),
            }
        });
    }

    /// Answers a request the running turn waits on. Every tab hears the
    /// outcome as `request.resolved`; answered already elsewhere, the card
    /// goes when that event comes, so a 409 needs no word here.
    pub fn answer_request(
        mut self,
        sid: SessionId,
        request_id: confab_protocol::RequestId,
        answer: confab_protocol::rest::AnswerRequest,
    ) {
        spawn(async move {
            match api::answer_request(&sid, &request_id, &answer).await {
                Ok(_) => {}
                Err(ApiError::Refused {
                    code: Some(confab_protocol::rest::ErrorCode::Conflict),
                    ..
                }) => {}
                Err(e) => self.notice.set(Some(e.to_string())),
            }
        });
    }

    /// Changes the permission mode of `sid`.
    pub fn set_mode(mut self, socket: Coroutine<SocketCmd>, sid: SessionId, mode: PermissionMode) {
        spawn(async move {
            match api::update(&sid, None, Some(mode)).await {
                Ok(s) => self.took_summary(socket, s),
                Err(e) => self.notice.set(Some(e.to_string())),
            }
        });
    }

    /// Renames `id`.
    pub fn rename(mut self, socket: Coroutine<SocketCmd>, id: SessionId, title: String) {
        spawn(async move {
            match api::update(&id, Some(title), None).await {
                Ok(s) => self.took_summary(socket, s),
                Err(e) => self.notice.set(Some(e.to_string())),
            }
        });
    }

    /// Deletes `id`; `then` runs once it is gone (also when it already was).
    pub fn delete_session(mut self, id: SessionId, then: impl FnOnce() + 'static) {
        spawn(async move {
            match api::delete(&id).await {
                Ok(()) | Err(ApiError::NotFound) => {
                    let v = self
                        .sessions
                        .peek()
                        .get(&id)
                        .map_or(u64::MAX, |s| s.version + 1);
                    self.sessions.write().remove(&id, v);
                    then();
                }
                Err(e) => self.notice.set(Some(e.to_string())),
            }
        });
    }

    /// Loads the page of messages before the oldest one shown; true when it
    /// did.
    pub async fn load_older(self, sid: SessionId) -> bool {
        let oldest = self
            .current
            .peek()
            .as_ref()
            .filter(|c| c.has_older())
            .and_then(|c| c.oldest_seq());
        let Some(oldest) = oldest else {
            return false;
        };
        match api::older(&sid, oldest).await {
            Ok(page) => self.with_current(&sid, |c| c.apply_older(&page)).is_some(),
            Err(_) => false,
        }
    }

    /// Downloads session `id` as a file (`md` or `json`).
    pub fn export(mut self, id: SessionId, format: &'static str) {
        spawn(async move {
            if let Err(e) = api::export(&id, format).await {
                self.notice.set(Some(e.to_string()));
            }
        });
    }

    /// Fetches the list again (after a reconnect nothing missed stays
    /// missing), keeping any summary newer than the fetched one.
    pub fn refresh_list(self) {
        let mut sessions = self.sessions;
        spawn(async move {
            let Ok(page) = api::list_sessions().await else {
                return;
            };
            let fresh = sessions.peek().refreshed(page.sessions);
            sessions.set(fresh);
        });
    }
}
