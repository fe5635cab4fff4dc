//! `cargo xtask bench`, emulated AWS: the gateway in `--aws-emulated` mode
//! in-process (DynamoDB on moto, push through the management API, turns
//! through Lambda's Invoke), counting what one turn asks of AWS. Prices the
//! counts and keeps the table in docs/benchmarks.md.

use confab_functions::aws::AwsStats;
use confab_functions::aws::stats::StatsSnapshot;
use confab_protocol::ServerEvent;
use confab_protocol::model::SessionStatus;
use confab_tests::harness::{Api, Socket, id};

mod common;

/// The pause between the demo agent's words: 1,000 words in about 20 s, the
/// pace of a fast hosted model.
const WORD_MS: u64 = 20;
const WORDS: usize = 1000;

// Public list prices, us-east-1, on-demand, as of November 2026.
/// DynamoDB on-demand, per write request unit.
const PRICE_WRU: f64 = 0.625 / 1e6;
/// DynamoDB on-demand, per read request unit.
const PRICE_RRU: f64 = 0.125 / 1e6;
/// API Gateway WebSocket, per message (in 32 KB increments).
const PRICE_WS_MESSAGE: f64 = 1.00 / 1e6;
/// API Gateway HTTP API, per request.
const PRICE_HTTP_REQUEST: f64 = 1.00 / 1e6;
/// Lambda, per request.
const PRICE_LAMBDA_REQUEST: f64 = 0.20 / 1e6;
/// Lambda arm64, per GB-second.
const PRICE_LAMBDA_GB_S: f64 = 0.0000133334;
/// The functions' memory (infra/template.yaml).
const LAMBDA_GB: f64 = 0.25;

struct Run {
    subscribers: usize,
    stats: StatsSnapshot,
    seconds: f64,
}

fn writes(s: &StatsSnapshot) -> u64 {
    [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:TransactWriteItems",
        "dynamodb:BatchWriteItem",
    ]
    .iter()
    .map(|k| s.requests.get(*k).copied().unwrap_or(0))
    .sum()
}

fn reads(s: &StatsSnapshot) -> u64 {
    s.count("dynamodb:GetItem") + s.count("dynamodb:Query")
}

async fn one_turn(api: &Api, ws: &str, stats: &AwsStats, subscribers: usize) -> Run {
    let sid = id();
    assert_eq!(api.create(&sid, &id(), "hi").await.status, 201);
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let mut sockets = Vec::new();
    for _ in 0..subscribers {
        let mut s = Socket::connect(ws).await.expect("socket");
        s.hello().await;
        s.subscribe(&sid, 2).await;
        s.expect("subscribed", |e| {
            matches!(e, ServerEvent::Subscribed { .. })
        })
        .await;
        sockets.push(s);
    }
    // Let the index catch up and the subscribe requests settle.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = stats.snapshot();
    let started = std::time::Instant::now();
    assert_eq!(
        api.send(&sid, &id(), &format!("/words {WORDS}"))
            .await
            .status,
        202
    );
    for s in &mut sockets {
        s.expect_within("the end of the turn", std::time::Duration::from_secs(120), |e| {
            matches!(e, ServerEvent::SessionUpdated { session } if session.id == sid && session.status == SessionStatus::Idle)
        })
        .await;
    }
    let seconds = started.elapsed().as_secs_f64();
    Run {
        subscribers,
        stats: stats.snapshot().since(&before),
        seconds,
    }
}

