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
/// Attempts of one frame when API Gateway throttles, fails with a 5xx or
/// cannot be reached (the SDK's standard retry, with jitter).
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
    /// A frame is tried at most [`ATTEMPTS`] times, starting [`FIRST_BACKOFF`]
    /// apart: a push is on a turn's path, so it waits less than the SDK's
    /// default.
    pub fn new(sdk: &SdkConfig, endpoint: &str, stats: Arc<AwsStats>) -> ApiGatewayPush {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint.trim_end_matches('/'))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(ATTEMPTS)
                    .with_initial_backoff(FIRST_BACKOFF),
            )
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

/// Whether a failed post means the connection is gone for good.
fn is_gone(e: &aws_sdk_apigatewaymanagement::error::SdkError<PostToConnectionError>) -> bool {
    use aws_sdk_apigatewaymanagement::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            matches!(se.err(), PostToConnectionError::GoneException(_))
                || se.raw().status().as_u16() == 410
        }
        _ => false,
    }
}

#[async_trait]
impl Push for ApiGatewayPush {
    async fn post(&self, connection_id: &str, frame: Bytes) -> Result<(), PushError> {
        if frame.len() > MAX_POST_BYTES {
            return Err(PushError::Failed(Box::new(TooLarge(frame.len()))));
        }
        self.stats.request("apigw:PostToConnection");
        match self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame.to_vec()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Err(PushError::Gone),
            Err(e) => Err(PushError::Failed(Box::new(e))),
        }
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        self.stats.request("apigw:DeleteConnection");
        match self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 410) => {
                Err(PushError::Gone)
            }
            Err(e) => Err(PushError::Failed(Box::new(e))),
        }
    }
}
