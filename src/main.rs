//! The `influx-proxy` binary: flags → logger → `run`. Every error, a bad flag included, is one line
//! `influx-proxy: ...` on stderr and exit status 1.

use std::process::exit;

fn main() {
    let args = match influx_proxy::cli::parse(std::env::args_os()) {
        Ok(args) => args,
        Err(influx_proxy::cli::Exit::Help(text)) => {
            println!("{text}");
            return;
        }
        Err(influx_proxy::cli::Exit::Error(e)) => fail(&e),
    };
    if args.version {
        println!("influx-proxy {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if let Err(e) = influx_proxy::logger::init(args.log_level.as_deref()) {
        fail(&e);
    }
    if let Err(e) = influx_proxy::run::run(args) {
        fail(&e);
    }
}

fn fail(error: &str) -> ! {
    eprintln!("influx-proxy: {error}");
    exit(1)
}
