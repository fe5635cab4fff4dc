//! `confab`: Confab on one machine.

use clap::Parser;
use confab_functions::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Runs Confab locally: REST on /api, the socket on /ws, the web app on /.
#[derive(Parser, Debug)]
#[command(name = "confab", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    addr: SocketAddr,
    /// Directory of the SQLite database.
    #[arg(long, default_value = ".data")]
    data_dir: PathBuf,
    /// Directory of the built web app.
    #[arg(long, default_value = "web/dist")]
    web_dir: PathBuf,
    /// Run the AWS adapters against emulated AWS: DynamoDB at
    /// `CONFAB_AWS_ENDPOINT` (such as moto_server), the management API and
    /// Lambda's Invoke answered by this gateway.
    #[arg(long)]
    aws_emulated: bool,
    /// With auth off (CONFAB_AUTH=none), listen on an address other
    /// machines can reach and answer them. Anyone who reaches the gateway
    /// can then run the agent as you: only for a network that is yours alone.
    #[arg(long)]
    allow_remote_without_auth: bool,
    /// Print the Content-Security-Policy sources of the web app's inline
    /// scripts (from `--web-dir`'s index.html) and exit: what
    /// `cargo xtask deploy` gives CloudFront.
    #[arg(long)]
    print_script_hashes: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.print_script_hashes {
        let html = std::fs::read_to_string(args.web_dir.join("index.html"))?;
        println!(
            "{}",
            confab_local::gateway::inline_script_hashes(&html).join(" ")
        );
        return Ok(());
    }
    let config = Config::from_env()?;
    confab_local::run(
        confab_local::Options {
            addr: args.addr,
            data_dir: args.data_dir,
            web_dir: Some(args.web_dir),
            aws_emulated: args.aws_emulated,
            allow_remote_without_auth: args.allow_remote_without_auth,
        },
        config,
        confab_local::signal(),
        None,
    )
    .await
}
