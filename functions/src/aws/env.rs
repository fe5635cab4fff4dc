//! Where the AWS adapters find their tables, their socket API and their
//! worker, read once at start from the environment.

use super::dynamo::Tables;
use aws_config::{BehaviorVersion, Region, SdkConfig};

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
        Ok(AwsSettings {
            tables: Tables {
                sessions: need("CONFAB_SESSIONS_TABLE")?,
                messages: need("CONFAB_MESSAGES_TABLE")?,
                connections: need("CONFAB_CONNECTIONS_TABLE")?,
            },
            worker_function: opt("CONFAB_WORKER_FUNCTION"),
            push_endpoint,
            aws_endpoint: opt("CONFAB_AWS_ENDPOINT"),
        })
    }

    /// The shared SDK configuration: credentials and region from the
    /// environment (as Lambda provides them), TLS by rustls with ring.
    pub async fn sdk_config(&self) -> SdkConfig {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(url) = &self.aws_endpoint {
            loader = loader.endpoint_url(url);
            // An emulator takes any key; the environment's may be absent.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "emulated",
                    "emulated",
                    None,
                    None,
                    "confab-emulated",
                ));
            }
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                loader = loader.region(Region::new("us-east-1"));
            }
        }
        loader.load().await
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
        let base = [
            ("CONFAB_SESSIONS_TABLE", "s"),
            ("CONFAB_MESSAGES_TABLE", "m"),
            ("CONFAB_CONNECTIONS_TABLE", "c"),
        ];
        let ok = AwsSettings::from_lookup(lookup(&base)).unwrap();
        assert_eq!(ok.tables.messages, "m");
        assert_eq!(ok.push_endpoint, None);
        let mut bad = base.to_vec();
        bad.push(("CONFAB_PUSH_ENDPOINT", "wss://x"));
        let err = AwsSettings::from_lookup(lookup(&bad)).unwrap_err();
        assert!(err.to_string().contains("CONFAB_PUSH_ENDPOINT"));
    }
}
