//! Turns run as tasks in this process.

use async_trait::async_trait;
use confab_functions::domain::runner::{RunnerConfig, run_turn};
use confab_functions::ports::{Agent, Dispatch, DispatchError, Push, Store, TurnJob};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct LocalDispatch {
    store: Arc<dyn Store>,
    push: Arc<dyn Push>,
    agent: Arc<dyn Agent>,
    cfg: RunnerConfig,
    tasks: Mutex<JoinSet<()>>,
    shutdown: watch::Sender<bool>,
    /// Turns that may run at once (`CONFAB_MAX_TURNS`).
    max_turns: usize,
}

impl LocalDispatch {
    pub fn new(
        store: Arc<dyn Store>,
        push: Arc<dyn Push>,
        agent: Arc<dyn Agent>,
        cfg: RunnerConfig,
        max_turns: usize,
    ) -> LocalDispatch {
        LocalDispatch {
            store,
            push,
            agent,
            cfg,
            tasks: Mutex::new(JoinSet::new()),
            shutdown: watch::channel(false).0,
            max_turns,
        }
    }

    /// Ends every running turn as interrupted (its reply so far stored) and
    /// waits for the runners to finish.
    pub async fn drain(&self) {
        self.shutdown.send_replace(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "a turn runner panicked"
                );
            }
        }
    }
}

#[async_trait]
impl Dispatch for LocalDispatch {
    async fn dispatch(&self, job: TurnJob) -> Result<(), DispatchError> {
        // Subscribe first and check under the lock `drain` takes, so that a
        // turn is either refused or seen by `drain`, never neither.
        let shutdown = self.shutdown.subscribe();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if *shutdown.borrow() {
            return Err(DispatchError("the server is shutting down".into()));
        }
        let (store, push, agent, cfg) = (
            self.store.clone(),
            self.push.clone(),
            self.agent.clone(),
            self.cfg.clone(),
        );
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            // A queued message's turn that starts as one ends runs next, in
            // the same task (and the same place among CONFAB_MAX_TURNS).
            let mut job = job;
            loop {
                match run_turn(&*store, &*push, &*agent, &cfg, &job, shutdown.clone()).await {
                    Ok(Some(next)) => job = next,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = &e as &dyn std::error::Error, session = %job.session_id, "turn failed");
                        break;
                    }
                }
            }
        });
        Ok(())
    }

    /// Room while fewer than `max_turns` runners run. Checked before a
    /// message is stored, so racing requests can pass it by a few; a
    /// dispatch itself is never refused for it (the message is stored).
    fn has_room(&self) -> bool {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.len() < self.max_turns
    }
}
