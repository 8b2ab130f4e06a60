//! The `corral` binary.

fn main() -> std::process::ExitCode {
    corral::main()
}
