//! The AWS adapters but the store (`store::dynamo`): push through the API
//! Gateway management API, dispatch by asynchronous Lambda invocation, and the entry
//! points of the Lambda binaries.

pub mod dispatch;
pub mod env;
pub mod lambda;
pub mod push;
pub mod secrets;
pub mod stats;
pub mod worker;

pub use aws_types::SdkConfig;
pub use dispatch::LambdaDispatch;
pub use env::AwsSettings;
pub use push::ApiGatewayPush;
pub use stats::AwsStats;
