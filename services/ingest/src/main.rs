//! Runs the ingest service as its own process.

// mimalloc: the services churn through small allocations (every message decoded, every header
// map); with glibc's allocator a matcher cold start spent a fifth of its time in malloc and kept
// twice the memory (BENCHMARKS.md, "Cold start").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    coinalarm_runtime::host::service_main(coinalarm_ingest::NAME, coinalarm_ingest::start)
}
