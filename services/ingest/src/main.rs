//! Runs the ingest service as its own process.

fn main() -> std::process::ExitCode {
    coinalarm_runtime::host::service_main(coinalarm_ingest::NAME, coinalarm_ingest::start)
}
