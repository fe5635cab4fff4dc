//! The Anthropic Messages API, streaming: `message_start`,
//! `content_block_start/delta/stop`, `message_delta` (usage), `message_stop`,
//! `ping` and `error` events. Text and tool_use blocks become the contract's
//! blocks; thinking is not shown.

use super::http::{HttpSettings, SseParser, client, malformed, reply_stream};
use super::prompt::transcript;
use crate::config::Secret;
use crate::ports::{Agent, AgentError, AgentEvent, AgentRequest};
use async_trait::async_trait;
use confab_protocol::model::{Block, Role, Usage};
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::collections::HashMap;

const PROVIDER: &str = "Anthropic";
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct Anthropic {
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    pub system_prompt: String,
    pub max_tokens: u32,
    pub settings: HttpSettings,
    http: reqwest::Client,
}

impl Anthropic {
    pub fn new(
        base_url: Option<String>,
        model: Option<String>,
        api_key: Secret,
        system_prompt: String,
        max_tokens: u32,
        settings: HttpSettings,
    ) -> Result<Anthropic, AgentError> {
        Ok(Anthropic {
            base_url: base_url
                .unwrap_or_else(|| "https://api.anthropic.com".into())
                .trim_end_matches('/')
                .to_string(),
            model: model.unwrap_or_else(|| "claude-sonnet-4-5".into()),
            api_key,
            system_prompt,
            max_tokens,
            http: client(&settings)?,
            settings,
        })
    }

    pub fn body(&self, request: &AgentRequest) -> Value {
        let messages: Vec<Value> = transcript(&request.history)
            .into_iter()
            .map(|(role, text)| {
                let role = match role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({ "role": role, "content": text })
            })
            .collect();
        json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": self.system_prompt,
            "messages": messages,
            "stream": true,
        })
    }
}

#[derive(Default)]
struct Parser {
    input_tokens: u64,
    /// Tool blocks being received: index -> (id, name, partial JSON).
    tools: HashMap<u64, (String, String, String)>,
}

impl SseParser for Parser {
    fn event(&mut self, name: &str, data: &str) -> Result<(Vec<AgentEvent>, bool), AgentError> {
        let v: Value = serde_json::from_str(data).map_err(|_| malformed(PROVIDER))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let u = &v["message"]["usage"];
                self.input_tokens = u["input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_creation_input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_read_input_tokens"].as_u64().unwrap_or(0);
                out.push(AgentEvent::Usage(Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: u["output_tokens"].as_u64().unwrap_or(0),
                }));
            }
            "content_block_start" => {
                let b = &v["content_block"];
                match b["type"].as_str() {
                    Some("text") => out.push(AgentEvent::Block(Block::text(
                        b["text"].as_str().unwrap_or(""),
                    ))),
                    Some("tool_use") => {
                        let id = b["id"].as_str().unwrap_or_default().to_string();
                        let name = b["name"].as_str().unwrap_or_default().to_string();
                        self.tools.insert(index, (id, name, String::new()));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(t) = d["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(AgentEvent::Text(t.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some((_, _, json)) = self.tools.get_mut(&index) {
                            json.push_str(d["partial_json"].as_str().unwrap_or(""));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some((id, name, json)) = self.tools.remove(&index) {
                    let input = if json.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&json).map_err(|_| malformed(PROVIDER))?
                    };
                    out.push(AgentEvent::Block(Block::ToolUse { id, name, input }));
                }
            }
            "message_delta" => {
                if let Some(o) = v["usage"]["output_tokens"].as_u64() {
                    out.push(AgentEvent::Usage(Usage {
                        input_tokens: self.input_tokens,
                        output_tokens: o,
                    }));
                }
            }
            "message_stop" => return Ok((out, true)),
            "error" => {
                let kind = v["error"]["type"].as_str().unwrap_or("error");
                tracing::warn!(error = %v, "provider error mid-stream");
                return Err(AgentError::new(format!(
                    "{PROVIDER} reported an error in the middle of the reply ({kind})."
                )));
            }
            _ => {} // ping, and event types added later
        }
        Ok((out, false))
    }
}

#[async_trait]
impl Agent for Anthropic {
    fn provider(&self) -> &str {
        "anthropic"
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
            format!("{}/v1/messages", self.base_url),
            self.api_key.clone(),
            self.body(&request),
        );
        Ok(reply_stream(
            PROVIDER,
            "ANTHROPIC_API_KEY",
            self.settings.clone(),
            Parser::default(),
            move || {
                http.post(&url)
                    .header("x-api-key", key.expose())
                    .header("anthropic-version", API_VERSION)
                    .header("accept", "text/event-stream")
                    .json(&body)
            },
        ))
    }
}
