//! `datasandbox`: the one binary. This is the only place that reads argv and the environment,
//! sets up logging and turns errors into exit codes:
//!
//! * 0 — success;
//! * 1 — the request or the input was wrong (a 4xx from the API, an invalid spec);
//! * 2 — the server failed or could not be reached.

mod audit_cli;
mod client;
mod deploy_cli;
mod home_sync;
mod launcher;
mod printing;
mod server;
mod watermark;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "datasandbox", version, about = "Isolated, audited workspaces for sensitive data")]
struct Cli {
    /// The data directory: spec, metadata, objects, audit trail and the control socket.
    #[arg(long, global = true, env = "DATASANDBOX_DATA_DIR", default_value = ".datasandbox")]
    data_dir: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
pub struct SpecArgs {
    /// The environment spec; default `<data-dir>/datasandbox.toml`.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Overrides a spec parameter for this run, like `cdk -c` (repeatable): `-c fleet_type=ALWAYS_ON`.
    #[arg(short = 'c', long = "context", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(clap::Args, Clone)]
pub struct EndpointArgs {
    /// Call a remote API (`http://host:port`) instead of the local control socket.
    #[arg(long, env = "DATASANDBOX_ENDPOINT")]
    endpoint: Option<String>,
    /// Bearer token for `--endpoint` (from `identity:CreateSessionToken`).
    #[arg(long, env = "DATASANDBOX_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Deploy the spec (writing the defaults on a fresh host) and serve in the foreground.
    Up(SpecArgs),
    /// Serve an existing data directory in the foreground, for service managers.
    Serve(SpecArgs),
    /// Check a spec and print every problem, without starting anything.
    Validate(SpecArgs),
    /// Compare the spec with the running environment: each resource's create, update,
    /// replace (with the immutable fields that force it) or delete, by stack.
    Diff(SpecArgs),
    /// Apply the spec to the running environment, stack by stack, printing stack events; a
    /// failure rolls every change back.
    Deploy(SpecArgs),
    /// Delete the environment's resources in reverse order, keeping (and naming) the retained
    /// ones: keys, buckets that hold data, the policies.
    Destroy {
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Call any action: `datasandbox call storage:ListBuckets --input '{}'`.
    Call {
        /// The action, `service:Action`.
        action: String,
        /// The request as JSON, with AWS's member names.
        #[arg(long, default_value = "{}")]
        input: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Copy files to and from storage: `datasandbox storage cp ./data.csv ds://bucket/key`.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// A single-use streaming URL that opens a session for a user (prints the URL).
    StreamingUrl {
        /// The user, 2..=32 characters.
        #[arg(long)]
        user: String,
        /// The stack; by default the only one there is.
        #[arg(long)]
        stack: Option<String>,
        /// How long the URL can be opened, in seconds (1..=604800).
        #[arg(long, default_value_t = 300)]
        validity: u32,
        #[arg(long)]
        application: Option<String>,
    },
    /// The sessions of a stack (PENDING and ACTIVE).
    Sessions {
        /// The stack; by default the only one there is.
        #[arg(long)]
        stack: Option<String>,
    },
    /// Sandbox instances.
    Instances {
        #[command(subcommand)]
        command: InstancesCommand,
    },
    /// Images: a read-only root filesystem and an application catalog.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// AppStream-style usage reports.
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
    },
    /// Inside an instance: keep the home folder and the user's home prefix the same.
    #[command(hide = true)]
    HomeSync,
    /// Inside a streaming instance: ask for the session's notebook (writes `session.json`,
    /// waits for `session_url.txt` or `session_error.json`).
    Launcher,
    /// Inside a pixel-streamed instance: draw the user, the session and the time into the display.
    #[command(hide = true)]
    Watermark,
    /// Read the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Copy a local file to `ds://bucket/key`, or an object to a local file (`-` is stdout).
    Cp {
        source: String,
        destination: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Subcommand)]
enum InstancesCommand {
    /// The instances that have not ended.
    List,
    /// Start an instance (fleets do this for sessions; this is for operators and tests).
    Create {
        #[arg(long)]
        user: Option<String>,
        #[arg(long = "type")]
        instance_type: Option<String>,
        #[arg(long)]
        image: Option<String>,
    },
    /// Stop an instance and remove everything it had on the host.
    Terminate { instance_id: String },
    /// Run a command inside an instance as its workspace user (audited as you).
    Exec {
        instance_id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build an image from a recipe: `base` (a root on the host's own packages), `desktop` (adds
    /// the display and a kiosk browser for pixel streaming) or `notebook` (adds JupyterLab from
    /// PyPI). What the image adds comes from the spec's `[images.<name>]`.
    Build {
        recipe: String,
        /// The image's name; by default the spec's `image_name` for `base` and `desktop`,
        /// `datasandbox-notebook` for `notebook`.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum ReportsCommand {
    /// Write one day's session and application reports to the `<env>-reports` bucket.
    Generate {
        /// The UTC day, like 2026-11-28.
        #[arg(long)]
        day: String,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// The newest records matching every given filter, one JSON record per line.
    Lookup {
        #[arg(long)]
        event_name: Option<String>,
        #[arg(long)]
        event_source: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        correlation_id: Option<String>,
        #[arg(long)]
        resource: Option<String>,
        /// RFC 3339 time, like 2026-11-29T00:00:00Z.
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long, default_value_t = 50)]
        max: u32,
        /// Continue from the token a previous page printed.
        #[arg(long)]
        next_token: Option<String>,
    },
    /// Check the trail's integrity offline, like `aws cloudtrail validate-logs`.
    Validate {
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        verbose: bool,
        /// A copy of the trail; default `<data-dir>/trail`.
        #[arg(long)]
        trail_dir: Option<PathBuf>,
        /// The trail's public key (64 hex digits in a file); default: the key the trail holds.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The trail's witness (`audit.witness`: copies of its checkpoints and digests on
        /// another file system); shows a deleted tail the trail alone cannot.
        #[arg(long)]
        witness: Option<PathBuf>,
    },
    /// Run one read-only SQL SELECT over the audit index (tables `events`, `event_resources`).
    Query {
        sql: String,
        #[arg(long)]
        json: bool,
    },
    /// One timeline: a person's, a session's or a correlation id's actions, in order.
    Trace {
        #[arg(long, group = "who")]
        user: Option<String>,
        #[arg(long, group = "who")]
        session: Option<String>,
        #[arg(long, group = "who")]
        correlation_id: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the audit index from the trail's files.
    Reindex,
}

fn main() -> ExitCode {
    // The sandbox's own entry points run before anything else: the helper must still be
    // single-threaded when it forks into the instance's pid namespace.
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("sandbox-helper") => return exit_code(sandbox::helper::helper_main()),
        Some("sandbox-init") => return exit_code(sandbox::helper::init_main(after_dashes(&args))),
        Some("sandbox-exec") => return exit_code(sandbox::helper::exec_main(after_dashes(&args))),
        Some("session-agent") => return home_sync::session_agent(),
        _ => {}
    }
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}

fn after_dashes(args: &[String]) -> &[String] {
    args.iter().position(|a| a == "--").map_or(&[][..], |at| &args[at + 1..])
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Up(args) => server::run(&cli.data_dir, &args, server::Mode::Up).await,
        Command::Serve(args) => server::run(&cli.data_dir, &args, server::Mode::Serve).await,
        Command::Validate(args) => server::validate(&cli.data_dir, &args),
        Command::Diff(args) => deploy_cli::diff(&cli.data_dir, &args).await,
        Command::Deploy(args) => deploy_cli::deploy(&cli.data_dir, &args).await,
        Command::Destroy { yes } => deploy_cli::destroy(&cli.data_dir, yes).await,
        Command::Call { action, input, endpoint } => client::call_command(&cli.data_dir, &endpoint, &action, &input).await,
        Command::Storage { command: StorageCommand::Cp { source, destination, endpoint } } => {
            client::copy(&cli.data_dir, &endpoint, &source, &destination).await
        }
        Command::Audit { command } => audit_cli::run(&cli.data_dir, command).await,
        Command::HomeSync => home_sync::run().await,
        Command::Launcher => launcher::run().await,
        Command::Watermark => tokio::task::spawn_blocking(watermark::run).await.unwrap_or(ExitCode::FAILURE),
        Command::StreamingUrl { user, stack, validity, application } => {
            match client::streaming_url(&cli.data_dir, &user, stack.as_deref(), validity, application.as_deref()).await {
                Ok(url) => {
                    println!("{url}");
                    ExitCode::SUCCESS
                }
                Err(err) => client::fail(err),
            }
        }
        Command::Sessions { stack } => client::finish(client::sessions(&cli.data_dir, stack.as_deref()).await),
        Command::Instances { command } => {
            let local = EndpointArgs { endpoint: None, token: None };
            let (action, input) = match command {
                InstancesCommand::List => ("streaming:DescribeInstances", serde_json::json!({})),
                InstancesCommand::Create { user, instance_type, image } => {
                    let mut input = serde_json::json!({});
                    for (member, value) in [("UserId", user), ("InstanceType", instance_type), ("ImageName", image)] {
                        if let Some(value) = value {
                            input[member] = serde_json::json!(value);
                        }
                    }
                    ("streaming:CreateInstance", input)
                }
                InstancesCommand::Terminate { instance_id } => {
                    ("streaming:TerminateInstance", serde_json::json!({ "InstanceId": instance_id }))
                }
                InstancesCommand::Exec { instance_id, command } => {
                    let input = serde_json::json!({ "InstanceId": instance_id, "Command": command });
                    return match client::call(&cli.data_dir, &local, "streaming:ExecInInstance", bytes::Bytes::from(input.to_string()))
                        .await
                    {
                        Ok(out) => {
                            print!("{}", out["Stdout"].as_str().unwrap_or_default());
                            eprint!("{}", out["Stderr"].as_str().unwrap_or_default());
                            exit_code(out["ExitCode"].as_i64().unwrap_or(1) as i32)
                        }
                        Err(err) => client::fail(err),
                    };
                }
            };
            client::call_command(&cli.data_dir, &local, action, &input.to_string()).await
        }
        Command::Image { command: ImageCommand::Build { recipe, name } } => build_image(&cli.data_dir, &recipe, name.as_deref()),
        Command::Reports { command: ReportsCommand::Generate { day } } => {
            let input = serde_json::json!({ "Day": day }).to_string();
            client::call_command(&cli.data_dir, &EndpointArgs { endpoint: None, token: None }, "audit:GenerateUsageReports", &input).await
        }
    }
}

fn build_image(data_dir: &std::path::Path, recipe: &str, name: Option<&str>) -> ExitCode {
    // The spec says what each image adds; without one, the embedded defaults do.
    let spec_text = std::fs::read_to_string(data_dir.join("datasandbox.toml")).unwrap_or_else(|_| model::spec::default_spec_text());
    let spec = match model::spec::Spec::parse(&spec_text, &[]) {
        Ok(spec) => spec,
        Err(err) => {
            eprintln!("error: in the spec: {err}");
            return ExitCode::from(1);
        }
    };
    let name = name.map(str::to_owned).unwrap_or_else(|| match recipe {
        "notebook" => "datasandbox-notebook".to_owned(),
        _ => spec.image_name.clone(),
    });
    let packages = spec.images.iter().find(|i| i.name == name && i.recipe == recipe).map(|i| i.python_packages.clone()).unwrap_or_default();
    let cache = std::env::var_os("DATASANDBOX_CACHE_DIR").map_or_else(|| sandbox::image::DEFAULT_CACHE.into(), std::path::PathBuf::from);
    let Some(recipe) = sandbox::image::Recipe::named(recipe, &packages, &cache) else {
        eprintln!("error: unknown recipe `{recipe}`; recipes are: {}", sandbox::image::RECIPES.join(", "));
        return ExitCode::from(1);
    };
    let name = name.as_str();
    let images = data_dir.join("images");
    let next = std::fs::read_dir(images.join(name))
        .map(|entries| entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok()).max().unwrap_or(0) + 1)
        .unwrap_or(1);
    let version = next.to_string();
    eprintln!("building image `{name}` version {version}");
    match sandbox::image::build(&images, name, &version, &recipe, &mut |step| eprintln!("  {step}")) {
        Ok(image) => {
            println!("{}", image.dir.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DATASANDBOX_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
