//! Every client frame of the WebSocket API (`$default` and the actions).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    confab_functions::aws::lambda::ws_route().await
}
