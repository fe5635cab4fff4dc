//! The store conformance suite on `DynamoStore`, against moto's DynamoDB.

use confab_functions::ports::{SessionStore, Store, TurnStore};
use confab_protocol::model::Block;
use confab_tests::moto;
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;

async fn dynamo() -> Arc<dyn Store> {
    Arc::new(confab_tests::moto::dynamo_store().await.0)
}

confab_tests::store_conformance!(dynamo);

/// Tool blocks carry arbitrary JSON; DynamoDB maps must give it back as it
/// was, numbers and nulls included.
#[tokio::test]
async fn tool_input_json_round_trips() {
    let (store, _) = confab_tests::moto::dynamo_store().await;
    let id = confab_tests::conformance::idle_session(&store, "alice", 1).await;
    let rec = store.get_session(&id).await.unwrap().unwrap();
    let turn = confab_tests::conformance::turn();
    let mut msg = confab_tests::conformance::user(&id, &turn.turn_id, "run it");
    let input = serde_json::json!({
        "int": -3, "big": 18446744073709551615u64, "float": 1.5, "null": null,
        "empty": {}, "list": [1, "two", false, [], {"x": ""}], "text": ""
    });
    msg.content.push(Block::ToolUse {
        id: "t1".into(),
        name: "bash".into(),
        input: input.clone(),
    });
    let started = store
        .start_turn(
            "alice",
            &id,
            &confab_functions::domain::records::NewTurn {
                message: msg.clone(),
                turn,
                permission_mode: None,
                now_ms: 2,
                from_queue: false,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        started,
        confab_functions::domain::records::StartOutcome::Started { .. }
    ));
    let back = store.find_message(&id, &msg.id).await.unwrap().unwrap();
    assert_eq!(back.content[1], msg.content[1]);
    assert_eq!(back.seq, rec.summary.message_count + 1);
}

/// The template as CloudFormation reads it, through cfn-lint's own decoder
/// (it knows the intrinsic-function tags).
fn template() -> Value {
    let python = moto::venv().join("bin/python");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys\nfrom cfnlint.decode import decode\nt, errors = decode(sys.argv[1])\nassert not errors, errors\nprint(json.dumps(t))",
        ])
        .arg(path)
        .output()
        .expect("running cfn-lint's decoder");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the template as JSON")
}

/// An index: its name, key schema, projection type and projected attributes.
type Index = (String, Vec<(String, String)>, String, Vec<String>);

/// Keys, attributes, indexes, billing and TTL of a table, in one comparable
/// form: pairs of names, sorted where order carries no meaning.
fn shape(
    keys: Vec<(String, String)>,
    mut attributes: Vec<(String, String)>,
    mut indexes: Vec<Index>,
    billing: Option<String>,
    ttl: Option<String>,
) -> Value {
    attributes.sort();
    indexes.sort();
    for i in &mut indexes {
        i.3.sort();
    }
    json!({ "keys": keys, "attributes": attributes, "indexes": indexes, "billing": billing, "ttl": ttl })
}

