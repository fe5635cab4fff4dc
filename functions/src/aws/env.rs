//! Where the AWS adapters find their tables, their socket API and their
//! worker, read once at start from the environment.

use crate::store::dynamo::Tables;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_dynamodb::config::BehaviorVersion;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use aws_types::region::Region;
use std::time::Duration;

/// A missing or malformed AWS setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AwsConfigError(String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsSettings {
    pub tables: Tables,
    /// `CONFAB_WORKER_FUNCTION`: the function that runs turns.
    pub worker_function: Option<String>,
    /// `CONFAB_PUSH_ENDPOINT`: the management API's endpoint,
    /// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`. Socket
    /// handlers fall back to the event's domain and stage.
    pub push_endpoint: Option<String>,
    /// `CONFAB_AWS_ENDPOINT`: one endpoint for DynamoDB and Lambda (an
    /// emulator); unset on AWS.
    pub aws_endpoint: Option<String>,
    /// `AWS_REGION` (Lambda sets it); `us-east-1` for an emulator.
    pub region: String,
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN`, as Lambda provides them (Debug redacts them).
    /// None: an emulator, which takes any key.
    pub credentials: Option<Credentials>,
}

impl AwsSettings {
    pub fn from_env() -> Result<AwsSettings, AwsConfigError> {
        AwsSettings::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<AwsSettings, AwsConfigError> {
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| AwsConfigError(format!("{k} must name a DynamoDB table")))
        };
        let opt = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let push_endpoint = opt("CONFAB_PUSH_ENDPOINT");
        for (k, v) in [
            ("CONFAB_PUSH_ENDPOINT", &push_endpoint),
            ("CONFAB_AWS_ENDPOINT", &opt("CONFAB_AWS_ENDPOINT")),
        ] {
            if let Some(v) = v
                && !(v.starts_with("https://") || v.starts_with("http://"))
            {
                return Err(AwsConfigError(format!("{k} must be an http(s) URL")));
            }
        }
        let tables = Tables {
            sessions: need("CONFAB_SESSIONS_TABLE")?,
            messages: need("CONFAB_MESSAGES_TABLE")?,
            connections: need("CONFAB_CONNECTIONS_TABLE")?,
        };
        let aws_endpoint = opt("CONFAB_AWS_ENDPOINT");
        let credentials = match (opt("AWS_ACCESS_KEY_ID"), opt("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Some(Credentials::new(
                key,
                secret,
                opt("AWS_SESSION_TOKEN"),
                None,
                "environment",
            )),
            _ if aws_endpoint.is_some() => None,
            _ => {
                return Err(AwsConfigError(
                    "AWS credentials must be in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (Lambda sets them)".into(),
                ));
            }
        };
        let region = match opt("AWS_REGION").or_else(|| opt("AWS_DEFAULT_REGION")) {
            Some(r) => r,
            None if aws_endpoint.is_some() => "us-east-1".into(),
            None => return Err(AwsConfigError("AWS_REGION must name the region".into())),
        };
        Ok(AwsSettings {
            tables,
            worker_function: opt("CONFAB_WORKER_FUNCTION"),
            push_endpoint,
            aws_endpoint,
            region,
            credentials,
        })
    }

    /// The shared SDK configuration: these credentials and region, TLS by
    /// rustls with ring, the standard retries, and timeouts so that a stuck
    /// connection cannot hold a function until Lambda kills it.
    pub fn sdk_config(&self) -> SdkConfig {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let credentials = self.credentials.clone().unwrap_or_else(|| {
            Credentials::new("emulated", "emulated", None, None, "confab-emulated")
        });
        let mut b = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .http_client(http)
            .time_source(aws_smithy_async::time::SystemTimeSource::new())
            .retry_config(RetryConfig::standard())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            );
        b.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
        if let Some(url) = &self.aws_endpoint {
            b = b.endpoint_url(url);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn tables_are_required_and_urls_checked() {
        let err = AwsSettings::from_lookup(lookup(&[])).unwrap_err();
        assert!(err.to_string().contains("CONFAB_SESSIONS_TABLE"));
        let tables = [
            ("CONFAB_SESSIONS_TABLE", "s"),
            ("CONFAB_MESSAGES_TABLE", "m"),
            ("CONFAB_CONNECTIONS_TABLE", "c"),
        ];
        let err = AwsSettings::from_lookup(lookup(&tables)).unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"));
        let mut base = tables.to_vec();
        base.extend([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("AWS_REGION", "eu-west-1"),
        ]);
        let ok = AwsSettings::from_lookup(lookup(&base)).unwrap();
        assert_eq!(ok.tables.messages, "m");
        assert_eq!(ok.push_endpoint, None);
        assert_eq!(ok.region, "eu-west-1");
        assert!(
            !format!("{ok:?}").contains("wJalrXUtnFEMI"),
            "Debug must not show the secret key"
        );
        let mut bad = base.clone();
        bad.push(("CONFAB_PUSH_ENDPOINT", "wss://x"));
        let err = AwsSettings::from_lookup(lookup(&bad)).unwrap_err();
        assert!(err.to_string().contains("CONFAB_PUSH_ENDPOINT"));
    }
}
