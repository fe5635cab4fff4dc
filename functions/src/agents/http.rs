//! What the HTTP providers share: one client, retries before the first token
//! (never after), timeouts, errors a user can read, and an SSE reply turned
//! into a lazy stream that connects on first poll, so that dropping it (stop,
//! shutdown) cancels the request at once, retries included.

use crate::ports::{AgentError, AgentEvent};
use confab_protocol::backoff::Backoff;
use eventsource_stream::Eventsource;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Retry and timeout settings of an HTTP provider.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Attempts after the first, on 429, 5xx, timeouts and connection errors.
    pub retries: u32,
    /// The first wait; it doubles each attempt, ±20 % (a `Retry-After` wins,
    /// up to 30 s).
    pub backoff: Duration,
    pub connect_timeout: Duration,
    /// Until the response headers arrive.
    pub first_byte_timeout: Duration,
    /// Between two events of the stream.
    pub idle_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            retries: 3,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

pub fn client(s: &HttpSettings) -> Result<reqwest::Client, AgentError> {
    reqwest::Client::builder()
        .connect_timeout(s.connect_timeout)
        .build()
        .map_err(|e| AgentError {
            message: "The HTTP client could not be set up.".into(),
            source: Some(Box::new(e)),
        })
}

/// A message for a refused request, by status only: provider bodies can
/// echo keys or internals, so they are logged, never shown.
/// The machine-readable code of a provider's error body, if it has one:
/// `error.code` or `error.type` (OpenAI, Anthropic), only when it is a short
/// identifier, never the message.
fn error_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?;
    [e.get("code"), e.get("type")]
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .find(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' || ch == '.')
        })
        .map(str::to_string)
}

fn refused(provider: &str, status: StatusCode, key_var: &str) -> AgentError {
    let message = match status.as_u16() {
        400 => format!("{provider} refused the request as invalid."),
        401 | 403 => format!("{provider} refused the credentials: check {key_var}."),
        404 => format!(
            "{provider} does not know this model or endpoint: check CONFAB_AGENT_MODEL and CONFAB_AGENT_BASE_URL."
        ),
        413 => format!("The conversation is too long for {provider}."),
        429 => format!("{provider} is rate limiting requests; try again in a moment."),
        s if s >= 500 => format!("{provider} is unavailable right now (HTTP {s}); try again."),
        s => format!("{provider} answered HTTP {s}."),
    };
    AgentError::new(message)
}

/// The longest wait between two attempts, whatever a `Retry-After` asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

fn retry_after(r: &Response) -> Option<Duration> {
    let v = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64())))
}

/// Sends a request, retrying on 429, 5xx, timeouts and connection errors.
pub async fn send(
    provider: &str,
    key_var: &str,
    s: &HttpSettings,
    make: impl Fn() -> RequestBuilder,
) -> Result<Response, AgentError> {
    let backoff = Backoff {
        first: s.backoff,
        max: MAX_WAIT,
        retries: s.retries,
        jitter: 0.2,
    };
    let mut retry = 0;
    loop {
        let outcome = tokio::time::timeout(s.first_byte_timeout, make().send()).await;
        let (err, asked) = match outcome {
            Ok(Ok(r)) if r.status().is_success() => return Ok(r),
            Ok(Ok(r)) => {
                let status = r.status();
                let asked = retry_after(&r);
                let body = r.text().await.unwrap_or_default();
                // Status and error code only: a provider's message can quote
                // the key or the user's text back.
                let code = error_code(&body);
                tracing::warn!(provider, %status, code = code.as_deref().unwrap_or("-"), "provider refused a request");
                let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                if !retryable {
                    return Err(refused(provider, status, key_var));
                }
                (refused(provider, status, key_var), asked)
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    provider,
                    error = &e as &dyn std::error::Error,
                    "provider unreachable"
                );
                let message = format!(
                    "{provider} could not be reached: check CONFAB_AGENT_BASE_URL and the network."
                );
                (
                    AgentError {
                        message,
                        source: Some(Box::new(e)),
                    },
                    None,
                )
            }
            Err(_) => (
                AgentError::new(format!("{provider} did not answer in time.")),
                None,
            ),
        };
        retry += 1;
        let Some(wait) = backoff.delay(retry, rand::random()) else {
            return Err(err);
        };
        tokio::time::sleep(asked.unwrap_or(wait)).await;
    }
}

