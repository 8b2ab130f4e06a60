//! `corral bench`: measurements of corral itself.

pub(crate) mod compare;
pub(crate) mod front;
pub(crate) mod herd;
mod plot;
pub(crate) mod reads;

use corral_testkit::scenario;

use crate::cli::SimArgs;

/// `corral bench sim`: every scheduler scenario, every figure, one table.
pub(crate) fn sim(args: &SimArgs) -> anyhow::Result<()> {
    let outcomes = scenario::all(&args.seeds);
    let mut missed = 0;
    for outcome in &outcomes {
        println!("{} (seed {})", outcome.scenario, outcome.seed);
        for figure in &outcome.figures {
            println!("  {figure}");
            missed += usize::from(!figure.met());
        }
    }
    println!("reference: the knee scenario under fixed limits (seed 1)");
    for limit in [8, 10, 11, 12, 16] {
        let (p99, goodput) = scenario::knee_fixed(1, limit);
        println!(
            "  fixed:{limit:<3} steady p99 / unloaded {p99:.3}  goodput / capacity {goodput:.3}"
        );
    }
    let total: usize = outcomes.iter().map(|o| o.figures.len()).sum();
    println!("{} of {total} figures met their target", total - missed);
    if missed > 0 {
        anyhow::bail!("{missed} figure(s) missed their target");
    }
    Ok(())
}
