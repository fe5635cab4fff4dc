//! DynamoDB's failures as the store sees them: conditions that failed, and
//! the one way every other error becomes a `StoreError`.

use super::MAX_ATTEMPTS;
use crate::ports::StoreError;
use aws_sdk_dynamodb::error::SdkError;

pub(super) fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::backend(e)
}

#[derive(Debug, thiserror::Error)]
#[error("a write lost {MAX_ATTEMPTS} races in a row")]
pub(super) struct Contention;

/// What a transaction's cancellation says about each of its items: the
/// reason codes (`ConditionalCheckFailed`, `TransactionConflict`, `None`).
pub(super) fn cancellation_reasons<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<String>> {
    let svc = e.as_service_error()?;
    match svc {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
            Some(
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_string())
                    .collect(),
            )
        }
        _ => None,
    }
}

pub(super) fn is_condition_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}
