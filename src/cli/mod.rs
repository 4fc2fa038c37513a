//! The `holdq` command line (SPEC section 8): one binary for the server,
//! the operator's database commands, and the maintainer's client commands.

mod client;
mod commands;
mod fetch;
pub mod logging;
mod render;
mod resumable;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// holdq: a package repository whose stable repository cannot be broken by an upload.
#[derive(Debug, Parser)]
#[command(name = "holdq", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How `serve` and `worker` write their log (on stderr); `HOLDQ_LOG` or
    /// `RUST_LOG` sets its filter (default: `warn,holdq=info`).
    #[arg(
        long,
        global = true,
        env = "HOLDQ_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: logging::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// The server's mirror status (`GET /api/v1/mirror/status`).
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API and holding queue.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run check workers for one platform against the server's database (scale-out).
    Worker {
        /// The platform whose queue to consume, as named in the config.
        #[arg(long)]
        platform: String,
        /// How many checks to run at once.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// The server to fetch archives from, for a worker on a machine that
        /// shares no disk with it; verdicts are then left to the servers.
        /// Without it, the worker reads the server's data directory.
        #[arg(long, env = "HOLDQ_SERVER")]
        server: Option<String>,
        /// A file holding the worker token (`holdq user add EMAIL --worker`),
        /// with --server; or `[worker] token_file` in the config, or
        /// `HOLDQ_TOKEN` in the environment.
        #[arg(
            long,
            env = "HOLDQ_TOKEN_FILE",
            requires = "server",
            conflicts_with = "token"
        )]
        token_file: Option<PathBuf>,
        /// The worker token itself: visible to every user of the machine in
        /// `ps`, so prefer --token-file or `HOLDQ_TOKEN` (a warning says so).
        #[arg(long, requires = "server")]
        token: Option<String>,
        #[command(flatten)]
        args: ServerArgs,
    },
    /// Make an archive from a directory holding package.toml, and check it as the server would.
    Pack {
        /// The package directory (its own name does not matter).
        dir: PathBuf,
        /// Output file or directory (default: ./NAME-VERSION.tar.gz).
        #[arg(short, long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Upload archives into the holding queue; prints each upload's id and queue position.
    Upload {
        /// Files of 8 MiB or more go over tus: a dropped connection is
        /// resumed by itself, and running the command again continues.
        #[arg(required_unless_present_any = ["list", "abort"])]
        files: Vec<PathBuf>,
        /// List your unfinished (resumable) uploads on the server.
        #[arg(long, conflicts_with_all = ["files", "abort"])]
        list: bool,
        /// End an unfinished upload (an id from --list) and free its space.
        #[arg(long, value_name = "ID", conflicts_with = "files")]
        abort: Option<String>,
        /// One upload group: checked against each other, accepted or
        /// rejected as a whole.
        #[arg(long)]
        together: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Download packages with their dependencies from stable, resolved as the server resolves (pins honoured): each unpacked into DIR/<name>/, and DIR/resolved.toml.
    Fetch {
        /// NAME or NAME@REQ (a semver requirement, e.g. "lib@^1.2").
        #[arg(required_unless_present = "locked", conflicts_with = "locked")]
        packages: Vec<String>,
        /// The directory to fetch into.
        #[arg(short, long, default_value = ".")]
        out: PathBuf,
        /// Fetch exactly the versions a previous run's resolved.toml names.
        #[arg(long)]
        locked: Option<PathBuf>,
        /// Where versions may come from: stable, or stable plus the testing channel (needs a token).
        #[arg(long, value_enum, default_value_t)]
        channel: fetch::Channel,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The holding queue, front first, with what each upload waits for.
    Queue {
        /// Only the uploads waiting on this platform.
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The pass mark: show, set (operators), history, simulate.
    Passmark {
        #[command(subcommand)]
        command: PassmarkCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a pending upload: halt its checks, reject it with the reason, tell its maintainers (operators).
    Cancel {
        upload: i64,
        #[arg(long)]
        why: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a failed check of an upload still being checked again, e.g. build@linux-x86_64 (operators).
    Retry {
        upload: i64,
        check: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Where a mirror stands: its primary, serial, lag, last contact, peers (`holdq mirror status`).
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// The check workers seen in the last minute: platform, host, current check, last heartbeat.
    Workers {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Platforms: list, pause (checks wait, nothing is lost), resume (operators).
    Platform {
        #[command(subcommand)]
        command: PlatformCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The state of an upload (by id) or of a package's uploads (by name); the queue when neither.
    Status {
        /// An upload id or a package name.
        target: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Mark a package obsolete: its dependents get a max-version pin and an email; it is removed once unused.
    Obsolete {
        name: String,
        /// Why the package is obsolete (required, shown wherever it is shown).
        #[arg(long, required_unless_present = "undo")]
        reason: Option<String>,
        /// A stable package to use instead.
        #[arg(long)]
        replacement: Option<String>,
        /// Show the dependents and pins that would result, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Undo the obsolescence (operators; not after removal).
        #[arg(long, conflicts_with_all = ["reason", "replacement", "dry_run"])]
        undo: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reverse dependencies of a stable package.
    Dependents {
        name: String,
        /// Everything that depends on it, directly or not.
        #[arg(long)]
        transitive: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Users and API tokens (on the server's machine, straight on its database).
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Owners of a package (on the server's machine, straight on its database).
    Owner {
        #[command(subcommand)]
        command: OwnerCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Emails (on the server's machine, with the server's config).
    Mail {
        #[command(subcommand)]
        command: MailCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What checks see and run as on this machine, with one probe run.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Internal: the outside of a check's sandbox, spawned by workers.
    #[command(name = "__sandbox", hide = true)]
    SandboxExec(crate::sandbox::exec::ExecArgs),
    /// Internal: the privileged step inside a check's sandbox.
    #[command(name = "__sandbox-init", hide = true)]
    SandboxInit(crate::sandbox::inner::InitArgs),
    /// Internal: the step that becomes a check's command.
    #[command(name = "__sandbox-drop", hide = true)]
    SandboxDrop(crate::sandbox::inner::DropArgs),
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// For each platform: the identity checks run as, the disk limit and
    /// how it is kept, the mounts in effect; then one probe run.
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and print their new API token (shown once).
    Add {
        email: String,
        /// Make the user an operator.
        #[arg(long, conflicts_with = "worker")]
        operator: bool,
        /// A platform worker's account: its token only fetches upload archives.
        #[arg(long)]
        worker: bool,
    },
    /// Print a new API token for an existing user (shown once).
    Token { email: String },
}

#[derive(Debug, Subcommand)]
pub enum PassmarkCommand {
    /// The pass mark in force.
    Show,
    /// Change one key, e.g. `threshold 0.8`, `weight.test 2`, `required.build false`,
    /// `platform.NAME.weight 0.5`, `platform.NAME.required true|false|default`,
    /// `revdeps.min_fraction 0.9`, `revdeps.max_dependents 50`.
    Set {
        key: String,
        value: String,
        #[arg(long)]
        why: String,
    },
    /// Every change: who, when, old, new, why.
    History,
    /// Re-score past verdicts under KEY VALUE changes and list the ones that would flip; changes nothing.
    Simulate {
        /// KEY VALUE pairs.
        #[arg(required = true, num_args = 2..)]
        changes: Vec<String>,
        /// Only verdicts given in this window, e.g. 7d.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlatformCommand {
    List,
    Pause { name: String },
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Send one sample of each email template to EMAIL through the configured transport.
    Test { email: String },
}

#[derive(Debug, Subcommand)]
pub enum OwnerCommand {
    /// Make a user a co-owner of a package.
    Add { name: String, email: String },
    /// Remove a user from a package's owners (never the last one).
    Remove { name: String, email: String },
}

/// Where the server's configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Config file (default: ./holdq.toml when present, else embedded defaults).
    #[arg(long, env = "HOLDQ_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [env: HOLDQ_LISTEN].
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Data directory [env: HOLDQ_DATA_DIR].
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL, sqlite:// or postgres:// [env: HOLDQ_DATABASE_URL];
    /// one with a password is visible in `ps`: use --database-url-file.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// A file whose first line is the database URL [env: HOLDQ_DATABASE_URL_FILE].
    #[arg(long, global = true, conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,
    /// Run as a read-only mirror following this primary server [env: HOLDQ_MIRROR_OF].
    #[arg(long, global = true, value_name = "URL")]
    pub mirror_of: Option<String>,
}

/// How a client command reaches the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL (default: the user config file, else http://127.0.0.1:8080).
    #[arg(long, env = "HOLDQ_SERVER")]
    pub server: Option<String>,
    /// API token (default: the user config file).
    #[arg(long, env = "HOLDQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command line; errors are printed on one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // No async runtime in the sandbox's steps: they fork, and must do so
    // from a single-threaded process.
    let status = match &cli.command {
        Command::SandboxExec(args) => Some(crate::sandbox::exec::exec(args.clone())),
        Command::SandboxInit(args) => Some(crate::sandbox::inner::init(args.clone())),
        Command::SandboxDrop(args) => Some(crate::sandbox::inner::drop_to_command(args.clone())),
        _ => None,
    };
    if let Some(status) = status {
        return ExitCode::from(u8::try_from(status).unwrap_or(1));
    }
    if matches!(cli.command, Command::Serve { .. } | Command::Worker { .. }) {
        logging::init(cli.log_format);
    } else {
        quiet_on_closed_pipe();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A command whose output goes to `head` ends quietly when the pipe
/// closes, with the status a shell expects (128 + SIGPIPE), as Unix tools
/// do; `print!` panics then, and this hook turns that panic into the exit.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
