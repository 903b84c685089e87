//! Inline SVG charts for reports. Reports must work offline and without scripts, so charts
//! are drawn here as plain SVG rather than by a JavaScript library from a CDN.
//!
//! Every text that reaches the SVG goes through [`escape`]; numbers are formatted by
//! [`nice_ticks`] so axes read 0, 0.5, 1.0 instead of 0.4871.

use std::fmt::Write;

/// Colors for series, chosen to stay distinguishable for common color-vision deficiencies
/// (Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// Escapes text for SVG/XML content and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// About `target` evenly spaced round tick values covering `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return vec![0.0];
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let start = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut v = start;
    while v <= hi + step * 0.5 && ticks.len() < 50 {
        ticks.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    ticks
}

/// A tick value in a few characters (`0.25`, `12k`, `2.5e-5`).
pub(super) fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else if a >= 1e-3 {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else {
        // Learning rates: 2.5e-5, not "0".
        scientific(v)
    }
}

/// `v` in short scientific notation: `2.5e-5`, `1e-3`.
pub(super) fn scientific(v: f64) -> String {
    let text = format!("{v:.2e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    format!("{mantissa}e{exponent}")
}

/// One line in a [`line_chart`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points in x order; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
    /// Dashed lines distinguish e.g. validation from training curves.
    pub dashed: bool,
}

const W: f64 = 640.0;
const H: f64 = 320.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 64.0;

/// Series with at most this many points get a marker on each point.
const MARKED_POINTS: usize = 30;

