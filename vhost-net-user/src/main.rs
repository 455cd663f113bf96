//! The `vhost-net-user` program: parse arguments, close what it inherited, run.

fn main() {
    let args = vhost_net_user::sysconfig::parse_command_line();
    // Before anything of ours is open: descriptors a parent left us (all but `--fd`'s) are
    // closed, so that no child of ours inherits them and nothing keeps them alive.
    #[allow(unsafe_code)]
    // SAFETY: nothing in the process owns a descriptor above 2 yet: parsing the arguments
    // opened none, and `--fd`'s is kept.
    if let Err(e) = unsafe { vhost_net_user::close_inherited(args.fd) } {
        eprintln!("vhost-net-user: closing inherited descriptors failed: {e}");
        std::process::exit(1);
    }
    std::process::exit(vhost_net_user::cli::run(args));
}
