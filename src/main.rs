//! The `passfold` command-line tool; see `passfold::cli`.

fn main() -> std::process::ExitCode {
    passfold::cli::main(std::env::args_os())
}
