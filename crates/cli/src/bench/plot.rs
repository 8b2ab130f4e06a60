//! Plain SVG charts for `corral bench compare`: lines over time, and bars.
//!
//! Written here rather than with `plotters` because laying out text in
//! `plotters` needs a font backend: `font-kit`, which links the system's
//! fontconfig and freetype (not on a fresh machine), or a font file
//! embedded in the binary. An SVG file names its font and lets the viewer
//! draw the text, so a chart is a few lines of markup.

use std::fmt::Write;

const WIDTH: f64 = 860.0;
const PANEL: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One line of a panel: a name and its `(x, y)` points.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A panel of lines sharing one y axis.
pub(crate) struct Panel {
    pub(crate) y_label: String,
    pub(crate) series: Vec<Series>,
}

/// Panels stacked over one x axis (seconds), as an SVG document.
pub(crate) fn lines(title: &str, x_label: &str, panels: &[Panel]) -> String {
    let height = TOP + panels.len() as f64 * (PANEL + GAP) + 10.0;
    let mut svg = header(title, height);
    let x_max = panels
        .iter()
        .flat_map(|p| &p.series)
        .flat_map(|s| &s.points)
        .map(|&(x, _)| x)
        .fold(0.0, f64::max)
        .max(1.0);
    let plot_width = WIDTH - LEFT - RIGHT;
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        let y_max = nice_max(
            panel
                .series
                .iter()
                .flat_map(|s| &s.points)
                .map(|&(_, y)| y)
                .filter(|y| y.is_finite())
                .fold(0.0, f64::max),
        );
        axes(&mut svg, top, &panel.y_label, x_label, x_max, y_max);
        for (j, series) in panel.series.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let points: Vec<String> = series
                .points
                .iter()
                .filter(|(_, y)| y.is_finite())
                .map(|&(x, y)| {
                    let px = LEFT + x / x_max * plot_width;
                    let py = top + PANEL - (y / y_max).min(1.0) * PANEL;
                    format!("{px:.1},{py:.1}")
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
            let ly = top + 14.0 + j as f64 * 18.0;
            let lx = WIDTH - RIGHT + 12.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// One bar chart per metric, side by side: `bars` are `(label, value)`.
pub(crate) fn bars(title: &str, charts: &[(String, Vec<(String, f64)>)]) -> String {
    // Room for the title, then each chart's name, above the bars.
    let top = TOP + 30.0;
    let height = top + PANEL + 80.0;
    let mut svg = header(title, height);
    let chart_width = (WIDTH - 20.0) / charts.len().max(1) as f64;
    for (i, (metric, bars)) in charts.iter().enumerate() {
        let left = 10.0 + i as f64 * chart_width + 40.0;
        let width = chart_width - 60.0;
        let y_max = nice_max(bars.iter().map(|(_, v)| *v).fold(0.0, f64::max));
        let bottom = top + PANEL;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            left + width / 2.0,
            top - 16.0,
            escape(metric)
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333"/>"##,
            left + width
        );
        let slot = width / bars.len().max(1) as f64;
        for (j, (label, value)) in bars.iter().enumerate() {
            // The tallest bar leaves room for its value above it.
            let h = (value / y_max).min(1.0) * PANEL * 0.9;
            let x = left + j as f64 * slot + slot * 0.15;
            let color = COLORS[j % COLORS.len()];
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"/>"#,
                bottom - h,
                slot * 0.7
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                x + slot * 0.35,
                bottom - h - 4.0,
                format_value(*value)
            );
            let _ = writeln!(
                svg,
                r#"<text transform="translate({:.1},{:.1}) rotate(30)" font-size="11">{}</text>"#,
                x + slot * 0.2,
                bottom + 14.0,
                escape(label)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(title: &str, height: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    )
}

fn axes(svg: &mut String, top: f64, y_label: &str, x_label: &str, x_max: f64, y_max: f64) {
    let bottom = top + PANEL;
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#333"/>"##,
        right - LEFT
    );
    for i in 0..=4 {
        let fraction = f64::from(i) / 4.0;
        let y = bottom - fraction * PANEL;
        let x = LEFT + fraction * (right - LEFT);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            format_value(fraction * y_max)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            format_value(fraction * x_max)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        top + PANEL / 2.0,
        escape(y_label),
        (LEFT + right) / 2.0,
        bottom + 32.0,
        escape(x_label)
    );
}

/// A round number at or above `max` (1, 2 or 5 times a power of ten).
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&candidate| candidate >= max)
        .unwrap_or(10.0 * power)
}

fn format_value(value: f64) -> String {
    if value >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(16.0), 20.0);
        assert_eq!(nice_max(430.0), 500.0);
        assert_eq!(nice_max(0.03), 0.05);
    }

    #[test]
    fn charts_are_well_formed_svg_with_every_series_named() {
        let panel = Panel {
            y_label: "calls".into(),
            series: vec![
                Series {
                    name: "limit".into(),
                    points: vec![(0.0, 1.0), (1.0, 16.0), (2.0, f64::INFINITY)],
                },
                Series {
                    name: "in <flight>".into(),
                    points: vec![(0.0, 0.0), (2.0, 12.0)],
                },
            ],
        };
        let svg = lines("adaptive", "seconds", &[panel]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("in &lt;flight&gt;"));
        // The infinite point is left out, not drawn off the chart.
        assert!(!svg.contains("inf") && !svg.contains("NaN"));

        let svg = bars(
            "strategies",
            &[("p99 (s)".into(), vec![("a".into(), 1.5), ("b".into(), 3.0)])],
        );
        assert_eq!(svg.matches("<rect x=").count(), 2);
    }
}
