//! Runs the matcher service as its own process.

fn main() -> std::process::ExitCode {
    coinalarm_runtime::host::service_main(coinalarm_matcher::NAME, coinalarm_matcher::start)
}
