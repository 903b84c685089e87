//! Prints the regret tables of BENCHMARKS.md ("Tuning: regret against random search"):
//! GP-EI against random search on Branin, Hartmann-6 and a shifted Rosenbrock, each at
//! 20, 30 and 40 trials, over 20 seeds (0..20), with the optimiser settings the tune stage uses
//! (`pipe_engine::tune::benchmarks`).
//!
//! ```sh
//! cargo run --release --example tune_regret            # the table (about a minute)
//! cargo run --release --example tune_regret -- 5       # 5 seeds instead of 20
//! ```

use pipe_engine::tune::benchmarks::{ALL, Comparison, TABLE_HEADER};

fn main() {
    let seeds: u64 = match std::env::args().nth(1) {
        None => 20,
        Some(s) => match s.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: tune_regret [SEEDS]  (SEEDS: a positive number, default 20)");
                std::process::exit(2);
            }
        },
    };
    println!("{TABLE_HEADER}");
    for bench in ALL {
        // A small budget (about what a tune stage of train runs spends), the budget of
        // issue #20's target (Hartmann-6 within 0.25 at 30) and twice the first.
        for budget in [20, 30, 40] {
            let started = std::time::Instant::now();
            let c = Comparison::run(&bench, budget, 0..seeds);
            println!("{}", c.markdown_row());
            eprintln!(
                "{} at {budget}: {:.1} s",
                bench.name,
                started.elapsed().as_secs_f64()
            );
        }
    }
}