fn lambda_sizes() -> Vec<(String, Option<u64>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambda");
    [
        "http_api",
        "ws_connect",
        "ws_disconnect",
        "ws_route",
        "turn_worker",
    ]
    .iter()
    .map(|f| {
        let size = std::fs::metadata(dir.join(f).join("bootstrap"))
            .ok()
            .map(|m| m.len());
        (f.to_string(), size)
    })
    .collect()
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The AWS bill of one turn: (DynamoDB, API Gateway, Lambda) in dollars.
fn cost_per_turn(r: &Run) -> (f64, f64, f64) {
    // Strongly consistent reads of rows up to 8 KiB: at most 2 units each.
    let dynamo =
        r.stats.estimated_write_units * PRICE_WRU + reads(&r.stats) as f64 * 2.0 * PRICE_RRU;
    // Pushes, plus the one REST request that sent the message.
    let gateway =
        r.stats.count("apigw:PostToConnection") as f64 * PRICE_WS_MESSAGE + PRICE_HTTP_REQUEST;
    // http_api (about 50 ms) and the worker for the whole turn.
    let lambda = 2.0 * PRICE_LAMBDA_REQUEST + (r.seconds + 0.05) * LAMBDA_GB * PRICE_LAMBDA_GB_S;
    (dynamo, gateway, lambda)
}

fn main() {
    let moto = confab_tests::moto::moto();
    let tables = confab_tests::moto::fresh_tables();
    // Before any thread starts: the emulated gateway reads these at start.
    // SAFETY: single-threaded here; the runtime is built below.
    unsafe {
        std::env::set_var("CONFAB_AWS_ENDPOINT", &moto.url);
        std::env::set_var("CONFAB_SESSIONS_TABLE", &tables.sessions);
        std::env::set_var("CONFAB_MESSAGES_TABLE", &tables.messages);
        std::env::set_var("CONFAB_CONNECTIONS_TABLE", &tables.connections);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let (started, _dir) = common::in_process(WORD_MS, None, true).await;
    let stats = started.aws.expect("AWS counters");
    let api = Api::new(&format!("http://{}", started.addr), None);
    let ws = format!("ws://{}/ws", started.addr);

    eprintln!("bench: one 1,000-word reply, 1 subscriber (about 20 s)");
    let one = one_turn(&api, &ws, &stats, 1).await;
    eprintln!("bench: one 1,000-word reply, 10 subscribers (about 20 s)");
    let ten = one_turn(&api, &ws, &stats, 10).await;

    let mut table =
        String::from("| measure | 1 subscriber | 10 subscribers | target |\n|---|---|---|---|\n");
    let mut row = |what: &str, f: &dyn Fn(&Run) -> String, target: &str| {
        table.push_str(&format!(
            "| {what} | {} | {} | {target} |\n",
            f(&one),
            f(&ten)
        ));
    };
    row("Turn length", &|r| format!("{:.1} s", r.seconds), "");
    row(
        "DynamoDB write requests",
        &|r| writes(&r.stats).to_string(),
        "≤ 10",
    );
    row(
        "DynamoDB read requests",
        &|r| reads(&r.stats).to_string(),
        "",
    );
    for kind in [
        "dynamodb:TransactWriteItems",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
    ] {
        row(
            &format!("… {}", kind.trim_start_matches("dynamodb:")),
            &|r| r.stats.requests.get(kind).copied().unwrap_or(0).to_string(),
            "",
        );
    }
    row(
        "Write units, as the emulator's `ReturnConsumedCapacity` reported",
        &|r| format!("{:.1}", r.stats.write_units),
        "",
    );
    row(
        "Write units by DynamoDB's rules (sizes, transactions ×2, index rows)",
        &|r| format!("{:.0}", r.stats.estimated_write_units),
        "",
    );
    row(
        "`PostToConnection` calls",
        &|r| r.stats.count("apigw:PostToConnection").to_string(),
        "",
    );
    row(
        "`PostToConnection` per subscriber",
        &|r| {
            format!(
                "{:.1}",
                r.stats.count("apigw:PostToConnection") as f64 / r.subscribers as f64
            )
        },
        "≤ 40",
    );
    row(
        "Lambda `Invoke` (the worker)",
        &|r| r.stats.count("lambda:Invoke").to_string(),
        "1",
    );
    row(
        "AWS cost of 10,000 such turns a month",
        &|r| {
            let (d, g, l) = cost_per_turn(r);
            format!(
                "${:.2} (DynamoDB ${:.2}, API Gateway ${:.2}, Lambda ${:.2})",
                (d + g + l) * 1e4,
                d * 1e4,
                g * 1e4,
                l * 1e4
            )
        },
        "",
    );
    let mut sizes = String::from("| function | release binary (arm64) | target |\n|---|---|---|\n");
    for (f, size) in lambda_sizes() {
        sizes.push_str(&format!(
            "| `{f}` | {} | < 10 MiB |\n",
            size.map(mib)
                .unwrap_or_else(|| "not built (`cargo xtask bench` builds it)".into())
        ));
    }
    println!("\n{table}\n{sizes}");
    let section = format!(
        "<!-- bench:aws:start -->\n## Emulated AWS\n\nLast run: `cargo xtask bench` on {} cores: the gateway with `--aws-emulated` \
         (DynamoDB on moto 5.2.1, pushes through the management API, the turn through Lambda's Invoke), \
         one turn of the demo agent's 1,000 words at {WORD_MS} ms a word, counted from the `POST` of the \
         message to the last socket's idle `session.updated`.\n\n{table}\n{sizes}\n<!-- bench:aws:end -->",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    );
    write_doc(&section);
}

/// Replaces the AWS section of docs/benchmarks.md, keeping the rest.
fn write_doc(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let (start, end) = ("<!-- bench:aws:start -->", "<!-- bench:aws:end -->");
    let new = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(&path, new).expect("writing docs/benchmarks.md");
    eprintln!("bench: wrote {}", path.display());
}
