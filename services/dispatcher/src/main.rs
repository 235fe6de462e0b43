//! Runs the dispatcher service as its own process.

fn main() -> std::process::ExitCode {
    coinalarm_runtime::host::service_main(coinalarm_dispatcher::NAME, coinalarm_dispatcher::start)
}