/// A line chart with axes, ticks and a legend below the plot.
pub fn line_chart(series: &[Series], x_label: &str, y_label: &str) -> String {
    let finite = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let extra = legend_extra_height(series.iter().map(|s| s.label.as_str()));
    let mut svg = open_svg(W, H + extra, &format!("{y_label} by {x_label}"));
    if x0 > x1 {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" class="muted">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return svg;
    }
    let xt = nice_ticks(x0, x1, 6);
    let yt = nice_ticks(y0.min(0.0).max(y0 - (y1 - y0) * 0.05), y1, 5);
    let (xa, xb) = (xt[0], *xt.last().unwrap_or(&x1));
    let (ya, yb) = (yt[0], *yt.last().unwrap_or(&y1));
    let px = |x: f64| LEFT + (x - xa) / (xb - xa).max(f64::EPSILON) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (1.0 - (y - ya) / (yb - ya).max(f64::EPSILON)) * (H - TOP - BOTTOM);
    axes(&mut svg, &xt, &yt, &px, &py, x_label, y_label);
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(&s.label)
        );
        // Short series (a validation loss measured once or twice) would be invisible as
        // lines alone: mark each point.
        if points.len() <= MARKED_POINTS {
            for p in &points {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{color}"/>"#);
            }
        }
    }
    legend(
        &mut svg,
        series.iter().map(|s| (s.label.as_str(), s.dashed)),
    );
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, one per `(label, value)`, with the value printed at the bar's end.
pub fn bar_chart(bars: &[(String, f64)], unit: &str) -> String {
    // Narrower than the line chart: bar charts sit two to a row in the report.
    let (width, row, label_w) = (420.0, 26.0, 150.0);
    let h = TOP * 2.0 + row * bars.len().max(1) as f64;
    let max = bars
        .iter()
        .map(|b| b.1)
        .fold(0.0f64, f64::max)
        .max(f64::EPSILON);
    let mut svg = open_svg(width, h, unit);
    for (i, (name, value)) in bars.iter().enumerate() {
        let y = TOP + i as f64 * row;
        let w = (value / max).max(0.0) * (width - label_w - 80.0);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text><rect x="{label_w}" y="{}" width="{w:.1}" height="{}" fill="{}" rx="2"><title>{}: {} {}</title></rect><text x="{}" y="{}" class="label">{} {}</text>"#,
            label_w - 8.0,
            y + row * 0.62,
            escape(name),
            y + 4.0,
            row - 8.0,
            PALETTE[i % PALETTE.len()],
            escape(name),
            label(*value),
            escape(unit),
            label_w + w + 6.0,
            y + row * 0.62,
            label(*value),
            escape(unit)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Pairs of bars per category (e.g. accuracy before and after fine-tuning). When no value
/// exceeds 1 the values are taken as rates and the axis spans 0 to 1 (so 0.0 everywhere
/// still draws a readable axis, and two charts of rates compare at a glance).
pub fn paired_bars(categories: &[(String, f64, f64)], names: (&str, &str), unit: &str) -> String {
    let max = categories
        .iter()
        .flat_map(|c| [c.1, c.2])
        .fold(0.0f64, f64::max);
    let max = if max <= 1.0 { 1.0 } else { max };
    let yt = nice_ticks(0.0, max, 5);
    let yb = *yt.last().unwrap_or(&max);
    let py = |y: f64| TOP + (1.0 - y / yb) * (H - TOP - BOTTOM);
    let mut svg = open_svg(W, H, unit);
    let n = categories.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    axes(&mut svg, &[], &yt, &|_| 0.0, &py, "", unit);
    for (i, (name, a, b)) in categories.iter().enumerate() {
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let bw = slot * 0.33;
        for (j, v) in [a, b].into_iter().enumerate() {
            let bx = x + j as f64 * (bw + 4.0);
            let _ = write!(
                svg,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text>"#,
                py(*v),
                (py(0.0) - py(*v)).max(0.0),
                PALETTE[j],
                escape(if j == 0 { names.0 } else { names.1 }),
                label(*v),
                bx + bw / 2.0,
                py(*v) - 4.0,
                label(*v)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text>"#,
            x + bw + 2.0,
            H - BOTTOM + 18.0,
            escape(name)
        );
    }
    legend(&mut svg, [(names.0, false), (names.1, false)].into_iter());
    svg.push_str("</svg>");
    svg
}

/// [`paired_bars`] of rates with their 95% intervals: each bar carries an error bar
/// (`class="errorbar"`: a vertical line from the interval's low to its high end, with
/// caps) and its tooltip gives the interval and the counts. The axis spans 0 to 1.
pub fn paired_bars_with_intervals(
    categories: &[(
        String,
        pipe_schema::evaluate::Rate,
        pipe_schema::evaluate::Rate,
    )],
    names: (&str, &str),
    unit: &str,
) -> String {
    let yt = nice_ticks(0.0, 1.0, 5);
    let yb = *yt.last().unwrap_or(&1.0);
    let py = |y: f64| TOP + (1.0 - y / yb) * (H - TOP - BOTTOM);
    let mut svg = open_svg(W, H, unit);
    let slot = (W - LEFT - RIGHT) / categories.len().max(1) as f64;
    axes(&mut svg, &[], &yt, &|_| 0.0, &py, "", unit);
    for (i, (name, a, b)) in categories.iter().enumerate() {
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let bw = slot * 0.33;
        for (j, r) in [a, b].into_iter().enumerate() {
            let bx = x + j as f64 * (bw + 4.0);
            let mid = bx + bw / 2.0;
            let cap = (bw * 0.2).min(8.0);
            let _ = write!(
                svg,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"><title>{}: {} (95% interval {}–{}, {} of {})</title></rect><g class="errorbar" stroke="currentColor" stroke-width="1.5"><line x1="{mid:.1}" x2="{mid:.1}" y1="{:.1}" y2="{:.1}"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/></g><text x="{mid:.1}" y="{:.1}" text-anchor="middle" class="label halo">{}</text>"#,
                py(r.value),
                (py(0.0) - py(r.value)).max(0.0),
                PALETTE[j],
                escape(if j == 0 { names.0 } else { names.1 }),
                label(r.value),
                label(r.low),
                label(r.high),
                r.successes,
                r.n,
                py(r.low),
                py(r.high),
                mid - cap,
                mid + cap,
                py(r.low),
                py(r.low),
                mid - cap,
                mid + cap,
                py(r.high),
                py(r.high),
                py(r.high) - 4.0,
                label(r.value)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text>"#,
            x + bw + 2.0,
            H - BOTTOM + 18.0,
            escape(name)
        );
    }
    legend(&mut svg, [(names.0, false), (names.1, false)].into_iter());
    svg.push_str("</svg>");
    svg
}

/// A node of a [`dag`] drawing.
#[derive(Debug, Clone)]
pub struct DagNode {
    /// The stage name.
    pub name: String,
    /// CSS class for its status: `ran`, `cached`, `failed`, `skipped`.
    pub status: String,
}

/// Draws a DAG left to right: a node's column is its longest distance from a source, so
/// every edge points rightwards.
pub fn dag(nodes: &[DagNode], edges: &[(usize, usize)]) -> String {
    let n = nodes.len();
    let mut depth = vec![0usize; n];
    // Longest-path layering by relaxation; n passes suffice for a DAG.
    for _ in 0..n {
        let mut changed = false;
        for &(a, b) in edges {
            if a < n && b < n && depth[b] < depth[a] + 1 {
                depth[b] = depth[a] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let columns = depth.iter().max().map_or(1, |d| d + 1);
    let mut row_in_column = vec![0usize; columns];
    let mut pos = vec![(0.0, 0.0); n];
    let (node_w, node_h, gap_x, gap_y) = (150.0, 30.0, 40.0, 14.0);
    for i in 0..n {
        let c = depth[i];
        pos[i] = (
            12.0 + c as f64 * (node_w + gap_x),
            12.0 + row_in_column[c] as f64 * (node_h + gap_y),
        );
        row_in_column[c] += 1;
    }
    let rows = row_in_column.iter().max().copied().unwrap_or(1).max(1);
    let w = 24.0 + columns as f64 * (node_w + gap_x) - gap_x;
    let h = 24.0 + rows as f64 * (node_h + gap_y) - gap_y;
    // Never drawn larger than life: a three-stage DAG stretched to the page width would
    // have 30 px labels.
    let mut svg = open_svg(w, h, "pipeline DAG").replacen(
        "<svg ",
        &format!(r#"<svg style="max-width:{w:.0}px" "#),
        1,
    );
    svg.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#888"/></marker></defs>"##);
    for &(a, b) in edges {
        if a >= n || b >= n {
            continue;
        }
        let (ax, ay) = (pos[a].0 + node_w, pos[a].1 + node_h / 2.0);
        let (bx, by) = (pos[b].0, pos[b].1 + node_h / 2.0);
        let mid = (ax + bx) / 2.0;
        let _ = write!(
            svg,
            r##"<path d="M{ax:.1},{ay:.1} C{mid:.1},{ay:.1} {mid:.1},{by:.1} {bx:.1},{by:.1}" fill="none" stroke="#888" marker-end="url(#arrow)"/>"##
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let name: String = if node.name.chars().count() > 22 {
            node.name.chars().take(21).chain(['…']).collect()
        } else {
            node.name.clone()
        };
        let _ = write!(
            svg,
            r#"<g class="node {}"><rect x="{x:.1}" y="{y:.1}" width="{node_w}" height="{node_h}" rx="6"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><title>{} ({})</title></g>"#,
            escape(&node.status),
            x + node_w / 2.0,
            y + node_h * 0.65,
            escape(&name),
            escape(&node.name),
            escape(&node.status)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub(super) fn open_svg(w: f64, h: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="{}">"#,
        escape(title)
    )
}

fn axes(
    svg: &mut String,
    xt: &[f64],
    yt: &[f64],
    px: &dyn Fn(f64) -> f64,
    py: &dyn Fn(f64) -> f64,
    x_label: &str,
    y_label: &str,
) {
    for &y in yt {
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            W - RIGHT,
            py(y),
            py(y),
            LEFT - 6.0,
            py(y) + 4.0,
            label(y)
        );
    }
    for &x in xt {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="tick">{}</text>"#,
            px(x),
            H - BOTTOM + 16.0,
            label(x)
        );
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}"/><line class="axis" x1="{LEFT}" x2="{}" y1="{}" y2="{}"/><text x="{}" y="{}" text-anchor="middle" class="axis-label">{}</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle" class="axis-label">{}</text>"#,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
        (LEFT + W - RIGHT) / 2.0,
        H - BOTTOM + 34.0,
        escape(x_label),
        (TOP + H - BOTTOM) / 2.0,
        escape(y_label)
    );
}

/// Lays legend entries out left to right, wrapping to new rows; returns each entry's
/// `(x, row)`.
fn legend_layout<'a>(items: impl Iterator<Item = &'a str>) -> Vec<(f64, usize)> {
    let (mut x, mut row) = (LEFT, 0);
    let mut out = Vec::new();
    for name in items {
        let width = 36.0 + name.chars().count() as f64 * 7.0;
        if x > LEFT && x + width > W - RIGHT {
            x = LEFT;
            row += 1;
        }
        out.push((x, row));
        x += width;
    }
    out
}

/// Extra height the legend needs beyond its first row.
fn legend_extra_height<'a>(items: impl Iterator<Item = &'a str>) -> f64 {
    legend_layout(items)
        .last()
        .map_or(0.0, |&(_, row)| row as f64 * 18.0)
}

fn legend<'a>(svg: &mut String, items: impl Iterator<Item = (&'a str, bool)> + Clone) {
    let layout = legend_layout(items.clone().map(|(name, _)| name));
    for (i, ((name, dashed), (x, row))) in items.zip(layout).enumerate() {
        let y = H - 12.0 + row as f64 * 18.0;
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<line x1="{x}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="3"{dash}/><text x="{}" y="{y}" class="legend">{}</text>"#,
            x + 20.0,
            y - 4.0,
            y - 4.0,
            PALETTE[i % PALETTE.len()],
            x + 26.0,
            escape(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = nice_ticks(0.37, 2.91, 5);
        assert!(t[0] <= 0.37 && *t.last().unwrap() >= 2.91, "{t:?}");
        assert!(nice_ticks(5.0, 5.0, 5).len() > 1);
        assert_eq!(nice_ticks(f64::NAN, 1.0, 5), vec![0.0]);
    }

    #[test]
    fn labels_escape_markup() {
        let svg = bar_chart(&[("<script>".into(), 1.0)], "s");
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn rates_span_zero_to_one_and_short_series_are_marked() {
        let svg = paired_bars(
            &[("lora".into(), 0.0, 0.0)],
            ("before", "after"),
            "accuracy",
        );
        for tick in [">0<", ">0.2<", ">0.4<", ">0.6<", ">0.8<", ">1<"] {
            assert!(svg.contains(tick), "{tick} in {svg}");
        }
        let one = Series {
            label: "valid".into(),
            points: vec![(2.0, 1.5)],
            dashed: true,
        };
        let many = Series {
            label: "train".into(),
            points: (0..100).map(|i| (f64::from(i), 1.0)).collect(),
            dashed: false,
        };
        let svg = line_chart(&[many, one], "step", "loss");
        assert_eq!(svg.matches("<circle").count(), 1, "only the short series");
    }

    #[test]
    fn line_chart_draws_one_polyline_per_series_and_skips_nan() {
        let svg = line_chart(
            &[
                Series {
                    label: "train".into(),
                    points: vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)],
                    dashed: false,
                },
                Series {
                    label: "valid".into(),
                    points: vec![(1.0, 2.5), (3.0, 1.5)],
                    dashed: true,
                },
            ],
            "step",
            "loss",
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn empty_chart_says_no_data() {
        assert!(line_chart(&[], "x", "y").contains("no data"));
    }

    #[test]
    fn dag_puts_dependents_to_the_right() {
        let nodes: Vec<DagNode> = ["a", "b", "c"]
            .iter()
            .map(|n| DagNode {
                name: (*n).into(),
                status: "ran".into(),
            })
            .collect();
        let svg = dag(&nodes, &[(0, 1), (1, 2), (0, 2)]);
        let x_of = |name: &str| -> f64 {
            let at = svg.find(&format!(">{name}</text>")).unwrap();
            let rect = svg[..at].rfind("<rect x=\"").unwrap();
            svg[rect + 9..].split('"').next().unwrap().parse().unwrap()
        };
        assert!(x_of("a") < x_of("b") && x_of("b") < x_of("c"));
        assert_eq!(svg.matches("marker-end").count(), 3);
    }
}
