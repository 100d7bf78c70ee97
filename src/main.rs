//! The `capstan` binary: parses the command line and hands each subcommand to its crate.

mod cli;
mod logging;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ImagesCommand, MonitorArgs, RuntimeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = logging::init(cli.log_format, &cli.log_level) {
        eprintln!("capstan: {message}");
        return ExitCode::from(2);
    }
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), command = ?cli.command, "capstan starting");
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
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
    #[error("`capstan {command}` is not implemented yet: {missing}. Nothing was started.")]
    NotImplemented {
        command: &'static str,
        missing: &'static str,
    },
}

fn dispatch(command: Command) -> Result<(), CommandError> {
    let (command, missing) = match command {
        Command::Runtime(args) => return Ok(capstan_runtime::server::run(runtime_options(args))?),
        Command::Monitor(args) => {
            let code = capstan_runtime::monitor::run(monitor_options(args));
            std::process::exit(code);
        }
        Command::Images(ImagesCommand::Import { file, state_dir }) => {
            return Ok(capstan_runtime::commands::import(
                &state_dir,
                &file,
                &mut std::io::stdout(),
            )?);
        }
        Command::Images(ImagesCommand::Ls { state_dir }) => {
            return Ok(capstan_runtime::commands::list(
                &state_dir,
                &mut std::io::stdout(),
            )?);
        }
        Command::Node(_) => (
            "node",
            "the node agent (static pods, pod workers, probes) is still to be built",
        ),
        Command::Server(_) => (
            "server",
            "the control plane and the node agent are still to be built",
        ),
        Command::ControlPlane(_) => (
            "control-plane",
            "the API server, storage, scheduler and controllers are still to be built",
        ),
        Command::Cni(_) => ("cni", "the bundled CNI plugins are still to be built"),
    };
    Err(CommandError::NotImplemented { command, missing })
}

fn runtime_options(args: RuntimeArgs) -> capstan_runtime::server::RuntimeOptions {
    capstan_runtime::server::RuntimeOptions {
        endpoint: args.listen,
        state_dir: args.state_dir,
        config_file: args.runtime_config,
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
        },
        hostname: args.hostname,
        rotation: Rotation {
            max_size: args.log_max_size,
            max_files: args.log_max_files,
        },
    }
}
