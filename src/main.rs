//! The `latchkey` binary: parse the command line, run it, map the outcome to an exit status.

use std::process::ExitCode;

use clap::Parser;
use latchkey::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match actix_web::rt::System::new().block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("latchkey: {line}");
            }
            ExitCode::FAILURE
        }
    }
}
