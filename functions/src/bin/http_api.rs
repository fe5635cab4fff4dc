//! The REST API behind API Gateway's HTTP API.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    confab_functions::aws::lambda::http_api().await
}
