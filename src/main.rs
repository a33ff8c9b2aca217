//! toolwatch: a time-series store and alerting engine for MCP telemetry, in one binary.

mod auth;
mod build_info;
mod config;
mod mcp_stdio;
mod proxy_stdio;
mod selfscrape;
mod server;
mod telemetry;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};
use config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "toolwatch",
    version = env!("CARGO_PKG_VERSION"),
    // `--version` prints Prometheus' shape (build_info.rs), which clap's own flag cannot.
    disable_version_flag = true,
    about = "Time-series store and alerting engine for MCP telemetry.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Print the version, branch, revision, build date and platform, as Prometheus does.
    #[arg(long, short = 'V')]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Work with Prometheus rule files.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Serve MCP on stdin/stdout (what an agent launches): relayed to a running toolwatch, or
    /// with --data-dir straight from a store this process opens.
    Mcp(McpArgs),
    /// Run a stdio MCP server behind a relay that records per-tool metrics into a running
    /// toolwatch: `toolwatch proxy --target NAME -- CMD ARGS...`.
    Proxy(proxy_stdio::ProxyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `toolwatch man > toolwatch.1`.
    Man,
    /// Print every HTTP route with the scope a token needs for it (`open`: none), one per line,
    /// as the server with this config would mount them; exits 1 if a route declares no scope.
    /// (docs/security.md)
    #[command(hide = true)]
    Routes {
        /// Config file (proxies add routes; tokens are checked as at start).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Args, Clone, Default)]
pub struct McpArgs {
    /// The running toolwatch to relay to (its /mcp). Ignored with --data-dir.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9201")]
    pub url: String,
    /// Bearer token for --url. Shows in `ps` to every user of this host: prefer --token-file
    /// or the TOOLWATCH_TOKEN environment variable.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the bearer token for --url (trailing whitespace trimmed). Without --token
    /// and --token-file, TOOLWATCH_TOKEN is used when set.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Open this data directory instead of relaying (no toolwatch server may be using it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Config file for --data-dir mode (query limits, mcp section, rule files are not run).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Check rule files for syntax and PromQL errors, like `promtool check rules`.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests in promtool's format, like `promtool test rules`.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Address to serve HTTP on (remote-write, query API, /metrics, /-/healthy, /-/ready).
    /// Overrides `listen` from the config file. Default: 127.0.0.1:9201.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Directory for the WAL and blocks; locked while the server runs. Overrides `data_dir`
    /// from the config file. Default: ./data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// YAML config file (see docs/configuration.md). Flags given on the command line win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if cli.version {
        print!("{}", build_info::version_text());
        return;
    }
    let args = match cli.cmd {
        Some(Cmd::Serve(a)) => a,
        Some(Cmd::Rules(RulesCmd::Check { files })) => std::process::exit(check_rules(&files)),
        Some(Cmd::Rules(RulesCmd::Test { files })) => std::process::exit(test_rules(&files)),
        Some(Cmd::Proxy(a)) => match proxy_stdio::run(a) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("toolwatch proxy: {e:#}");
                std::process::exit(1);
            }
        },
        Some(Cmd::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "toolwatch", &mut std::io::stdout());
            return;
        }
        Some(Cmd::Man) => {
            let page = clap_mangen::Man::new(Cli::command()).date(build_info::build_day());
            if let Err(e) = page.render(&mut std::io::stdout()) {
                eprintln!("toolwatch man: {e}");
                std::process::exit(1);
            }
            return;
        }
        Some(Cmd::Routes { config }) => match print_routes(config.as_deref()) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("toolwatch routes: {e:#}");
                std::process::exit(1);
            }
        },
        Some(Cmd::Mcp(a)) => {
            if let Err(e) = mcp_stdio::run(a) {
                eprintln!("toolwatch mcp: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        None => cli.serve,
    };
    if let Err(e) = run(args) {
        eprintln!("toolwatch: {e:#}");
        std::process::exit(1);
    }
}

/// The bearer token a client subcommand sends: `--token`, else the contents of `--token-file`,
/// else `TOOLWATCH_TOKEN`, else none. An empty file is an error (a token was meant).
pub fn client_token(token: Option<String>, token_file: Option<&std::path::Path>) -> Result<Option<String>> {
    if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(p) = token_file {
        let t = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("reading --token-file {}: {e}", p.display()))?
            .trim()
            .to_string();
        if t.is_empty() {
            anyhow::bail!("--token-file {} is empty", p.display());
        }
        return Ok(Some(t));
    }
    Ok(std::env::var("TOOLWATCH_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// `toolwatch routes`: every route of the app with its declared scope; 1 if any has none.
fn print_routes(config: Option<&std::path::Path>) -> Result<i32> {
    let cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let routes = rt.block_on(async { server::app_routes(&cfg) })?;
    let mut undeclared = 0;
    for (path, access) in routes {
        match access {
            Some(a) => println!("{path} {}", a.as_str()),
            None => {
                undeclared += 1;
                println!("{path} undeclared");
            }
        }
    }
    if undeclared > 0 {
        eprintln!("toolwatch routes: {undeclared} route(s) declare no scope (mount them with one in src/server.rs)");
        return Ok(1);
    }
    Ok(0)
}

/// Checks each file; prints promtool's report shape; returns the exit code (1 if any failed).
fn check_rules(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for f in files {
        println!("Checking {}", f.display());
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("  FAILED:\n{}: {e}", f.display());
                failed = true;
                continue;
            }
        };
        match toolwatch_alerting::rulefile::parse_rule_file(f, &text) {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                println!("  SUCCESS: {n} rules found");
            }
            Err(e) => {
                eprintln!("  FAILED:\n{e}");
                failed = true;
            }
        }
        println!();
    }
    i32::from(failed)
}

/// Runs unit-test files; prints promtool's report shape; returns the exit code (1 if any failed).
fn test_rules(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for f in files {
        println!("Unit Testing:  {}", f.display());
        match toolwatch_alerting::unittest::run_test_file(f) {
            Ok(()) => println!("  SUCCESS"),
            Err(errs) => {
                println!("  FAILED:");
                for e in errs {
                    println!("{e}");
                }
                failed = true;
            }
        }
        println!();
    }
    i32::from(failed)
}

fn run(args: ServeArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    // rmcp logs every client session it opens (one per probe) at info; keep that out unless
    // asked for.
    let level =
        if cfg.log_level.contains("rmcp") { cfg.log_level.clone() } else { format!("{},rmcp=warn", cfg.log_level) };
    init_logging(&level);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(server::run(cfg))
}

/// Logs to stderr at `RUST_LOG`, else `default_filter`; colours only on a terminal (a log file
/// or journald should not hold escape codes).
pub fn init_logging(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
