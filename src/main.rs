use clap::Parser;

use longship::cli::{Cli, Command};
use longship::config::Settings;

/// Exit code for anything that stops the server before it serves.
const EXIT_STARTUP: i32 = 2;

fn main() {
    let cli = Cli::parse();
    let (args, print_only) = match &cli.command {
        Command::Serve(args) => (args, false),
        Command::Config(args) => (args, true),
        Command::ParseResource(a) => std::process::exit(longship::ingest::sandbox::child_main(
            &a.input, &a.work, &a.options,
        )),
    };
    let settings = match Settings::load(args.config.as_deref(), &args.overrides()) {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    if print_only {
        match settings.to_masked_toml() {
            Ok(text) => print!("{text}"),
            Err(e) => fail(&e),
        }
        return;
    }
    let telemetry = longship::telemetry::init(&settings.logging);
    let outcome = longship::startup::run(settings, telemetry.drops.clone());
    // Flush the queued log lines before exiting.
    drop(telemetry);
    if let Err(e) = outcome {
        fail(&e);
    }
}

fn fail(err: &dyn std::fmt::Display) -> ! {
    eprintln!("longship: {err}");
    std::process::exit(EXIT_STARTUP);
}
