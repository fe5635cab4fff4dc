//! The agents behind the `Agent` port, chosen by `CONFAB_AGENT`.

pub mod anthropic;
pub mod claude_code;
pub mod demo;
pub mod http;
pub mod openai;
pub mod prompt;

use crate::config::{AgentConfig, AgentKind};
use crate::ports::{Agent, AgentError};
use std::sync::Arc;

/// Why the configured agent cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum AgentSetupError {
    #[error(transparent)]
    ProjectsRoot(#[from] claude_code::RootError),
    #[error("{0} must be set for CONFAB_AGENT={1}")]
    Missing(&'static str, &'static str),
    #[error("the agent could not be set up: {0}")]
    Client(#[source] AgentError),
}

/// The agent the configuration asks for.
pub fn from_config(cfg: &AgentConfig) -> Result<Arc<dyn Agent>, AgentSetupError> {
    let system = cfg
        .system_prompt
        .clone()
        .unwrap_or_else(|| prompt::DEFAULT_SYSTEM_PROMPT.to_string());
    let settings = http::HttpSettings::default();
    Ok(match cfg.kind {
        AgentKind::Demo => Arc::new(demo::DemoAgent::new(std::time::Duration::from_millis(
            cfg.demo_delay_ms,
        ))),
        AgentKind::OpenAi => Arc::new(
            openai::OpenAi::new(
                cfg.base_url.clone(),
                cfg.model.clone(),
                cfg.openai_api_key.clone(),
                system,
                cfg.max_tokens,
                settings,
            )
            .map_err(AgentSetupError::Client)?,
        ),
        AgentKind::Anthropic => {
            let key = cfg
                .anthropic_api_key
                .clone()
                .ok_or(AgentSetupError::Missing("ANTHROPIC_API_KEY", "anthropic"))?;
            Arc::new(
                anthropic::Anthropic::new(
                    cfg.base_url.clone(),
                    cfg.model.clone(),
                    key,
                    system,
                    cfg.max_tokens,
                    settings,
                )
                .map_err(AgentSetupError::Client)?,
            )
        }
        AgentKind::ClaudeCode => {
            let root = cfg
                .projects_root
                .as_deref()
                .ok_or(AgentSetupError::Missing(
                    "CONFAB_PROJECTS_ROOT",
                    "claude-code",
                ))?;
            Arc::new(
                claude_code::ClaudeCode::new(cfg.claude_bin.clone(), root, cfg.model.clone())?
                    .with_env(cfg.claude_env.clone()),
            )
        }
    })
}
