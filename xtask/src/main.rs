//! `cargo xtask dev | test | bench`: the project's commands. Each installs
//! what it needs when it is missing, so they work on a fresh machine.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <dev | test | bench> [args]

  dev    build the web app and run Confab at http://127.0.0.1:8787 (demo agent, SQLite in .data/);
         extra args go to the gateway, e.g. `cargo xtask dev -- --addr 0.0.0.0:8787`
  test   formatting, lints, the wasm32 builds, the web app, and every test (browser tests included)
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

/// The exact wasm-bindgen version the lockfile uses: Trunk only uses a
/// `wasm-bindgen` on PATH of that version (otherwise it downloads one).
fn wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string("Cargo.lock").context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
        {
            return Ok(v.trim_matches('"').to_string());
        }
    }
    bail!("Cargo.lock names no wasm-bindgen version")
}

fn tool_version(bin: &str) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The wasm32 target, wasm-bindgen-cli of the lockfile's version, Trunk.
fn ensure_web_tools() -> Result<()> {
    ensure_target("wasm32-unknown-unknown")?;
    let wanted = wasm_bindgen_version()?;
    if tool_version("wasm-bindgen").is_none_or(|v| !v.ends_with(&wanted)) {
        // Not --locked: its lockfile names a crate version this registry lacks.
        run(cargo().args(["install", "wasm-bindgen-cli", "--version", &wanted]))?;
    }
    if tool_version("trunk").is_none_or(|v| !v.ends_with("0.21.14")) {
        run(cargo().args(["install", "trunk", "--version", "0.21.14", "--locked"]))?;
    }
    Ok(())
}

/// binaryen's wasm-opt from npm (a build that reads current rustc output),
/// under target/tools; returns the folder of its executables.
fn ensure_wasm_opt() -> Result<PathBuf> {
    let tools = root().join("target/tools");
    let bin = tools.join("node_modules/.bin");
    if tool_version(bin.join("wasm-opt").to_str().unwrap_or(""))
        .is_some_and(|v| v.contains("version 132"))
    {
        return Ok(bin);
    }
    std::fs::create_dir_all(&tools)?;
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&tools)
        .arg("binaryen@132"))
    .context("installing binaryen 132 from npm (needs node and npm)")?;
    Ok(bin)
}

/// Builds the web app into web/dist (optimised by wasm-opt).
fn build_web() -> Result<()> {
    ensure_web_tools()?;
    let bin = ensure_wasm_opt()?;
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    // Panic locations name source files: keep build machines' paths out.
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let flags = format!(
        "--remap-path-prefix={}=/cargo --remap-path-prefix={}=/confab",
        home.display(),
        root().display()
    );
    run(Command::new("trunk")
        .args(["build", "--release", "--offline"])
        .env("PATH", path)
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", flags))
}

/// Chromium and ChromeDriver for the browser tests, from Debian's packages.
fn ensure_browser() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return Ok(());
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    run(Command::new("apt-get").arg("update").envs(env))
        .context("the browser tests need Chromium: apt-get must work (run as root)")?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ])
        .envs(env))
}

fn dev(extra: &[String]) -> Result<()> {
    build_web()?;
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
    // The end-to-end tests start this binary; the browser tests also need
    // the built web app and a browser.
    run(cargo().args(["build", "-p", "confab-local", "--bin", "confab"]))?;
    build_web()?;
    ensure_browser()?;
    run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    Ok(())
}

fn bench() -> Result<()> {
    build_web()?;
    ensure_browser()?;
    run(cargo().args(["bench", "-p", "confab-tests", "--bench", "gateway"]))
}
