//! `datasandbox`: the one binary. This is the only place that reads argv and the environment,
//! sets up logging and turns errors into exit codes:
//!
//! * 0 — success;
//! * 1 — the request or the input was wrong (a 4xx from the API, an invalid spec);
//! * 2 — the server failed or could not be reached.
//!
//! The same binary is what runs inside an instance. The sandbox's hidden entry points
//! (`sandbox-helper`, `sandbox-init`, `sandbox-exec`, `sandbox-workspace`) and `session-agent` are dispatched before
//! the async runtime starts, so that the helper is still single-threaded when it forks. The
//! session agent, the first program of a user or fleet instance, becomes `home-sync`
//! (`home_sync.rs`), which starts the rest of a session.

mod audit_cli;
mod backup_cli;
mod cli;
mod client;
mod deploy_cli;
mod home_sync;
mod launcher;
mod printing;
mod recordings_cli;
mod server;
mod service;
mod watermark;

use std::process::ExitCode;

use clap::Parser;

use cli::{
    AirlockCommand, Cli, Command, EndpointArgs, ImageCommand, InstancesCommand, LogFormat, ReportsCommand, ServiceCommand, StorageCommand,
};

fn main() -> ExitCode {
    // The sandbox's own entry points run before anything else: the helper must still be
    // single-threaded when it forks into the instance's pid namespace.
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("sandbox-helper") => return exit_code(sandbox::helper::helper_main()),
        Some("sandbox-init") => return exit_code(sandbox::helper::init_main(after_dashes(&args))),
        Some("sandbox-workspace") => return exit_code(sandbox::workspace::workspace_main(&args[2..])),
        Some("sandbox-exec") => return exit_code(sandbox::helper::exec_main(after_dashes(&args))),
        Some("session-agent") => return home_sync::session_agent(),
        Some("dataset-mount") => return exit_code(sandbox::dataset_fs::daemon_main(after_dashes(&args))),
        _ => {}
    }
    let mut cli = Cli::parse();
    // Absolute from here on: an instance's helper leaves this process's working directory
    // before it mounts anything, so every path handed to it must stand on its own.
    if let Ok(absolute) = std::path::absolute(&cli.data_dir) {
        cli.data_dir = absolute;
    }
    // A service manager's journal gets JSON; a terminal (and `up`, the quick start) text.
    let unattended = matches!(cli.command, Command::Serve(_)) && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    init_tracing(cli.log_format.unwrap_or(if unattended { LogFormat::Json } else { LogFormat::Text }));
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
        Command::Backup { to, passphrase_file, without_keys, spec } => {
            backup_cli::backup(&cli.data_dir, &to, passphrase_file.as_deref(), without_keys, &spec).await
        }
        Command::Restore { from, passphrase_file, master_key } => {
            backup_cli::restore(&cli.data_dir, &from, passphrase_file.as_deref(), master_key.as_deref()).await
        }
        Command::Service { command: ServiceCommand::Install { unit_dir, binary, force, spec } } => {
            service::install(&cli.data_dir, &unit_dir, binary.as_deref(), &spec, force)
        }
        Command::Diff(args) => deploy_cli::diff(&cli.data_dir, &args).await,
        Command::Deploy(args) => deploy_cli::deploy(&cli.data_dir, &args).await,
        Command::Destroy { yes } => deploy_cli::destroy(&cli.data_dir, yes).await,
        Command::Call { action, input, endpoint } => client::call_command(&cli.data_dir, &endpoint, &action, &input).await,
        Command::Storage { command: StorageCommand::Cp { source, destination, endpoint } } => {
            client::copy(&cli.data_dir, &endpoint, &source, &destination).await
        }
        Command::Audit { command } => audit_cli::run(&cli.data_dir, command).await,
        Command::Recordings { command } => recordings_cli::run(&cli.data_dir, command).await,
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
        Command::Airlock { command: AirlockCommand::Verify { record, public_key } } => {
            airlock_verify(&cli.data_dir, &record, public_key.as_deref())
        }
        Command::Airlock { command: AirlockCommand::Submit { files, justification, workspace } } => {
            home_sync::airlock_submit(&files, &justification, workspace.as_deref()).await
        }
        Command::Nodes => {
            let local = EndpointArgs::LOCAL;
            client::finish(client::call(&cli.data_dir, &local, "cluster:DescribeNodes", bytes::Bytes::from_static(b"{}")).await)
        }
        Command::Sessions { stack } => client::finish(client::sessions(&cli.data_dir, stack.as_deref()).await),
        Command::Instances { command } => instances(&cli.data_dir, command).await,
        Command::Image { command: ImageCommand::Build { recipe, name } } => build_image(&cli.data_dir, &recipe, name.as_deref()),
        Command::Reports { command: ReportsCommand::Generate { day } } => {
            let input = serde_json::json!({ "Day": day }).to_string();
            client::call_command(&cli.data_dir, &EndpointArgs::LOCAL, "audit:GenerateUsageReports", &input).await
        }
    }
}

/// `datasandbox instances …`: the operator's instances, over the control socket.
async fn instances(data_dir: &std::path::Path, command: InstancesCommand) -> ExitCode {
    let local = EndpointArgs::LOCAL;
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
        InstancesCommand::Terminate { instance_id } => ("streaming:TerminateInstance", serde_json::json!({ "InstanceId": instance_id })),
        InstancesCommand::Exec { instance_id, command } => {
            let input = serde_json::json!({ "InstanceId": instance_id, "Command": command });
            return match client::call(data_dir, &local, "streaming:ExecInInstance", bytes::Bytes::from(input.to_string())).await {
                Ok(out) => {
                    print!("{}", out["Stdout"].as_str().unwrap_or_default());
                    eprint!("{}", out["Stderr"].as_str().unwrap_or_default());
                    exit_code(out["ExitCode"].as_i64().unwrap_or(1) as i32)
                }
                Err(err) => client::fail(err),
            };
        }
    };
    client::call_command(data_dir, &local, action, &input.to_string()).await
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

/// `airlock verify`: exit 0 and the request id when the record is this platform's, as signed.
fn airlock_verify(data_dir: &std::path::Path, record: &std::path::Path, public_key: Option<&str>) -> ExitCode {
    let key = match public_key {
        Some(key) if std::path::Path::new(key).is_file() => std::fs::read_to_string(key),
        Some(key) => Ok(key.to_owned()),
        None => std::fs::read_to_string(data_dir.join("airlock-release.pub")),
    };
    let key = match key {
        Ok(key) => key,
        Err(err) => {
            eprintln!("cannot read the release public key ({err}); pass --public-key, or run where the data directory is");
            return ExitCode::FAILURE;
        }
    };
    let document = match std::fs::read_to_string(record) {
        Ok(document) => document,
        Err(err) => {
            eprintln!("cannot read {}: {err}", record.display());
            return ExitCode::FAILURE;
        }
    };
    match control::verify_release_record(&document, &key) {
        Ok(request) => {
            println!("release record of {request}: signature valid");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("release record {}: {why}", record.display());
            ExitCode::FAILURE
        }
    }
}
