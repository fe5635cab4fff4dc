//! `cargo xtask dev | test | bench`: the project's commands. Each installs
//! what it needs when it is missing, so they work on a fresh machine.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <dev | test | bench> [args]

  dev    build and run Confab at http://127.0.0.1:8787 (demo agent, SQLite in .data/);
         extra args go to the gateway, e.g. `cargo xtask dev -- --addr 0.0.0.0:8787`
  test   formatting, lints, the wasm32 build of the protocol crate, and every test
  bench  measure the local gateway and write docs/benchmarks.md";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let rest: Vec<String> = args.filter(|a| a != "--").collect();
    let root = root();
    std::env::set_current_dir(&root).context("entering the workspace")?;
    match cmd.as_str() {
        "dev" => dev(&rest),
        "test" => test(),
        "bench" => bench(),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs a command, failing with its name when it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Adds a rustup target when it is missing.
fn ensure_target(target: &str) -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match out {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == target) =>
        {
            Ok(())
        }
        Ok(_) => run(Command::new("rustup").args(["target", "add", target])),
        Err(e) => bail!("rustup is needed to add the {target} target: {e}"),
    }
}

/// Adds a rustup component (rustfmt, clippy) when it is missing.
fn ensure_component(component: &str, probe: &[&str]) -> Result<()> {
    if succeeds(cargo().args(probe)) {
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", component]))
}

fn dev(extra: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "confab-local",
        "--bin",
        "confab",
        "--",
    ]);
    let has = |flag: &str| {
        extra
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if !has("--addr") {
        cmd.args(["--addr", "127.0.0.1:8787"]);
    }
    if !has("--data-dir") {
        cmd.args(["--data-dir", ".data"]);
    }
    if !has("--web-dir") {
        cmd.args(["--web-dir", "web/dist"]);
    }
    cmd.args(extra);
    run(&mut cmd)
}

fn test() -> Result<()> {
    ensure_component("rustfmt", &["fmt", "--version"])?;
    ensure_component("clippy", &["clippy", "--version"])?;
    ensure_target("wasm32-unknown-unknown")?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The protocol crate is shared with the browser: it must build for wasm32.
    run(cargo().args([
        "build",
        "-p",
        "confab-protocol",
        "--target",
        "wasm32-unknown-unknown",
    ]))?;
    // The end-to-end tests start this binary.
    run(cargo().args(["build", "-p", "confab-local", "--bin", "confab"]))?;
    run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    Ok(())
}

fn bench() -> Result<()> {
    run(cargo().args(["bench", "-p", "confab-tests", "--bench", "gateway"]))
}