/// Turns provider events into agent events.
pub trait SseParser: Send + 'static {
    /// One server-sent event. Returns the agent events it makes and whether
    /// the reply is complete.
    fn event(&mut self, name: &str, data: &str) -> Result<(Vec<AgentEvent>, bool), AgentError>;
}

type Connect = Pin<Box<dyn Future<Output = Result<Response, AgentError>> + Send>>;
type Events = BoxStream<
    'static,
    Result<eventsource_stream::Event, eventsource_stream::EventStreamError<reqwest::Error>>,
>;

enum State<P> {
    Connect(Connect, P),
    Read(Events, P, VecDeque<AgentEvent>, bool),
    Done,
}

/// A provider's streamed reply: `make` builds the request (again for each
/// retry); nothing is sent until the stream is first polled.
pub fn reply_stream<P: SseParser>(
    provider: &'static str,
    key_var: &'static str,
    settings: HttpSettings,
    parser: P,
    make: impl Fn() -> RequestBuilder + Send + 'static,
) -> BoxStream<'static, Result<AgentEvent, AgentError>> {
    let idle = settings.idle_timeout;
    let connect = Box::pin(async move { send(provider, key_var, &settings, make).await });
    sse_stream(provider, idle, connect, parser)
}

pub fn malformed(provider: &str) -> AgentError {
    AgentError::new(format!("{provider} sent a reply Confab could not read."))
}

/// The reply as a stream: connects (with retries) when first polled, then
/// parses server-sent events until the parser says the reply is complete.
pub fn sse_stream<P: SseParser>(
    provider: &'static str,
    idle: Duration,
    connect: Connect,
    parser: P,
) -> BoxStream<'static, Result<AgentEvent, AgentError>> {
    stream::unfold(State::Connect(connect, parser), move |state| async move {
        let mut state = state;
        loop {
            state = match state {
                State::Done => return None,
                State::Connect(connect, parser) => match connect.await {
                    Ok(r) => State::Read(
                        r.bytes_stream().eventsource().boxed(),
                        parser,
                        VecDeque::new(),
                        false,
                    ),
                    Err(e) => return Some((Err(e), State::Done)),
                },
                State::Read(mut events, mut parser, mut queue, complete) => {
                    if let Some(e) = queue.pop_front() {
                        return Some((Ok(e), State::Read(events, parser, queue, complete)));
                    }
                    if complete {
                        return None;
                    }
                    match tokio::time::timeout(idle, events.next()).await {
                        Err(_) => {
                            return Some((
                                Err(AgentError::new(format!(
                                    "{provider} stopped sending in the middle of the reply."
                                ))),
                                State::Done,
                            ));
                        }
                        Ok(None) => {
                            return Some((
                                Err(AgentError::new(format!(
                                    "{provider} ended the reply early."
                                ))),
                                State::Done,
                            ));
                        }
                        Ok(Some(Err(e))) => {
                            tracing::warn!(provider, error = %e, "provider stream broke");
                            return Some((Err(malformed(provider)), State::Done));
                        }
                        Ok(Some(Ok(ev))) => match parser.event(&ev.event, &ev.data) {
                            Ok((out, done)) => State::Read(events, parser, out.into(), done),
                            Err(e) => return Some((Err(e), State::Done)),
                        },
                    }
                }
            };
        }
    })
    .boxed()
}

#[cfg(test)]
mod error_code_tests {
    use super::error_code;

    #[test]
    fn only_the_code_of_a_provider_error_is_kept() {
        let openai = r#"{"error":{"message":"Incorrect API key provided: sk-abc123secret","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(error_code(openai).as_deref(), Some("invalid_api_key"));
        let anthropic = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-secret"}}"#;
        assert_eq!(
            error_code(anthropic).as_deref(),
            Some("authentication_error")
        );
        // No code, or one that is not an identifier: nothing.
        assert_eq!(error_code("<html>Bad Gateway sk-leak</html>"), None);
        assert_eq!(
            error_code(r#"{"error":{"code":"your key sk-x is wrong"}}"#),
            None
        );
        assert_eq!(error_code(r#"{"error":"sk-x"}"#), None);
    }
}
