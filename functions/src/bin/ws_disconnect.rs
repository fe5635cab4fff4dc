//! The WebSocket API's `$disconnect` route: forgets the connection.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    confab_functions::aws::lambda::ws_disconnect().await
}
