//! The three tables, their keys and indexes, as `--aws-emulated` and the
//! tests create them; `infra/template.yaml` deploys the same (a test checks).

use super::errors::backend;
use super::{BY_OWNER, BY_RUNNING, BY_SESSION, DynamoStore};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

impl DynamoStore {
    /// Creates the three tables with their indexes and TTL, as the SAM
    /// template declares them. For emulators and tests; idempotent.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(backend)
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(backend)
        };
        let gsi = |name: &str,
                   keys: Vec<KeySchemaElement>,
                   projection: ProjectionType,
                   include: &[&str]| {
            let mut p = Projection::builder().projection_type(projection);
            for a in include {
                p = p.non_key_attributes(*a);
            }
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .set_key_schema(Some(keys))
                .projection(p.build())
                .build()
                .map_err(backend)
        };
        use KeyType::{Hash, Range};
        use ScalarAttributeType::S as Str;
        let specs = vec![
            (
                self.tables.sessions.clone(),
                vec![
                    attr("id", Str)?,
                    attr("owner", Str)?,
                    attr("activityKey", Str)?,
                    attr("running", Str)?,
                ],
                vec![key("id", Hash)?],
                vec![
                    gsi(
                        BY_OWNER,
                        vec![key("owner", Hash)?, key("activityKey", Range)?],
                        ProjectionType::Include,
                        &["summary", "projectId", "titleLc", "firstLc"],
                    )?,
                    gsi(
                        BY_RUNNING,
                        vec![key("running", Hash)?],
                        ProjectionType::KeysOnly,
                        &[],
                    )?,
                ],
                false,
            ),
            (
                self.tables.messages.clone(),
                vec![attr("sessionId", Str)?, attr("sk", Str)?],
                vec![key("sessionId", Hash)?, key("sk", Range)?],
                vec![],
                false,
            ),
            (
                self.tables.connections.clone(),
                vec![
                    attr("connectionId", Str)?,
                    attr("sk", Str)?,
                    attr("owner", Str)?,
                    attr("sessionId", Str)?,
                ],
                vec![key("connectionId", Hash)?, key("sk", Range)?],
                vec![
                    gsi(
                        BY_OWNER,
                        vec![key("owner", Hash)?],
                        ProjectionType::KeysOnly,
                        &[],
                    )?,
                    gsi(
                        BY_SESSION,
                        vec![key("sessionId", Hash)?, key("connectionId", Range)?],
                        ProjectionType::Include,
                        &["token", "sessionOwner", "incarnation"],
                    )?,
                ],
                true,
            ),
        ];
        for (name, attrs, keys, indexes, ttl) in specs {
            let mut req = self
                .client
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest)
                .set_attribute_definitions(Some(attrs))
                .set_key_schema(Some(keys));
            if !indexes.is_empty() {
                req = req.set_global_secondary_indexes(Some(indexes));
            }
            match req.send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_in_use_exception()) =>
                {
                    continue;
                }
                Err(e) => return Err(backend(e)),
            }
            if ttl {
                self.client
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .enabled(true)
                            .attribute_name("expiresAt")
                            .build()
                            .map_err(backend)?,
                    )
                    .send()
                    .await
                    .map_err(backend)?;
            }
        }
        Ok(())
    }
}
