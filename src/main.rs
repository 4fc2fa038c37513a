use std::process::ExitCode;

fn main() -> ExitCode {
    holdq::cli::main()
}
