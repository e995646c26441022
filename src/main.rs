//! The `deqc` binary: a thin wrapper over `deqc::cli`.
fn main() -> std::process::ExitCode {
    deqc::cli::main()
}
