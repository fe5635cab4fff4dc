//! The worker: runs one turn per invocation, or, on a schedule, closes the
//! turns whose worker died.

use crate::domain::runner::{RunnerConfig, run_turn};
use crate::domain::sessions::sweep_stale;
use crate::error::ServiceError;
use crate::ports::{Agent, Dispatch, Push, Store, TurnJob};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;

/// What the worker is invoked with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkerEvent {
    /// From `LambdaDispatch`: run this turn.
    Turn(TurnJob),
    /// From an EventBridge schedule: sweep.
    Scheduled(ScheduledEvent),
}

/// The fields of an EventBridge scheduled event the worker reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledEvent {
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
}

/// The worker ends a turn as interrupted (its reply so far kept) this long
/// before Lambda's deadline, rather than be killed mid-write.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

pub struct Worker<'a> {
    pub store: &'a dyn Store,
    pub push: &'a dyn Push,
    pub agent: &'a dyn Agent,
    pub runner: &'a RunnerConfig,
    /// Hands on the turn of a queued message that starts when this
    /// invocation's turn ends, so that it gets an invocation (and its time)
    /// of its own; None, or a failed hand-off, runs it in this invocation.
    pub next: Option<&'a dyn Dispatch>,
}

impl Worker<'_> {
    /// Handles one event; `remaining` is the invocation's time left.
    pub async fn handle(
        &self,
        event: WorkerEvent,
        remaining: Option<Duration>,
    ) -> Result<(), ServiceError> {
        match event {
            WorkerEvent::Turn(job) => {
                let (tx, rx) = watch::channel(false);
                let deadline = async move {
                    match remaining {
                        Some(r) => tokio::time::sleep(r.saturating_sub(DEADLINE_MARGIN)).await,
                        None => std::future::pending::<()>().await,
                    }
                    let _ = tx.send(true);
                    std::future::pending::<()>().await
                };
                // A request to the person waits at most until just before the
                // invocation's end: it is then denied with a message the
                // agent sees, rather than the turn being cut off with it.
                // (A parked request waits in the store, for as long as
                // requests may.)
                let runner = match remaining {
                    Some(r) => RunnerConfig {
                        wait_limit: self
                            .runner
                            .wait_limit
                            .min(r.saturating_sub(DEADLINE_MARGIN * 2)),
                        ..self.runner.clone()
                    },
                    None => self.runner.clone(),
                };
                let turns = async move {
                    let mut job = job;
                    loop {
                        let Some(next) =
                            run_turn(self.store, self.push, self.agent, &runner, &job, rx.clone())
                                .await?
                        else {
                            return Ok(());
                        };
                        if let Some(d) = self.next {
                            match d.dispatch(next.clone()).await {
                                Ok(()) => return Ok(()),
                                Err(e) => tracing::warn!(
                                    error = &e as &dyn std::error::Error,
                                    session = %next.session_id,
                                    "handing on the next queued turn failed; running it here"
                                ),
                            }
                        }
                        job = next;
                    }
                };
                tokio::select! {
                    r = turns => r,
                    _ = deadline => unreachable!("the deadline future never ends"),
                }
            }
            WorkerEvent::Scheduled(ev) => {
                let closed = sweep_stale(self.store, self.push, self.next).await?;
                tracing::info!(source = %ev.source, closed, "swept stale turns");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_apart() {
        let sid = "0192f0c1-7e3a-7cc0-8a8e-000000000001";
        let tid = "0192f0c1-7e3a-7cc0-8a8e-000000000003";
        let turn: WorkerEvent = serde_json::from_str(&format!(
            r#"{{"owner":"o","sessionId":"{sid}","turnId":"{tid}"}}"#
        ))
        .unwrap();
        assert!(matches!(turn, WorkerEvent::Turn(j) if j.session_id == sid));
        // A job with a malformed id is not a job.
        assert!(
            serde_json::from_str::<WorkerEvent>(r#"{"owner":"o","sessionId":"../x","turnId":"t"}"#)
                .is_err()
        );
        let sched: WorkerEvent = serde_json::from_str(
            r#"{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.events","account":"1","time":"2026-11-21T00:00:00Z","region":"us-east-1","resources":[],"detail":{}}"#,
        )
        .unwrap();
        assert!(matches!(sched, WorkerEvent::Scheduled(e) if e.source == "aws.events"));
        assert!(serde_json::from_str::<WorkerEvent>(r#"{"hello":1}"#).is_err());
    }
}
