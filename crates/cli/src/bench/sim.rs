//! `corral bench sim`: every scheduler scenario of
//! [`corral_testkit::scenario`], every figure with its target, as text or
//! as the Markdown tables of docs/BENCHMARKS.md, so that the document is
//! the command's output and not a copy of it.

use corral_testkit::scenario::{self, Outcome, Target};

#[derive(Debug, clap::Args)]
pub(crate) struct SimArgs {
    /// Seeds to run each scenario with.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub(crate) seeds: Vec<u64>,

    /// Print the tables of docs/BENCHMARKS.md ("Scheduler scenarios"):
    /// one row per figure with its value for each seed, then the knee
    /// under fixed limits.
    #[arg(long)]
    pub(crate) markdown: bool,
}

/// The fixed limits the knee scenario is run under for reference, with
/// what the document says of each.
const FIXED_LIMITS: [(usize, &str); 5] = [
    (8, ""),
    (10, " (the knee, known in advance)"),
    (11, ""),
    (12, ""),
    (16, ""),
];

/// The seed of the fixed-limit reference runs.
const FIXED_SEED: u64 = 1;

/// Runs every scenario with `args.seeds` and prints the figures.
///
/// # Errors
///
/// When a figure missed its target, after printing them all.
pub(crate) fn run(args: &SimArgs) -> anyhow::Result<()> {
    let outcomes = scenario::all(&args.seeds);
    let fixed: Vec<(usize, &str, f64, f64)> = FIXED_LIMITS
        .iter()
        .map(|&(limit, note)| {
            let (p99, goodput) = scenario::knee_fixed(FIXED_SEED, limit);
            (limit, note, p99, goodput)
        })
        .collect();
    let total: usize = outcomes.iter().map(|o| o.figures.len()).sum();
    let missed = outcomes.iter().map(|o| o.missed().len()).sum::<usize>();
    if args.markdown {
        print!("{}", markdown(&outcomes, &fixed, total - missed, total));
    } else {
        for outcome in &outcomes {
            println!("{} (seed {})", outcome.scenario, outcome.seed);
            for figure in &outcome.figures {
                println!("  {figure}");
            }
        }
        println!("reference: the knee scenario under fixed limits (seed {FIXED_SEED})");
        for (limit, _, p99, goodput) in &fixed {
            println!(
                "  fixed:{limit:<3} steady p99 / unloaded {}  goodput / capacity {}",
                three_places(*p99),
                three_places(*goodput)
            );
        }
        println!("{} of {total} figures met their target", total - missed);
    }
    if missed > 0 {
        anyhow::bail!("{missed} figure(s) missed their target");
    }
    Ok(())
}

/// One row of the scenarios' table: a figure of a scenario, with its
/// value and verdict for each seed in order.
struct Row<'a> {
    scenario: &'a str,
    figure: &'a str,
    target: Target,
    values: Vec<(f64, bool)>,
}

/// The tables of docs/BENCHMARKS.md's "Scheduler scenarios (virtual
/// time)": the figures, one row per figure and its values for each seed;
/// how many met their target; the knee under fixed limits. A value that
/// missed its target is marked `(missed)`.
fn markdown(
    outcomes: &[Outcome],
    fixed: &[(usize, &str, f64, f64)],
    met: usize,
    total: usize,
) -> String {
    // Outcomes come seed after seed; rows are kept in the order of their
    // first appearance.
    let mut rows: Vec<Row<'_>> = Vec::new();
    for outcome in outcomes {
        for figure in &outcome.figures {
            let value = (figure.value, figure.met());
            match rows
                .iter_mut()
                .find(|row| row.scenario == outcome.scenario && row.figure == figure.name)
            {
                Some(row) => row.values.push(value),
                None => rows.push(Row {
                    scenario: &outcome.scenario,
                    figure: figure.name,
                    target: figure.target,
                    values: vec![value],
                }),
            }
        }
    }
    let mut out =
        String::from("| scenario | figure | measured | target |\n| --- | --- | --- | --- |\n");
    for row in &rows {
        let values: Vec<String> = row
            .values
            .iter()
            .map(|&(value, met)| {
                let value = short(value);
                if met {
                    value
                } else {
                    format!("{value} (missed)")
                }
            })
            .collect();
        out += &format!(
            "| {} | {} | {} | {} |\n",
            row.scenario,
            row.figure,
            values.join(" / "),
            row.target
        );
    }
    out += &format!("\n{met} of {total} figures met their target.\n\n");
    out += "| limit | steady p99 / unloaded | steady goodput / capacity |\n| --- | --- | --- |\n";
    for (limit, note, p99, goodput) in fixed {
        out += &format!(
            "| `fixed:{limit}`{note} | {} | {} |\n",
            three_places(*p99),
            three_places(*goodput)
        );
    }
    out
}

/// `value` with three decimals at most and no trailing zeros (`1.24`,
/// `10`, `0.006`); `no data` for `NaN`.
fn short(value: f64) -> String {
    let text = three_places(value);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// `value` with three decimals; `no data` for `NaN`.
fn three_places(value: f64) -> String {
    if value.is_nan() {
        "no data".to_owned()
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use corral_testkit::scenario::Figure;

    use super::*;

    #[test]
    fn values_are_printed_as_the_document_prints_them() {
        assert_eq!(short(1.240_1), "1.24");
        assert_eq!(short(10.0), "10");
        assert_eq!(short(9760.0), "9760");
        assert_eq!(short(0.006_24), "0.006");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(f64::NAN), "no data");
    }

    #[test]
    fn one_row_per_figure_with_a_value_per_seed() {
        let outcome = |seed, value| Outcome {
            scenario: "knee".into(),
            seed,
            figures: vec![Figure {
                name: "p99",
                value,
                target: Target::AtMost(1.3),
            }],
        };
        let table = markdown(
            &[outcome(1, 1.24), outcome(2, f64::NAN)],
            &[(10, " (the knee)", 1.1, 0.998)],
            1,
            2,
        );
        assert_eq!(
            table,
            "| scenario | figure | measured | target |\n\
             | --- | --- | --- | --- |\n\
             | knee | p99 | 1.24 / no data (missed) | <= 1.3 |\n\
             \n\
             1 of 2 figures met their target.\n\
             \n\
             | limit | steady p99 / unloaded | steady goodput / capacity |\n\
             | --- | --- | --- |\n\
             | `fixed:10` (the knee) | 1.100 | 0.998 |\n"
        );
    }
}
