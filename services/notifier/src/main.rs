//! Runs the notifier service as its own process.

fn main() -> std::process::ExitCode {
    coinalarm_runtime::host::service_main(coinalarm_notifier::NAME, coinalarm_notifier::start)
}
