//! The agents behind the `Agent` port, chosen by `CONFAB_AGENT`.

pub mod demo;

use crate::config::{AgentConfig, AgentKind};
use crate::ports::Agent;
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CONFAB_AGENT={0} is not available in this build of Confab yet; use CONFAB_AGENT=demo")]
pub struct UnavailableAgent(pub &'static str);

/// The agent the configuration asks for.
pub fn from_config(cfg: &AgentConfig) -> Result<Arc<dyn Agent>, UnavailableAgent> {
    match cfg.kind {
        AgentKind::Demo => Ok(Arc::new(demo::DemoAgent::new(
            std::time::Duration::from_millis(cfg.demo_delay_ms),
        ))),
        AgentKind::OpenAi => Err(UnavailableAgent("openai")),
        AgentKind::Anthropic => Err(UnavailableAgent("anthropic")),
        AgentKind::ClaudeCode => Err(UnavailableAgent("claude-code")),
    }
}
