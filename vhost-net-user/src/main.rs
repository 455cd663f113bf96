//! The `vhost-net-user` program: parse arguments, close what it inherited, run. Started under
//! the name `passt`, it takes passt's command line instead (see `passt_mode`).

use vhost_net_user::passt_mode;

fn main() {
    let argv0 = std::env::args_os().next();
    if passt_mode::invoked_as_passt(argv0.as_deref()) {
        let args = match passt_mode::parse(std::env::args_os()) {
            Ok(args) => args,
            Err(passt_mode::Exit(status)) => std::process::exit(status),
        };
        close_inherited(args.fd);
        std::process::exit(passt_mode::run(args));
    }
    // `vhost-net-user ctl ...`, the API socket's client: a command line of its own.
    if std::env::args_os().nth(1).is_some_and(|a| a == "ctl") {
        std::process::exit(vhost_net_user::api::ctl::main(std::env::args_os().skip(2)));
    }
    let args = vhost_net_user::sysconfig::parse_command_line();
    close_inherited(args.fd);
    std::process::exit(vhost_net_user::cli::run(args));
}

/// Before anything of ours is open: descriptors a parent left us (all but `keep`, `--fd`'s)
/// are closed, so that no child of ours inherits them and nothing keeps them alive.
fn close_inherited(keep: Option<i32>) {
    #[allow(unsafe_code)]
    // SAFETY: nothing in the process owns a descriptor above 2 yet: parsing the arguments
    // opened none, and `--fd`'s is kept.
    if let Err(e) = unsafe { vhost_net_user::close_inherited(keep) } {
        eprintln!("vhost-net-user: closing inherited descriptors failed: {e}");
        std::process::exit(1);
    }
}
