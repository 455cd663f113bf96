//! profile-shares: where a backend's CPU went, split into what any backend moving the same
//! bytes through the same sockets pays and the backend's own part (see `vnu_perf::profile`).
//!
//! ```sh
//! perf record -g -o ours.data -p "$(pgrep -f release/vhost-net-user)" -- sleep 8
//! perf script -F ip,sym -i ours.data | profile-shares --seconds-per-gb 0.40 --against 0.39
//! ```
//!
//! With `--seconds-per-gb` (the run's backend CPU per GB) each share is also given in s/GB;
//! with `--against` too (another backend's CPU per GB in the same test), the report ends with
//! what this backend would cost against that one with its own part at zero.

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use vnu_perf::profile::{Share, Split, parse_chains};

#[derive(Debug, Parser)]
#[command(about = "Split `perf script -F ip,sym` samples of a backend into shared and own work")]
struct Args {
    /// `perf script -F ip,sym` output; standard input if left out.
    script: Option<std::path::PathBuf>,
    /// The run's backend CPU seconds per GB, to give each share in s/GB.
    #[arg(long, value_name = "S")]
    seconds_per_gb: Option<f64>,
    /// Another backend's CPU seconds per GB in the same test, to compare against.
    #[arg(long, value_name = "S", requires = "seconds_per_gb")]
    against: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut text = String::new();
    let read = match &args.script {
        Some(path) => std::fs::read_to_string(path).map(|t| text = t),
        None => std::io::stdin().read_to_string(&mut text).map(drop),
    };
    if let Err(e) = read {
        eprintln!("profile-shares: cannot read the samples: {e}");
        return ExitCode::from(2);
    }
    let split = Split::of(&parse_chains(&text));
    if split.total() == 0 {
        eprintln!(
            "profile-shares: no samples (is it `perf script -F ip,sym` of a `perf record -g`?)"
        );
        return ExitCode::from(2);
    }
    println!("samples {}", split.total());
    for share in Share::ALL {
        let fraction = split.fraction(share);
        let seconds = args
            .seconds_per_gb
            .map(|s| format!("{:7.3} s/GB", s * fraction))
            .unwrap_or_default();
        println!("{:6.1}% {seconds}  {}", 100.0 * fraction, share.describe());
    }
    let shared = split.shared_fraction();
    println!(
        "shared by any backend moving these bytes: {:.1}%, the backend's own: {:.1}%",
        100.0 * shared,
        100.0 * (1.0 - shared)
    );
    if let Some(seconds) = args.seconds_per_gb {
        println!(
            "with its own part at zero: {:.3} s/GB (of {seconds:.3})",
            seconds * shared
        );
        if let Some(other) = args.against.filter(|&o| o > 0.0) {
            println!(
                "against {other:.3} s/GB: {:.2}x now, {:.2}x with its own part at zero",
                seconds / other,
                seconds * shared / other
            );
        }
    }
    ExitCode::SUCCESS
}
