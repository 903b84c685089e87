//! The report's monitoring section: a monitor stage's history as a chart (accuracy per
//! evaluation, one line per model, regressed evaluations marked in the table), tonight's
//! decision and why, and what a firing did (retraining, the candidate's gate, promotion).

use super::svg;
use crate::monitor::night::Report;

/// The section's HTML.
pub fn section(report: &Report) -> String {
    let mut series: Vec<svg::Series> = Vec::new();
    for (i, p) in report.points.iter().enumerate() {
        let label = format!("model {}", &p.model_hash);
        let point = ((i + 1) as f64, p.accuracy);
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(point),
            None => series.push(svg::Series {
                label,
                points: vec![point],
                dashed: false,
            }),
        }
    }
    let mut html = String::new();
    html.push_str(&format!(
        "<p><strong>{}</strong>: {} scored {:.3} on {} examples ({} from the pinned probe set).</p>",
        svg::escape(report.decision.word()),
        svg::escape(&report.model),
        report.accuracy,
        report.examples,
        report.probe_examples,
    ));
    if let Some(j) = &report.judgement {
        html.push_str(&format!(
            "<p>Against its baseline ({:.3}): {}.</p>",
            j.baseline,
            svg::escape(&j.why)
        ));
    }
    if let Some(p) = &report.promotion {
        html.push_str(&format!(
            "<div class=\"reco\"><strong>{}</strong><ul><li>retraining: <code>pipe run {}</code>, exit {} (log <code>{}</code>)</li>{}</ul></div>",
            if p.promoted { "Promoted the retrained candidate" } else { "Kept the watched model" },
            svg::escape(&p.retrain.pipeline.display().to_string()),
            p.retrain.exit_code.map_or("by a signal".into(), |c| c.to_string()),
            svg::escape(&p.retrain.log.display().to_string()),
            format_args!("<li>{}</li>", svg::escape(&p.why)),
        ));
    }
    html.push_str(&svg::line_chart(&series, "evaluation", "accuracy"));
    html.push_str("<table><tr><th>#</th><th>when</th><th>model</th><th class=\"num\">accuracy</th><th>regressed</th></tr>");
    for (i, p) in report.points.iter().enumerate() {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.3}</td><td>{}</td></tr>",
            i + 1,
            svg::escape(&p.at),
            svg::escape(&p.model_hash),
            p.accuracy,
            if p.regressed { "yes" } else { "no" }
        ));
    }
    html.push_str("</table>");
    html
}
