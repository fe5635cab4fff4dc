//! `cargo xtask dev | test | bench`: the project's commands. Each installs
//! what it needs when it is missing, so they work on a fresh machine.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <dev | test | bench | load | deploy> [args]

  dev     build the web app and run Confab at http://127.0.0.1:8787 (demo agent, SQLite in .data/);
          extra args go to the gateway, e.g. `cargo xtask dev -- --addr 0.0.0.0:8787`;
          `cargo xtask dev --aws` runs the AWS adapters against a local moto server instead
  test    formatting, lints, the wasm32 builds, the web app, the SAM template, the Lambda
          builds, and every test (browser tests and emulated AWS included)
  bench   measure the local gateway and emulated AWS, and write docs/benchmarks.md
  load    many clients against one release `confab` beside a bare broadcast server
          (`--scenario idle|turns|fanout|sessions` for one); writes docs/benchmarks.md
  deploy  build and deploy to AWS with SAM, upload the web app and its config.json
          (see docs/deploy.md); extra args go to `sam deploy`";

/// The PyPI tools of the tests, pinned (tests/src/moto.rs names the same):
/// the AWS work's, and Schemathesis, the API fuzzer.
const AWS_TOOLS: [(&str, &str); 4] = [
    ("moto_server", "moto[server]==5.2.1"),
    ("cargo-lambda", "cargo-lambda==1.9.2"),
    ("cfn-lint", "cfn-lint==1.58.0"),
    ("schemathesis", "schemathesis==4.32.5"),
];

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
        "load" => load(&rest),
        "deploy" => deploy(&rest),
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
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // A CI run starts from nothing and never builds again: incremental
    // caches would only cost it time and disk.
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// Runs a command, failing with its name when it fails; says how long it took.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let started = std::time::Instant::now();
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    eprintln!(
        "xtask: {:.0} s for {}",
        started.elapsed().as_secs_f64(),
        cmd.get_program().to_string_lossy()
    );
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// `cargo install` of a tool with a cheap release profile: the tools' own
/// fat-LTO profiles cost a fresh machine about ten minutes more, for
/// programs that run for seconds.
fn cargo_install(args: &[&str]) -> Result<()> {
    run(cargo()
        .arg("install")
        .args(args)
        .env("CARGO_PROFILE_RELEASE_LTO", "off")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false"))
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
        cargo_install(&["wasm-bindgen-cli", "--version", &wanted])?;
    }
    if tool_version("trunk").is_none_or(|v| !v.ends_with("0.21.14")) {
        cargo_install(&["trunk", "--version", "0.21.14", "--locked"])?;
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

/// An npm package at `version` under target/tools (its `file` there
/// tells that it is installed).
fn ensure_npm(package: &str, version: &str, file: &str) -> Result<()> {
    let tools = root().join("target/tools");
    let dir = tools.join("node_modules").join(package);
    let installed = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    if dir.join(file).is_file() && installed.contains(&format!("\"version\": \"{version}\"")) {
        return Ok(());
    }
    std::fs::create_dir_all(&tools)?;
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&tools)
        .arg(format!("{package}@{version}")))
    .with_context(|| format!("installing {package} {version} from npm (needs node and npm)"))
}

/// The CommonMark spec, whose examples the web app's Markdown test runs.
fn ensure_commonmark_spec() -> Result<()> {
    ensure_npm("commonmark-spec", "0.31.2", "spec.txt")
}

/// A certified OpenID provider, which the sign-in tests run
/// (`tests/oidc/provider.mjs`).
fn ensure_oidc_provider() -> Result<()> {
    ensure_npm("oidc-provider", "9.13.3", "lib/index.js")
}

/// highlight.js, which the web app loads when a code block first appears;
/// Trunk copies it from target/tools.
fn ensure_highlighter() -> Result<()> {
    ensure_npm("@highlightjs/cdn-assets", "11.11.1", "highlight.min.js")
}

/// Builds the web app into web/dist (optimised by wasm-opt).
fn build_web() -> Result<()> {
    ensure_web_tools()?;
    ensure_highlighter()?;
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

/// A virtual environment under target/ with moto, cargo-lambda (which
/// brings zig) and cfn-lint; returns its `bin` folder.
fn ensure_aws_tools() -> Result<PathBuf> {
    let venv = root().join("target/aws-venv");
    let bin = venv.join("bin");
    if !bin.join("pip").is_file()
        && !succeeds(Command::new("python3").args(["-m", "venv"]).arg(&venv))
    {
        // Debian's own Python keeps venv in a separate package.
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        run(Command::new("apt-get").arg("update").envs(env))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "python3-venv"])
            .envs(env))?;
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let missing: Vec<&str> = AWS_TOOLS
        .iter()
        .filter(|(b, _)| !bin.join(b).is_file())
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        run(Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&missing))
        .context("installing the AWS tools from PyPI")?;
    }
    Ok(bin)
}

/// PATH with the AWS tools first.
fn aws_path(bin: &Path) -> Result<std::ffi::OsString> {
    Ok(std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )?)
}

