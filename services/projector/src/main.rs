//! Runs the projector service as its own process.

fn main() -> std::process::ExitCode {
    coinalarm_runtime::host::service_main(coinalarm_projector::NAME, coinalarm_projector::start)
}
