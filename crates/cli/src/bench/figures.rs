//! What the benches print: each figure measured against its target, in a
//! table, and the median that rounds are summed up by. A figure over
//! nothing (no file, no round, no request) is NaN and misses its target.

/// One figure against its target.
pub(super) struct Row {
    what: String,
    measured: String,
    target: String,
    /// `None` for a figure shown for reference, without a target.
    met: Option<bool>,
}

impl Row {
    /// `value` against `at_least` (or at most), NaN missing.
    pub(super) fn bound(
        what: impl Into<String>,
        value: f64,
        cmp: Cmp,
        bound: f64,
        unit: &str,
    ) -> Self {
        let met = value.is_finite()
            && match cmp {
                Cmp::AtLeast => value >= bound,
                Cmp::AtMost => value <= bound,
                Cmp::Below => value < bound,
            };
        let sign = match cmp {
            Cmp::AtLeast => ">=",
            Cmp::AtMost => "<=",
            Cmp::Below => "<",
        };
        Self {
            what: what.into(),
            measured: if value.is_finite() {
                format!("{}{unit}", trim(value))
            } else {
                "no data".to_owned()
            },
            target: format!("{sign} {}{unit}", trim(bound)),
            met: Some(met),
        }
    }

    /// `count` of `total`, all of them.
    pub(super) fn all(what: impl Into<String>, count: usize, total: usize) -> Self {
        Self {
            what: what.into(),
            measured: format!("{count} / {total}"),
            target: format!("{total} / {total}"),
            met: Some(total > 0 && count == total),
        }
    }

    /// A figure without a target.
    pub(super) fn info(what: impl Into<String>, measured: String) -> Self {
        Self {
            what: what.into(),
            measured,
            target: "-".to_owned(),
            met: None,
        }
    }

    /// Exactly `want`.
    pub(super) fn exactly(what: impl Into<String>, count: usize, want: usize) -> Self {
        Self {
            what: what.into(),
            measured: count.to_string(),
            target: want.to_string(),
            met: Some(count == want),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Cmp {
    AtLeast,
    AtMost,
    Below,
}

/// A number with at most three decimals, without trailing zeros.
pub(super) fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

/// Prints a figure's table; how many of its rows met their target.
pub(super) fn print_table(title: &str, rows: &[Row]) -> (usize, usize) {
    println!("\n== {title}");
    let width = |f: fn(&Row) -> &str, head: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .chain([head.len()])
            .max()
            .unwrap_or(0)
    };
    let (w, m, t) = (
        width(|r| &r.what, "figure"),
        width(|r| &r.measured, "measured"),
        width(|r| &r.target, "target"),
    );
    println!(
        "{:<w$}  {:>m$}  {:>t$}  met",
        "figure", "measured", "target"
    );
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "MISSED",
            None => "-",
        };
        println!(
            "{:<w$}  {:>m$}  {:>t$}  {met}",
            row.what, row.measured, row.target
        );
    }
    let judged = rows.iter().filter_map(|r| r.met);
    (judged.clone().filter(|&met| met).count(), judged.count())
}

/// The median of `values`; NaN if empty or if any is NaN (a round that
/// failed is not a fast round).
pub(super) fn median(values: &[f64]) -> f64 {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_over_nothing_misses_its_target() {
        let met = |row: Row| row.met.expect("a figure with a target");
        assert!(!met(Row::bound("x", f64::NAN, Cmp::AtMost, 1.0, "")));
        assert!(!met(Row::all("x", 0, 0)));
        assert!(median(&[]).is_nan());
        assert!(median(&[1.0, f64::NAN, 3.0]).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(met(Row::bound("x", 1.1, Cmp::AtMost, 1.1, "")));
        assert!(!met(Row::bound("x", 64.0, Cmp::Below, 64.0, "")));
        assert_eq!(Row::info("x", "1".to_owned()).met, None);
    }
}