/// `cargo lambda build --release --arm64`: every function, as SAM builds it.
fn build_lambdas(bin: &Path) -> Result<()> {
    run(cargo()
        .args([
            "lambda",
            "build",
            "--release",
            "--arm64",
            "-p",
            "confab-functions",
            "--lambda-dir",
            "target/lambda",
        ])
        .env("PATH", aws_path(bin)?))
}

/// Starts `moto_server` on a free port; it stops with the returned guard.
struct Moto(std::process::Child, String);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto(bin: &Path) -> Result<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // One request at a time: transactions isolated as in DynamoDB.
    let child = Command::new(bin.join("python"))
        .arg(root().join("tests/moto_server.py"))
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting moto_server")?;
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            bail!("moto_server did not listen within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(Moto(child, format!("http://127.0.0.1:{port}")))
}

fn dev(extra: &[String]) -> Result<()> {
    build_web()?;
    let aws = extra.iter().any(|a| a == "--aws");
    let extra: Vec<String> = extra.iter().filter(|a| *a != "--aws").cloned().collect();
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-p", "confab-local"]);
    let _moto = if aws {
        let bin = ensure_aws_tools()?;
        let moto = start_moto(&bin)?;
        eprintln!("xtask: emulated AWS: DynamoDB on moto at {}", moto.1);
        cmd.args(["--features", "aws"])
            .env("CONFAB_AWS_ENDPOINT", &moto.1);
        Some(moto)
    } else {
        None
    };
    cmd.args(["--bin", "confab", "--"]);
    if aws {
        cmd.arg("--aws-emulated");
    }
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
    cmd.args(&extra);
    run(&mut cmd)
}

fn test() -> Result<()> {
    let started = std::time::Instant::now();
    ensure_component("rustfmt", &["fmt", "--version"])?;
    ensure_component("clippy", &["clippy", "--version"])?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Every binary and test once, with the features the tests run with: the
    // end-to-end tests start `confab` (with the AWS adapters, which the test
    // crate's dev-dependency turns on), so `cargo test` below builds nothing
    // again.
    run(cargo().args(["build", "--workspace", "--bins", "--tests"]))?;
    let aws = ensure_aws_tools()?;
    run(Command::new(aws.join("cfn-lint")).arg("infra/template.yaml"))?;
    // The web app, and with it the protocol crate for wasm32 (it is shared
    // with the browser, so it must build there).
    build_web()?;
    ensure_browser()?;
    ensure_commonmark_spec()?;
    ensure_oidc_provider()?;
    run(cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("PATH", aws_path(&aws)?))?;
    // The end-to-end suites again, in emulated-AWS mode: the executables
    // just built, run as they are (a narrower `cargo test` would resolve
    // other features and compile most of the workspace again).
    for exe in test_executables(&["e2e_turns", "e2e_safety", "e2e_agents", "sign_in"])? {
        run(Command::new(exe)
            .current_dir("tests")
            .env("CONFAB_TEST_AWS", "1"))?;
    }
    build_lambdas(&aws)?;
    eprintln!(
        "xtask: test passed in {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// The executables of the named integration tests, as `cargo test
/// --workspace` builds them (it builds nothing when they are up to date).
fn test_executables(names: &[&str]) -> Result<Vec<PathBuf>> {
    let out = cargo()
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("asking cargo for the test executables")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed with {}", out.status);
    }
    let mut found = Vec::new();
    for line in out.stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, true, Some(exe)) =
            (is_test, names.contains(&name), msg["executable"].as_str())
        {
            found.push(PathBuf::from(exe));
        }
    }
    if found.len() != names.len() {
        bail!(
            "cargo built {} of the test executables {names:?}",
            found.len()
        );
    }
    Ok(found)
}

fn bench() -> Result<()> {
    build_web()?;
    ensure_browser()?;
    let aws = ensure_aws_tools()?;
    build_lambdas(&aws)?;
    run(cargo()
        .args([
            "bench",
            "-p",
            "confab-tests",
            "--bench",
            "gateway",
            "--bench",
            "aws",
        ])
        .env("PATH", aws_path(&aws)?))
}

/// `cargo xtask load`: builds `confab`, the load tool and the baseline
/// server for release, and runs the scenarios (docs/benchmarks.md).
fn load(extra: &[String]) -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "confab-local",
        "--bin",
        "confab",
    ]))?;
    run(cargo().args(["build", "--release", "-p", "confab-load", "--bins"]))?;
    let release = root().join("target/release");
    run(Command::new(release.join("confab-load"))
        .arg("--confab")
        .arg(release.join("confab"))
        .arg("--baseline")
        .arg(release.join("confab-baseline"))
        .arg("--docs")
        .arg(root().join("docs/benchmarks.md"))
        .args(extra))
}

