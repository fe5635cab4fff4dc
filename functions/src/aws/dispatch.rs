//! Turns start by invoking the worker function asynchronously.

use super::stats::AwsStats;
use super::worker::WorkerEvent;
use crate::ports::{Dispatch, DispatchError, TurnJob};
use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_types::SdkConfig;
use std::sync::Arc;

#[derive(Clone)]
pub struct LambdaDispatch {
    client: Client,
    function: String,
    stats: Arc<AwsStats>,
}

impl std::fmt::Debug for LambdaDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaDispatch")
            .field("function", &self.function)
            .finish()
    }
}

impl LambdaDispatch {
    pub fn new(sdk: &SdkConfig, function: &str, stats: Arc<AwsStats>) -> LambdaDispatch {
        LambdaDispatch {
            client: Client::new(sdk),
            function: function.to_string(),
            stats,
        }
    }

    /// Invokes through another endpoint (an emulator).
    pub fn with_endpoint(
        sdk: &SdkConfig,
        endpoint: &str,
        function: &str,
        stats: Arc<AwsStats>,
    ) -> LambdaDispatch {
        let conf = aws_sdk_lambda::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .build();
        LambdaDispatch {
            client: Client::from_conf(conf),
            function: function.to_string(),
            stats,
        }
    }
}

#[async_trait]
impl Dispatch for LambdaDispatch {
    /// Returns once Lambda has queued the invocation (202); the turn runs in
    /// the worker. A refused invocation fails the request that started the
    /// turn with 503; the turn stays unclaimed, and the client's retry of
    /// the same request invokes again. Lambda delivers an event at least
    /// once, and the SDK may send one twice: the worker's claim on the turn
    /// makes every delivery after the first a no-op.
    async fn dispatch(&self, job: TurnJob) -> Result<(), DispatchError> {
        let payload =
            serde_json::to_vec(&WorkerEvent::Turn(job)).map_err(|e| DispatchError(Box::new(e)))?;
        self.stats.request("lambda:Invoke");
        self.client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| DispatchError(Box::new(e)))?;
        Ok(())
    }
}
