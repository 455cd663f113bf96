//! The `vhost-net-user` program: parse arguments, run.

use clap::Parser;

fn main() {
    let args = vhost_net_user::cli::Args::parse();
    std::process::exit(vhost_net_user::cli::run(args));
}
