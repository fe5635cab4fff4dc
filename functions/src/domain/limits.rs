//! What one owner may use, counted in the store so that the limits hold
//! across every process that shares it (every warm Lambda instance, two
//! gateways on one table).
//!
//! - Creations and sends are counted in fixed windows of one minute: a
//!   counter per owner and window, forgotten after it (a TTL on AWS).
//! - Turns at once are a set per owner of the sessions whose turn runs. A
//!   turn joins it before it is stored and leaves it when it ends. A member
//!   left behind (a process killed between the two) is found and taken out
//!   when the set is full, so the set cannot lock its owner out.
//! - Tokens are counted per UTC day when a turn ends; a new turn is refused
//!   once the day's count has reached the budget. A turn that starts under
//!   the budget finishes.

use crate::clock::now_ms;
use crate::error::ServiceError;
use crate::ports::{Held, Limits, Ports, Store};
use confab_protocol::SessionId;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// The set of sessions whose turn runs.
const TURNS: &str = "turns";
/// How long the set of running turns is kept after its last change.
const TURNS_KEPT_MS: i64 = DAY_MS;
/// What a refusal for turns at once suggests waiting.
const TURNS_RETRY_SECS: u64 = 5;

/// Counts one session creation by `owner`, or refuses it.
pub async fn take_creation(ports: &Ports, owner: &str) -> Result<(), ServiceError> {
    per_minute(
        &*ports.store,
        owner,
        "creates",
        ports.limits.creates_per_minute,
        "too many new sessions",
        "CONFAB_CREATE_RATE",
    )
    .await
}

/// Counts one message sent to an existing session by `owner`, or refuses it.
pub async fn take_send(ports: &Ports, owner: &str) -> Result<(), ServiceError> {
    per_minute(
        &*ports.store,
        owner,
        "sends",
        ports.limits.sends_per_minute,
        "too many messages",
        "CONFAB_SEND_RATE",
    )
    .await
}

async fn per_minute(
    store: &dyn Store,
    owner: &str,
    kind: &str,
    max: u32,
    what: &str,
    setting: &str,
) -> Result<(), ServiceError> {
    let now = now_ms();
    let window = now.div_euclid(MINUTE_MS);
    let ends = (window + 1) * MINUTE_MS;
    let key = format!("{kind}#{window}");
    if store
        .count(owner, &key, 1, u64::from(max), ends + MINUTE_MS)
        .await?
    {
        return Ok(());
    }
    let retry_after_secs = secs_until(ends, now);
    Err(ServiceError::RateLimited {
        message: format!(
            "{what}: at most {max} a minute ({setting}); try again in {retry_after_secs} s"
        ),
        retry_after_secs,
    })
}

/// Whole seconds from `now` to `end` (ms), at least one: a `Retry-After`.
fn secs_until(end: i64, now: i64) -> u64 {
    ((end - now + 999) / 1000).max(1) as u64
}

/// A place among the owner's running turns, taken for a turn about to be
/// stored. Give it back with [`TurnPlace::unused`] if the turn is not.
#[must_use]
pub struct TurnPlace {
    owner: String,
    session_id: SessionId,
    /// False when the session held a place already (its previous turn's).
    added: bool,
}

impl TurnPlace {
    /// Gives the place back: the turn it was taken for was not stored.
    pub async fn unused(self, store: &dyn Store) {
        if self.added {
            release(store, &self.owner, &self.session_id).await;
        }
    }
}

/// Takes a place for a turn of `session_id` among the owner's running
/// turns, or refuses it when the owner has as many running as they may.
pub async fn take_turn(
    store: &dyn Store,
    limits: &Limits,
    owner: &str,
    session_id: &SessionId,
) -> Result<TurnPlace, ServiceError> {
    let max = limits.turns_per_owner;
    let place = |added| TurnPlace {
        owner: owner.to_string(),
        session_id: session_id.clone(),
        added,
    };
    let expires = now_ms() + TURNS_KEPT_MS;
    match store.hold(owner, TURNS, session_id, max, expires).await? {
        Held::Added => return Ok(place(true)),
        Held::Already => return Ok(place(false)),
        Held::Full(members) => {
            // Take out the places of turns that are not running any more
            // (their end was not counted), then try once more.
            let mut freed = false;
            for member in members {
                let running = store
                    .get_session(&member)
                    .await?
                    .is_some_and(|r| r.owner == owner && r.turn.is_some());
                if !running {
                    store.release(owner, TURNS, &member).await?;
                    freed = true;
                }
            }
            if freed {
                match store.hold(owner, TURNS, session_id, max, expires).await? {
                    Held::Added => return Ok(place(true)),
                    Held::Already => return Ok(place(false)),
                    Held::Full(_) => {}
                }
            }
        }
    }
    Err(ServiceError::RateLimited {
        message: format!(
            "you have {max} replies running, as many as you may at once (CONFAB_MAX_TURNS_PER_OWNER): stop one or wait for one to end"
        ),
        retry_after_secs: TURNS_RETRY_SECS,
    })
}

/// Refuses a new turn once the owner's tokens today have reached the daily
/// budget, if there is one.
pub async fn check_tokens(
    store: &dyn Store,
    limits: &Limits,
    owner: &str,
) -> Result<(), ServiceError> {
    let Some(budget) = limits.daily_tokens else {
        return Ok(());
    };
    let now = now_ms();
    let day = now.div_euclid(DAY_MS);
    let used = store.counted(owner, &format!("tokens#{day}"), now).await?;
    if used < budget {
        return Ok(());
    }
    let retry_after_secs = secs_until((day + 1) * DAY_MS, now);
    Err(ServiceError::RateLimited {
        message: format!(
            "you have used {used} tokens today, your daily budget of {budget} (CONFAB_DAILY_TOKENS); it renews at midnight UTC"
        ),
        retry_after_secs,
    })
}

/// What a turn's end gives back and counts: its place among the owner's
/// running turns, and the tokens it used. Never fails the end of a turn: a
/// place left behind is found when the set is full.
pub async fn turn_ended(store: &dyn Store, owner: &str, session_id: &SessionId, tokens: u64) {
    release(store, owner, session_id).await;
    if tokens > 0 {
        let now = now_ms();
        let day = now.div_euclid(DAY_MS);
        if let Err(e) = store
            .count(
                owner,
                &format!("tokens#{day}"),
                tokens,
                u64::MAX,
                (day + 2) * DAY_MS,
            )
            .await
        {
            tracing::warn!(error = &e as &dyn std::error::Error, session = %session_id, "counting a turn's tokens failed");
        }
    }
}

async fn release(store: &dyn Store, owner: &str, session_id: &SessionId) {
    if let Err(e) = store.release(owner, TURNS, session_id).await {
        tracing::warn!(error = &e as &dyn std::error::Error, session = %session_id, "giving back a turn's place failed; it is taken out when the owner's set is full");
    }
}
