//! The `coinalarm` command: a thin entry point; everything it does lives in the library.

fn main() -> std::process::ExitCode {
    coinalarm::main()
}
