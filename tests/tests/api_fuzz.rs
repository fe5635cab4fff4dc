//! Schemathesis, an independent API fuzzer, against a running gateway with
//! auth on, driven by the OpenAPI document the gateway serves: no request may
//! get a 5xx, and every answer must match the document (status, content
//! type, body).

use confab_protocol::routes;
use confab_tests::harness::{Gateway, token};
use confab_tests::moto;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let schemathesis = moto::venv_tool("schemathesis", moto::SCHEMATHESIS);
    let gw = Gateway::start_jwt(&[
        // The fuzzer creates many sessions and sends many messages; the
        // limits are tested elsewhere.
        ("CONFAB_CREATE_RATE", "1000000"),
        ("CONFAB_SEND_RATE", "1000000"),
        ("CONFAB_MAX_TURNS_PER_OWNER", "100000"),
        ("CONFAB_DEMO_DELAY_MS", "0"),
    ])
    .await;
    let report = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let url = format!("{}{}", gw.base, routes::OPENAPI);
        let auth = format!("Authorization: Bearer {}", token("fuzzer"));
        let report = report.path().to_path_buf();
        move || {
            Command::new(schemathesis)
                .args(["run", &url, "-H", &auth])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                    "--max-examples",
                    "25",
                    "--seed",
                    "20261130",
                    "--request-timeout",
                    "10",
                    // One worker: Hypothesis's source cache is not safe
                    // across Schemathesis's threads (a runtime error seen
                    // with two).
                    "--workers",
                    "1",
                    "--report-dir",
                ])
                .arg(&report)
                // Its example database and caches go there too.
                .current_dir(&report)
                .env("NO_COLOR", "1")
                .output()
                .expect("running schemathesis")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tested every operation (a run that skipped them would pass too),
    // but the document's own URL, which Schemathesis leaves out.
    let operations: usize = confab_functions::api::contract::openapi()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| {
            p.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .count()
        })
        .sum();
    let tested = operations - 1;
    assert!(
        stdout.contains(&format!("Selected: {tested}/{tested}"))
            && stdout.contains(&format!("Tested: {tested}")),
        "not every one of the {tested} operations was tested:\n{stdout}"
    );
}
