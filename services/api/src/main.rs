//! Runs the api service as its own process.

fn main() -> std::process::ExitCode {
    coinalarm_runtime::host::service_main(coinalarm_api::NAME, coinalarm_api::start)
}
