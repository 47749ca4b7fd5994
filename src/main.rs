//! The `influx-proxy` binary: flags → logger → `run`. Errors are one line and a non-zero exit.

fn main() {
    let args: influx_proxy::cli::Args = argh::from_env();
    if args.version {
        println!("influx-proxy {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if let Err(e) = influx_proxy::logger::init(args.log_level.as_deref()) {
        eprintln!("influx-proxy: {e}");
        std::process::exit(2);
    }
    if let Err(e) = influx_proxy::run::run(args) {
        eprintln!("influx-proxy: {e}");
        std::process::exit(1);
    }
}
