//! Push through the API Gateway management API (`PostToConnection`).

use super::stats::AwsStats;
use crate::ports::{Push, PushError};
use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_types::SdkConfig;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The most API Gateway accepts in one `PostToConnection`.
pub const MAX_POST_BYTES: usize = 128 * 1024;
/// Attempts of one frame when API Gateway throttles or fails.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
#[error("a frame of {0} bytes is over API Gateway's 128 KiB limit")]
struct TooLarge(usize);

/// Posts frames to the connections of one WebSocket API stage.
#[derive(Clone)]
pub struct ApiGatewayPush {
    client: Client,
    stats: Arc<AwsStats>,
}

impl std::fmt::Debug for ApiGatewayPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiGatewayPush")
    }
}

impl ApiGatewayPush {
    /// `endpoint` is `https://{domain}/{stage}` (or a local gateway's URL).
    /// The SDK's own retries are off: this adapter retries, a bounded number
    /// of times, so that retries never multiply.
    pub fn new(sdk: &SdkConfig, endpoint: &str, stats: Arc<AwsStats>) -> ApiGatewayPush {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint.trim_end_matches('/'))
            .retry_config(RetryConfig::disabled())
            .build();
        ApiGatewayPush {
            client: Client::from_conf(conf),
            stats,
        }
    }

    /// The management endpoint of the API a socket event came through.
    pub fn endpoint_for(domain: &str, stage: &str) -> String {
        format!("https://{domain}/{stage}")
    }
}

enum Verdict {
    Gone,
    Retry,
    Fail,
}

fn judge(e: &aws_sdk_apigatewaymanagement::error::SdkError<PostToConnectionError>) -> Verdict {
    use aws_sdk_apigatewaymanagement::error::SdkError;
    match e {
        SdkError::ServiceError(se) => match se.err() {
            PostToConnectionError::GoneException(_) => Verdict::Gone,
            PostToConnectionError::LimitExceededException(_) => Verdict::Retry,
            PostToConnectionError::PayloadTooLargeException(_)
            | PostToConnectionError::ForbiddenException(_) => Verdict::Fail,
            _ => {
                let status = se.raw().status().as_u16();
                if status == 410 {
                    Verdict::Gone
                } else if status == 429 || status >= 500 {
                    Verdict::Retry
                } else {
                    Verdict::Fail
                }
            }
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// A factor in [0.5, 1) that differs between calls, for jitter.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    0.5 + f64::from(nanos % 1000) / 2000.0
}

#[async_trait]
impl Push for ApiGatewayPush {
    async fn post(&self, connection_id: &str, frame: Bytes) -> Result<(), PushError> {
        if frame.len() > MAX_POST_BYTES {
            return Err(PushError::Failed(Box::new(TooLarge(frame.len()))));
        }
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            self.stats.request("apigw:PostToConnection");
            let res = self
                .client
                .post_to_connection()
                .connection_id(connection_id)
                .data(Blob::new(frame.to_vec()))
                .send()
                .await;
            let e = match res {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match judge(&e) {
                Verdict::Gone => return Err(PushError::Gone),
                Verdict::Retry if attempt < ATTEMPTS => {
                    // Full jitter: retries of many frames do not line up.
                    let wait = backoff.mul_f64(jitter());
                    tracing::debug!(
                        connection = connection_id,
                        attempt,
                        "push throttled; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    backoff *= 2;
                    attempt += 1;
                }
                _ => return Err(PushError::Failed(Box::new(e))),
            }
        }
    }
}