/// `cargo xtask deploy`: `sam build` and `sam deploy` of infra/template.yaml,
/// then the web app and its config.json to the stack's bucket. Needs AWS
/// credentials in the environment; docs/deploy.md. No secret is ever on a
/// command line: the stack generates the token secret in Secrets Manager,
/// and the provider's key is named, not given.
fn deploy(extra: &[String]) -> Result<()> {
    let stack = std::env::var("CONFAB_STACK").unwrap_or_else(|_| "confab".into());
    build_web()?;
    let bin = ensure_aws_tools()?;
    for (tool, pkg) in [("sam", "aws-sam-cli"), ("aws", "awscli")] {
        if !bin.join(tool).is_file() {
            run(Command::new(bin.join("pip")).args(["install", "--quiet", pkg]))?;
        }
    }
    let path = aws_path(&bin)?;
    run(Command::new(bin.join("sam"))
        .args([
            "build",
            "--template-file",
            "infra/template.yaml",
            "--build-dir",
            "target/sam",
            "--beta-features",
        ])
        .env("PATH", &path)
        .env("SAM_CLI_BETA_RUST_CARGO_LAMBDA", "1"))?;
    // The web app's inline loader, by hash, for CloudFront's
    // Content-Security-Policy (the local gateway computes the same).
    let hashes = cargo()
        .args([
            "run",
            "--quiet",
            "-p",
            "confab-local",
            "--bin",
            "confab",
            "--",
            "--web-dir",
            "web/dist",
            "--print-script-hashes",
        ])
        .output()
        .context("computing the web app's script hashes")?;
    if !hashes.status.success() {
        bail!("confab --print-script-hashes failed");
    }
    let hashes = String::from_utf8(hashes.stdout)?.trim().to_string();
    let mut sam = Command::new(bin.join("sam"));
    sam.args([
        "deploy",
        "--template-file",
        "target/sam/template.yaml",
        "--stack-name",
        &stack,
        "--capabilities",
        "CAPABILITY_IAM",
        "--resolve-s3",
        "--no-fail-on-empty-changeset",
        "--parameter-overrides",
    ])
    .arg(format!("WebScriptHashes={hashes}"));
    // Further `Key=Value` overrides (AgentProvider=openai ...) and flags.
    sam.args(extra).env("PATH", &path);
    run(&mut sam)?;
    let out = Command::new(bin.join("aws"))
        .args([
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            &stack,
            "--query",
            "Stacks[0].Outputs",
            "--output",
            "json",
        ])
        .output()
        .context("reading the stack's outputs")?;
    if !out.status.success() {
        bail!("aws cloudformation describe-stacks failed");
    }
    let outputs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let output = |key: &str| -> Result<String> {
        outputs
            .iter()
            .find(|o| o["OutputKey"] == key)
            .and_then(|o| o["OutputValue"].as_str())
            .map(str::to_string)
            .with_context(|| format!("the stack has no output {key}"))
    };
    let bucket = output("WebBucketName")?;
    let mut config = serde_json::json!({
        "apiUrl": output("ApiUrl")?,
        "socketUrl": output("SocketUrl")?,
    });
    // How the web app signs people in (the stack's Cognito user pool, or
    // the provider the deployer named).
    let issuer = output("OidcIssuer").unwrap_or_default();
    if !issuer.is_empty() {
        let mut auth = serde_json::json!({
            "issuer": issuer,
            "clientId": output("OidcClientId")?,
            "scopes": "openid profile email",
        });
        if let Ok(domain) = output("SignInDomain") {
            // Cognito publishes no end_session_endpoint; its /logout is it.
            auth["logoutUrl"] = format!("{domain}/logout").into();
        }
        config["auth"] = auth;
    }
    let config_file = root().join("target/config.json");
    std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
    let aws = || {
        let mut c = Command::new(bin.join("aws"));
        c.env("PATH", &path);
        c
    };
    run(aws()
        .args(["s3", "sync", "web/dist"])
        .arg(format!("s3://{bucket}"))
        .args(["--delete", "--exclude", "config.json"]))?;
    run(aws()
        .args(["s3", "cp"])
        .arg(&config_file)
        .arg(format!("s3://{bucket}/config.json"))
        .args([
            "--content-type",
            "application/json",
            "--cache-control",
            "no-store",
        ]))?;
    run(aws().args([
        "cloudfront",
        "create-invalidation",
        "--distribution-id",
        &output("WebDistributionId")?,
        "--paths",
        "/*",
    ]))?;
    println!("Confab is deployed. Open {}", output("WebUrl")?);
    match output("UserPoolId") {
        Ok(pool) => println!(
            "People sign in with the stack's Cognito user pool {pool}. Add one with:\n  \
             aws cognito-idp admin-create-user --user-pool-id {pool} --username you@example.com \\\n    \
             --user-attributes Name=email,Value=you@example.com Name=email_verified,Value=true Name=name,Value='Your Name'\n\
             (Cognito emails them a temporary password; they choose their own at first sign-in.)"
        ),
        Err(_) if !issuer.is_empty() => println!("People sign in at {issuer}."),
        Err(_) => println!(
            "Users' tokens are HS256, signed with the secret {} (aws secretsmanager get-secret-value --secret-id <it>).",
            output("JwtSecretArn")?
        ),
    }
    Ok(())
}
