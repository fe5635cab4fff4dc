//! The WebSocket API's `$connect` route: checks the token, stores the connection.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    confab_functions::aws::lambda::ws_connect().await
}
