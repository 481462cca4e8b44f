//! `stagefan-sim [--scenario smoke|quota|million] [--seed N] [--viewers N] [--price USD]
//! [--fault ignore-capacity|lose-lease-writes]`: runs one scenario and prints its report,
//! whose last line is `sim: <viewers> viewers, <violations> violations`. The wall time goes
//! to stderr, so the report itself is the same bytes for the same seed. Exit status 1 when
//! an invariant broke, 2 on a bad argument.

use std::process::ExitCode;
use std::time::Instant;

use stagefan_sim::{run, Faults, Scenario};

fn usage() -> ExitCode {
    eprintln!(
        "usage: stagefan-sim [--scenario {}] [--seed N] [--viewers N] [--price USD] \
         [--fault ignore-capacity|lose-lease-writes]",
        Scenario::NAMES.join("|")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut scenario = "million".to_string();
    let mut seed: u64 = 1;
    let mut viewers: Option<u32> = None;
    let mut price: Option<f64> = None;
    let mut faults = Faults::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next();
        match a.as_str() {
            "--scenario" => match value() {
                Some(v) => scenario = v,
                None => return usage(),
            },
            "--seed" => match value().and_then(|v| v.parse().ok()) {
                Some(v) => seed = v,
                None => return usage(),
            },
            "--viewers" => match value().and_then(|v| v.parse().ok()) {
                Some(v) => viewers = Some(v),
                None => return usage(),
            },
            "--price" => match value().and_then(|v| v.parse().ok()) {
                Some(v) => price = Some(v),
                None => return usage(),
            },
            "--fault" => match value().as_deref() {
                Some("ignore-capacity") => faults.ignore_capacity = true,
                Some("lose-lease-writes") => faults.lose_lease_writes = true,
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(mut sc) = Scenario::named(&scenario) else {
        return usage();
    };
    if let Some(n) = viewers {
        sc = sc.scaled(n);
    }
    let start = Instant::now();
    let mut report = run(sc, seed, faults);
    if let Some(p) = price {
        report.price = p;
    }
    print!("{}", report.render());
    eprintln!("wall time: {:.1} s", start.elapsed().as_secs_f64());
    if report.violations() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