fn pairs(v: &Value, a: &str, b: &str) -> Vec<(String, String)> {
    v.as_array()
        .map(|xs| {
            xs.iter()
                .map(|x| {
                    (
                        x[a].as_str().unwrap().to_string(),
                        x[b].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn template_shape(p: &Value) -> Value {
    let indexes = p["GlobalSecondaryIndexes"]
        .as_array()
        .map(|xs| {
            xs.iter()
                .map(|i| {
                    (
                        i["IndexName"].as_str().unwrap().to_string(),
                        pairs(&i["KeySchema"], "AttributeName", "KeyType"),
                        i["Projection"]["ProjectionType"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                        i["Projection"]["NonKeyAttributes"]
                            .as_array()
                            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    shape(
        pairs(&p["KeySchema"], "AttributeName", "KeyType"),
        pairs(&p["AttributeDefinitions"], "AttributeName", "AttributeType"),
        indexes,
        p["BillingMode"].as_str().map(str::to_string),
        p["TimeToLiveSpecification"]["AttributeName"]
            .as_str()
            .map(str::to_string),
    )
}

async fn created_shape(store: &confab_functions::store::dynamo::DynamoStore, table: &str) -> Value {
    let client = store.client();
    let d = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe table");
    let t = d.table().expect("a table");
    macro_rules! key {
        ($k:expr) => {
            $k.iter()
                .map(|e| {
                    (
                        e.attribute_name().to_string(),
                        e.key_type().as_str().to_string(),
                    )
                })
                .collect::<Vec<(String, String)>>()
        };
    }
    let indexes = t
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let p = i.projection().expect("a projection");
            (
                i.index_name().unwrap_or_default().to_string(),
                key!(i.key_schema()),
                p.projection_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                p.non_key_attributes().to_vec(),
            )
        })
        .collect();
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .expect("describe TTL")
        .time_to_live_description()
        .filter(|d| {
            d.time_to_live_status()
                .is_some_and(|s| s.as_str() == "ENABLED")
        })
        .and_then(|d| d.attribute_name())
        .map(str::to_string);
    shape(
        key!(t.key_schema()),
        t.attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name().to_string(),
                    a.attribute_type().as_str().to_string(),
                )
            })
            .collect(),
        indexes,
        t.billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str().to_string()),
        ttl,
    )
}

/// The tables the store creates (for `--aws-emulated` and the tests) are the
/// tables the SAM template deploys: a key, index or projection changed in one
/// place and not the other fails here.
#[tokio::test]
async fn the_tables_the_store_creates_are_the_tables_the_template_deploys() {
    let (store, _) = confab_tests::moto::dynamo_store().await;
    let template = template();
    let tables = store.tables().clone();
    for (logical, name) in [
        ("SessionsTable", &tables.sessions),
        ("MessagesTable", &tables.messages),
        ("ConnectionsTable", &tables.connections),
    ] {
        let want = template_shape(&template["Resources"][logical]["Properties"]);
        assert_ne!(want["keys"], json!([]), "{logical} is in the template");
        assert_eq!(created_shape(&store, name).await, want, "{logical}");
    }
}

/// Turn events the worker fails on after Lambda's retries are not lost
/// silently: they go to a queue, and an alarm watches it.
#[test]
fn failed_turn_events_go_to_an_alarmed_queue() {
    let t = template();
    let r = &t["Resources"];
    let invoke = &r["TurnWorkerFunction"]["Properties"]["EventInvokeConfig"];
    assert!(invoke["MaximumRetryAttempts"].as_u64().unwrap() >= 1);
    let dest = &invoke["DestinationConfig"]["OnFailure"];
    assert_eq!(dest["Type"], "SQS");
    assert_eq!(
        dest["Destination"]["Fn::GetAtt"],
        serde_json::json!(["TurnFailuresQueue", "Arn"])
    );
    assert_eq!(r["TurnFailuresQueue"]["Type"], "AWS::SQS::Queue");
    let alarm = r
        .as_object()
        .unwrap()
        .values()
        .find(|v| v["Type"] == "AWS::CloudWatch::Alarm")
        .expect("an alarm");
    let p = &alarm["Properties"];
    assert_eq!(p["Namespace"], "AWS/SQS");
    assert_eq!(p["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        p["Dimensions"][0]["Value"]["Fn::GetAtt"],
        serde_json::json!(["TurnFailuresQueue", "QueueName"])
    );
}

/// The deployment bounds its turns and counts its owners' limits: the
/// worker has reserved concurrency, every function is told the limits, and
/// the worker may write the counters an ended turn changes.
#[test]
fn the_worker_is_bounded_and_may_count_limits() {
    let t = template();
    let worker = &t["Resources"]["TurnWorkerFunction"]["Properties"];
    assert_eq!(
        worker["ReservedConcurrentExecutions"]["Ref"],
        "WorkerConcurrency"
    );
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    for (var, param) in [
        ("CONFAB_CREATE_RATE", "CreateRatePerMinute"),
        ("CONFAB_SEND_RATE", "SendRatePerMinute"),
        ("CONFAB_MAX_TURNS_PER_OWNER", "TurnsPerUser"),
        ("CONFAB_DAILY_TOKENS", "DailyTokensPerUser"),
    ] {
        assert_eq!(env[var]["Ref"], param, "{var}");
        assert!(t["Parameters"][param].is_object(), "{param}");
    }
    let statements = worker["Policies"][0]["Statement"].as_array().unwrap();
    let on_connections = statements
        .iter()
        .find(|st| {
            st["Resource"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["Fn::GetAtt"][0] == "ConnectionsTable"))
        })
        .expect("a statement on the connections table");
    assert!(
        on_connections["Action"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "dynamodb:UpdateItem")
    );
}

/// The socket functions may do what tickets and token expiry need: `$connect`
/// takes (deletes) its ticket and counts the owner's sockets on the index;
/// the frame route may close a connection whose token expired.
#[test]
fn the_socket_functions_may_take_tickets_and_close_expired_sockets() {
    let t = template();
    let r = &t["Resources"];
    let actions = |function: &str| -> Vec<String> {
        r[function]["Properties"]["Policies"][0]["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|st| match &st["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
                _ => vec![],
            })
            .collect()
    };
    let connect = actions("WsConnectFunction");
    for a in ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"] {
        assert!(connect.iter().any(|c| c == a), "$connect may not {a}");
    }
    let route = serde_json::to_string(&r["WsRouteFunction"]["Properties"]["Policies"]).unwrap();
    assert!(route.contains("/live/DELETE/@connections/*"), "{route}");
}

/// A search reads a bounded number of the owner's sessions per request:
/// with the only match older than `FILTER_SCAN_MAX` others, the first page
/// is empty but has a cursor, and following cursors finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_list_reads_a_bounded_number_of_sessions_per_request() {
    use confab_functions::domain::records::{CreateOutcome, SessionQuery};
    use confab_functions::store::dynamo::FILTER_SCAN_MAX;
    let (store, _) = confab_tests::moto::dynamo_store().await;
    let owner = "searcher";
    let needle =
        confab_tests::conformance::new_session(owner, "default", "needle", "find me", 1_000);
    assert_eq!(
        store.create_session(&needle).await.unwrap(),
        CreateOutcome::Created
    );
    let others = FILTER_SCAN_MAX + 50;
    let creates = (0..others).map(|i| {
        let store = &store;
        async move {
            let n = confab_tests::conformance::new_session(
                owner,
                "default",
                "hay",
                "hay",
                2_000 + i as i64,
            );
            store.create_session(&n).await.unwrap();
        }
    });
    futures::stream::iter(creates)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let mut query = SessionQuery {
        project_id: None,
        text: Some("find".into()),
        limit: 20,
        after: None,
    };
    let (first, next) = store.list_sessions(owner, &query).await.unwrap();
    assert!(first.is_empty(), "the match is past the first read");
    let mut requests = 1;
    query.after = Some(next.expect("a cursor to read on"));
    let found = loop {
        let (page, next) = store.list_sessions(owner, &query).await.unwrap();
        requests += 1;
        if let Some(s) = page.first() {
            break s.clone();
        }
        query.after = Some(next.expect("a cursor until the match"));
    };
    assert_eq!(found.id, needle.summary.id);
    assert!(requests >= 2);
    // Unfiltered lists are not cut short.
    let (all, _) = store
        .list_sessions(
            owner,
            &SessionQuery {
                limit: 100,
                ..SessionQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 100);
}

/// On AWS, CloudFront sends the web app with the same browser protections
/// as the local gateway: a Content-Security-Policy without inline scripts
/// and with no framing, nosniff, no referrer, on every behaviour.
#[test]
fn the_web_app_is_served_with_security_headers_on_aws() {
    let t = template();
    let r = &t["Resources"];
    let cfg = &r["WebDistribution"]["Properties"]["DistributionConfig"];
    let policy = serde_json::json!({ "Ref": "WebSecurityHeaders" });
    assert_eq!(
        cfg["DefaultCacheBehavior"]["ResponseHeadersPolicyId"],
        policy
    );
    for b in cfg["CacheBehaviors"].as_array().unwrap() {
        assert_eq!(b["ResponseHeadersPolicyId"], policy);
    }
    let sec = &r["WebSecurityHeaders"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"];
    let csp = sec["ContentSecurityPolicy"]["ContentSecurityPolicy"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"));
    let scripts = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap();
    assert!(!scripts.contains("unsafe-inline") && scripts.contains("${WebScriptHashes}"));
    assert_eq!(sec["ContentTypeOptions"]["Override"], true);
    assert_eq!(sec["ReferrerPolicy"]["ReferrerPolicy"], "no-referrer");
}

/// No function holds a secret in its environment (anyone allowed
/// `lambda:GetFunctionConfiguration` could read it there): each reads its
/// own from Secrets Manager, and only its role may.
#[test]
fn no_function_holds_a_secret_in_its_environment() {
    let t = template();
    let text = serde_json::to_string(&t).unwrap();
    assert!(
        !text.contains("resolve:secretsmanager"),
        "a secret resolved into the template"
    );
    assert!(t["Parameters"]["JwtSecret"].is_null(), "a secret parameter");
    let functions: Vec<(&String, &Value)> = t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .collect();
    assert_eq!(functions.len(), 5);
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    for var in ["CONFAB_JWT_SECRET", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
        assert!(
            globals[var].is_null(),
            "{var} in every function's environment"
        );
        for (name, f) in &functions {
            assert!(
                f["Properties"]["Environment"]["Variables"][var].is_null(),
                "{var} in {name}'s environment"
            );
        }
    }
    for (name, f) in &functions {
        let policies = serde_json::to_string(&f["Properties"]["Policies"]).unwrap();
        let reads = policies.contains("secretsmanager:GetSecretValue");
        let vars = &f["Properties"]["Environment"]["Variables"];
        match name.as_str() {
            "HttpApiFunction" => {
                assert!(reads && policies.contains("JwtSecretStore"), "{policies}");
                assert_eq!(vars["CONFAB_JWT_SECRET_ARN"]["Ref"], "JwtSecretStore");
                assert!(!policies.contains("AgentApiKeySecret"));
            }
            "TurnWorkerFunction" => {
                assert!(
                    reads && policies.contains("AgentApiKeySecret"),
                    "{policies}"
                );
                assert!(!policies.contains("JwtSecretStore"));
                assert!(vars["CONFAB_AGENT_API_KEY_SECRET_ARN"].is_object());
            }
            _ => assert!(!reads, "{name} may read a secret"),
        }
    }
}
