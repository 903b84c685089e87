//! `pipe runs compare --html`: one self-contained page (inline CSS and SVG, no scripts,
//! no network) with the runs' loss curves overlaid and their metrics side by side.

use super::diff::metrics_of;
use super::record::{RunRecord, Series};
use crate::report::svg::{self, escape};
use std::collections::BTreeSet;
use std::fmt::Write;

/// A run and the step series of its stages, as `(stage, series)`.
pub struct RunCurves {
    /// The run.
    pub run: RunRecord,
    /// Each stage's series.
    pub curves: Vec<(String, Vec<Series>)>,
}

/// The page comparing `runs`.
pub fn compare_page(runs: &[RunCurves]) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>pipe: run comparison</title><style>\
         body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:right}\
         th:first-child,td:first-child{text-align:left}tr.diff td{background:#fff6dd}\
         code{font-size:90%}.best{font-weight:600}svg{max-width:100%}</style></head><body>",
    );
    html.push_str("<h1>Run comparison</h1><table><tr><th>run</th><th>pipeline</th><th>started</th><th>status</th><th>git</th></tr>");
    for r in runs {
        let git = r.run.git.as_ref().map_or(String::from("-"), |g| {
            format!(
                "{}{}",
                &g.commit[..g.commit.len().min(10)],
                if g.dirty { " (dirty)" } else { "" }
            )
        });
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.run.id),
            escape(&r.run.pipeline),
            escape(&r.run.started),
            r.run.effective_status().as_str(),
            escape(&git)
        );
    }
    html.push_str("</table>");
    for (metric, title) in [("loss", "Training loss"), ("valid_loss", "Validation loss")] {
        let lines: Vec<svg::Series> = runs
            .iter()
            .flat_map(|r| {
                r.curves.iter().filter_map(move |(stage, series)| {
                    let s = series.iter().find(|s| s.name == metric)?;
                    Some(svg::Series {
                        label: format!("{} {stage}", short(&r.run.id)),
                        points: s.points.iter().map(|&(x, y, _)| (x as f64, y)).collect(),
                        dashed: false,
                    })
                })
            })
            .collect();
        if !lines.is_empty() {
            let _ = write!(
                html,
                "<h2>{title}</h2>{}",
                svg::line_chart(&lines, "step", metric)
            );
        }
    }
    let metrics: Vec<_> = runs.iter().map(|r| metrics_of(&r.run)).collect();
    let keys: BTreeSet<&String> = metrics.iter().flat_map(|m| m.keys()).collect();
    html.push_str("<h2>Metrics</h2><table><tr><th>metric</th>");
    for r in runs {
        let _ = write!(html, "<th><code>{}</code></th>", escape(short(&r.run.id)));
    }
    html.push_str("</tr>");
    for key in keys {
        let values: Vec<Option<f64>> = metrics.iter().map(|m| m.get(key).copied()).collect();
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let differs = present.windows(2).any(|w| w[0] != w[1]);
        let _ = write!(
            html,
            "<tr{}><td>{}</td>",
            if differs { " class=\"diff\"" } else { "" },
            escape(key)
        );
        for v in values {
            let _ = write!(
                html,
                "<td>{}</td>",
                v.map_or_else(|| "-".to_owned(), format_number)
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table><p>Written by <code>pipe runs compare</code>. Rows that differ are shaded.</p></body></html>\n");
    html
}

/// The random end of an id, enough to tell runs apart in a legend.
fn short(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}

/// A number as people read it: integers whole, others to 4 significant digits.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 1e-3 && v.abs() < 1e6 {
        let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
        format!("{v:.digits$}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_well() {
        assert_eq!(super::format_number(60.0), "60");
        assert_eq!(super::format_number(0.81), "0.8100");
        assert_eq!(super::format_number(0.24721667), "0.2472");
        assert_eq!(super::format_number(1234.5678), "1235");
        assert_eq!(super::format_number(1e-4), "1.000e-4");
    }
}
