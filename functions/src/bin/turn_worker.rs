//! Runs one turn, invoked asynchronously; on a schedule, closes turns whose worker died.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    confab_functions::aws::lambda::turn_worker().await
}
