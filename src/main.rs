//! The `capstan` binary: parses the command line and hands each subcommand to its crate.

mod bootstrap_tokens;
mod cli;
mod control_plane;
mod join;
mod logging;
mod node;
mod server;

use std::process::ExitCode;

use clap::Parser;

use cli::{
    Cli, Command, ImagesCommand, MonitorArgs, NetworkCommand, PeerCommand, RuntimeArgs,
    TokenCommand,
};

fn main() -> ExitCode {
    // Installed as a hard link named after a plugin (CNI needs one executable per plugin), the
    // binary is that plugin: the runtime passes no arguments, only CNI_* variables and stdin.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if let Some(plugin) = capstan_cni::plugin_for_program(&argv0) {
        return capstan_cni::run_plugin(plugin);
    }
    let cli = Cli::parse();
    // exec-in's stdout and stderr are the exec'd command's: nothing of ours may go there.
    let quiet = matches!(cli.command, Command::ExecIn(_));
    if let Err(message) = logging::init(cli.log_format, if quiet { "off" } else { &cli.log_level })
    {
        eprintln!("capstan: {message}");
        return ExitCode::from(2);
    }
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), command = ?cli.command, "capstan starting");
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("capstan: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why a subcommand could not run.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error(transparent)]
    Runtime(#[from] capstan_runtime::server::ServerError),
    #[error(transparent)]
    Images(#[from] capstan_runtime::images::ImageError),
    #[error("{0}")]
    Failed(String),
}

/// Runs the subcommand; its exit status is its own (a CNI plugin's is defined by the CNI spec).
fn dispatch(command: Command) -> Result<ExitCode, CommandError> {
    match command {
        Command::ExecIn(args) => {
            let code =
                capstan_runtime::monitor::exec::run(capstan_runtime::monitor::exec::ExecOptions {
                    root: args.root,
                    id: args.id,
                    pid_file: args.pid_file,
                    stdin: args.stdin,
                    console_socket: args.console_socket,
                    error_file: args.error_file,
                    argv: args.argv,
                });
            std::process::exit(code);
        }
        Command::OciBench(args) => {
            use capstan_runtime::monitor::oci_bench;
            std::process::exit(oci_bench::run(oci_bench::OciBenchOptions {
                root: args.root,
                bundle: args.bundle,
                iterations: args.iterations,
            }));
        }
        Command::Monitor(args) => {
            let code = capstan_runtime::monitor::run(monitor_options(args));
            std::process::exit(code);
        }
        Command::Runtime(args) => {
            capstan_runtime::server::run(runtime_options(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Images(ImagesCommand::Import { file, state_dir }) => {
            capstan_runtime::commands::import(&state_dir, &file, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Images(ImagesCommand::Ls { state_dir }) => {
            capstan_runtime::commands::list(&state_dir, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cni(args) => Ok(capstan_cni::run_plugin(&args.plugin)),
        Command::Network(args) => {
            let NetworkCommand::Peer(peer) = args.command;
            let (args, remove) = match peer {
                PeerCommand::Add(a) => (a, false),
                PeerCommand::Del(a) => (a, true),
            };
            capstan_cni::peers::run_command(
                &args.device,
                args.remote,
                &args.subnet,
                args.mac.as_deref(),
                remove,
            )
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| CommandError::Failed(format!("network peer: {e}")))
        }
        Command::Node(args) => {
            node::run(*args).map_err(CommandError::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pods(args) => {
            capstan_agent::commands::pods(&args.address, &mut std::io::stdout())
                .map_err(CommandError::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs(args) => {
            let request = capstan_agent::commands::LogsRequest {
                namespace: args.namespace,
                pod: args.pod,
                container: args.container,
                previous: args.previous,
                tail: args.tail,
                timestamps: args.timestamps,
            };
            capstan_agent::commands::logs(&args.address, &request, &mut std::io::stdout())
                .map_err(CommandError::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec(args) => {
            let code = node::exec(args).map_err(CommandError::Failed)?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Command::Server(args) => {
            server::run(*args).map_err(CommandError::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ControlPlane(args) => {
            control_plane::run(args, None).map_err(CommandError::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Create(args)) => {
            bootstrap_tokens::create_token(args).map_err(CommandError::Failed)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime_options(args: RuntimeArgs) -> capstan_runtime::server::RuntimeOptions {
    capstan_runtime::server::RuntimeOptions {
        endpoint: args.listen,
        state_dir: args.state_dir,
        config_file: args.runtime_config,
        streaming_address: args.streaming_address,
        log_rotation: None,
    }
}

fn monitor_options(args: MonitorArgs) -> capstan_runtime::monitor::MonitorOptions {
    use capstan_runtime::monitor::{logs::Rotation, namespaces::PodNamespaces};
    capstan_runtime::monitor::MonitorOptions {
        run_dir: args.run_dir,
        namespaces: PodNamespaces {
            network: !args.host_network,
            ipc: !args.host_ipc,
            uts: !args.host_network,
            pid: args.share_pid,
        },
        hostname: args.hostname,
        network_pinned: args.join_pinned_network,
        rotation: Rotation {
            max_size: args.log_max_size,
            max_files: args.log_max_files,
        },
    }
}
