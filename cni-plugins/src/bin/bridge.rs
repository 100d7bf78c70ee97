//! The `bridge` CNI plugin executable.

fn main() -> std::process::ExitCode {
    capstan_cni::run_plugin("bridge")
}
