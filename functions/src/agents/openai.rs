//! OpenAI-compatible Chat Completions with `stream: true`, as OpenAI, Ollama
//! and vLLM serve it. Usage comes from the final chunk
//! (`stream_options.include_usage`).

use super::http::{HttpSettings, SseParser, client, malformed, reply_stream};
use super::prompt::transcript;
use crate::config::Secret;
use crate::ports::{Agent, AgentError, AgentEvent, AgentRequest};
use async_trait::async_trait;
use confab_protocol::model::{Block, Role, Usage};
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const PROVIDER: &str = "The OpenAI-compatible provider";

#[derive(Debug)]
pub struct OpenAi {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub system_prompt: String,
    pub max_tokens: u32,
    pub settings: HttpSettings,
    http: reqwest::Client,
}

impl OpenAi {
    pub fn new(
        base_url: Option<String>,
        model: Option<String>,
        api_key: Option<Secret>,
        system_prompt: String,
        max_tokens: u32,
        settings: HttpSettings,
    ) -> Result<OpenAi, AgentError> {
        Ok(OpenAi {
            base_url: base_url
                .unwrap_or_else(|| "https://api.openai.com/v1".into())
                .trim_end_matches('/')
                .to_string(),
            model: model.unwrap_or_else(|| "gpt-4o-mini".into()),
            api_key,
            system_prompt,
            max_tokens,
            http: client(&settings)?,
            settings,
        })
    }

    /// The request body: system prompt, then the stored conversation.
    pub fn body(&self, request: &AgentRequest) -> Value {
        let mut messages = vec![json!({ "role": "system", "content": self.system_prompt })];
        for (role, text) in transcript(&request.history) {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({ "role": role, "content": text }));
        }
        json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
            "max_completion_tokens": self.max_tokens,
        })
    }
}

#[derive(Default)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct Parser {
    tools: BTreeMap<u64, ToolCall>,
}

impl Parser {
    fn flush_tools(&mut self) -> Vec<AgentEvent> {
        std::mem::take(&mut self.tools)
            .into_values()
            .map(|t| {
                let input =
                    serde_json::from_str(&t.arguments).unwrap_or(Value::String(t.arguments));
                AgentEvent::Block(Block::ToolUse {
                    id: t.id,
                    name: t.name,
                    input,
                })
            })
            .collect()
    }
}

impl SseParser for Parser {
    fn event(&mut self, _name: &str, data: &str) -> Result<(Vec<AgentEvent>, bool), AgentError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok((self.flush_tools(), true));
        }
        let chunk: Value = serde_json::from_str(data).map_err(|_| malformed(PROVIDER))?;
        if let Some(err) = chunk.get("error") {
            let kind = err
                .get("type")
                .or_else(|| err.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            tracing::warn!(error = %err, "provider error mid-stream");
            return Err(AgentError::new(format!(
                "{PROVIDER} reported an error in the middle of the reply ({kind})."
            )));
        }
        let mut out = Vec::new();
        if let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) {
            let delta = &choice["delta"];
            if let Some(text) = delta.get("content").and_then(Value::as_str)
                && !text.is_empty()
            {
                out.push(AgentEvent::Text(text.to_string()));
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let t = self.tools.entry(index).or_default();
                    if let Some(id) = c.get("id").and_then(Value::as_str) {
                        t.id = id.to_string();
                    }
                    if let Some(name) = c["function"].get("name").and_then(Value::as_str) {
                        t.name.push_str(name);
                    }
                    if let Some(args) = c["function"].get("arguments").and_then(Value::as_str) {
                        t.arguments.push_str(args);
                    }
                }
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                out.extend(self.flush_tools());
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            out.push(AgentEvent::Usage(Usage {
                input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            }));
        }
        Ok((out, false))
    }
}

#[async_trait]
impl Agent for OpenAi {
    fn provider(&self) -> &str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn start(
        &self,
        request: AgentRequest,
    ) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError> {
        let (http, url, key, body) = (
            self.http.clone(),
            format!("{}/chat/completions", self.base_url),
            self.api_key.clone(),
            self.body(&request),
        );
        Ok(reply_stream(
            PROVIDER,
            "OPENAI_API_KEY",
            self.settings.clone(),
            Parser::default(),
            move || {
                let r = http
                    .post(&url)
                    .header("accept", "text/event-stream")
                    .json(&body);
                match &key {
                    Some(k) => r.bearer_auth(k.expose()),
                    None => r,
                }
            },
        ))
    }
}
