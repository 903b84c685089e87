//! Parallel coordinates as inline SVG (the same self-contained style as [`super::svg`]):
//! one vertical axis per parameter plus one for the objective, and one polyline per trial
//! through its values, so a reader sees which region of the space the good trials share.
//!
//! - Each axis maps values to heights by its [`Scale`]: evenly (numbers), evenly in `ln` (a
//!   parameter searched with `log: true`), or one slot per listed value (a categorical,
//!   labelled with its values). Numeric axes span the searched range, and their tick labels
//!   include both ends, so the range reads off the chart.
//! - Lines are coloured by objective on a viridis ramp (dark blue worst, yellow-green best);
//!   the best trial is drawn last, thick, in the text colour (`currentColor`, so it stays
//!   visible in dark mode). Pruned trials are dashed and faded, failed ones dotted; both
//!   stop before the objective axis, having no value.
//! - Every line has a `<title>` (its trial, parameters and value) that browsers show on
//!   hover; tick labels have a halo (`class="halo"` in the report's CSS) so lines crossing
//!   them do not hide them.

use super::svg::{escape, label, nice_ticks, open_svg, scientific};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Write;

/// How an axis maps values to heights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scale", rename_all = "lowercase")]
pub enum Scale {
    /// Numbers in `[low, high]`, evenly.
    Linear {
        /// Bottom of the axis.
        low: f64,
        /// Top of the axis.
        high: f64,
        /// Only whole numbers occur (ticks are whole too).
        integer: bool,
    },
    /// Positive numbers in `[low, high]`, evenly in `ln`.
    Log {
        /// Bottom of the axis (positive).
        low: f64,
        /// Top of the axis.
        high: f64,
        /// Only whole numbers occur.
        integer: bool,
    },
    /// One of the listed values, each in its own slot, the first at the bottom.
    Categories {
        /// The values in axis order.
        values: Vec<Value>,
    },
}

/// One vertical axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// The label above it.
    pub name: String,
    /// How it maps values.
    pub scale: Scale,
}

/// How a trial's line is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// A complete trial; its objective's place between the worst (0) and the best (1).
    Shade(f64),
    /// The best trial.
    Best,
    /// Stopped by the pruning rule.
    Pruned,
    /// Failed.
    Failed,
}

/// One trial's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// One value per axis, in axis order; a value the axis cannot place (null, a value not
    /// listed) leaves that axis out of the line.
    pub values: Vec<Value>,
    /// How it is drawn.
    pub style: Style,
    /// Hover text.
    pub title: String,
}

fn fraction(x: f64, low: f64, high: f64) -> f64 {
    if high > low {
        ((x - low) / (high - low)).clamp(0.0, 1.0)
    } else {
        0.5
    }
}

impl Scale {
    /// Where `value` sits, from 0 (bottom) to 1 (top); `None` when it has no place.
    pub fn position(&self, value: &Value) -> Option<f64> {
        match self {
            Scale::Linear { low, high, .. } => Some(fraction(value.as_f64()?, *low, *high)),
            Scale::Log { low, high, .. } => {
                let x = value.as_f64()?;
                (x > 0.0 && *low > 0.0).then(|| fraction(x.ln(), low.ln(), high.ln()))
            }
            Scale::Categories { values } => {
                let i = values.iter().position(|v| v == value)?;
                Some((i as f64 + 0.5) / values.len() as f64)
            }
        }
    }

    /// `(position, label)` of each tick.
    pub fn ticks(&self) -> Vec<(f64, String)> {
        match self {
            Scale::Categories { values } => values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        (i as f64 + 0.5) / values.len() as f64,
                        short(&value_text(v), 14),
                    )
                })
                .collect(),
            &Scale::Linear { low, high, integer } => {
                let inner = nice_ticks(low, high, 4)
                    .into_iter()
                    .filter(|t| !integer || t.fract() == 0.0);
                with_ends(low, high, inner, |x| fraction(x, low, high), label)
            }
            &Scale::Log { low, high, integer } => {
                if low.is_nan() || low <= 0.0 {
                    return vec![(0.5, label(low))];
                }
                let inner = log_ticks(low, high)
                    .into_iter()
                    .filter(|t| !integer || t.fract() == 0.0);
                // An axis reaching small numbers reads in one notation: 1e-4, 1e-3, 1e-2,
                // not 1e-4, 0.001, 0.01.
                let text = |v: f64| {
                    if low < 1e-2 && v < 1.0 {
                        scientific(v)
                    } else {
                        label(v)
                    }
                };
                with_ends(
                    low,
                    high,
                    inner,
                    |x| fraction(x.ln(), low.ln(), high.ln()),
                    text,
                )
            }
        }
    }
}

/// Powers of ten in `[low, high]`; with fewer than three of them, also 2 and 5 times
/// powers of ten (a range of one or two decades would otherwise show one tick).
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let (first, last) = (low.log10().floor() as i32, high.log10().ceil() as i32);
    let within = |multiples: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|k| multiples.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| *v >= low * (1.0 - 1e-9) && *v <= high * (1.0 + 1e-9))
            .collect()
    };
    let decades = within(&[1.0]);
    let ticks = if decades.len() >= 3 {
        decades
    } else {
        within(&[1.0, 2.0, 5.0])
    };
    // At most about eight: every k-th of a wide range.
    let step = ticks.len().div_ceil(8).max(1);
    ticks.into_iter().step_by(step).collect()
}

/// The axis ends, labelled, and the inner ticks not crowding them.
fn with_ends(
    low: f64,
    high: f64,
    inner: impl Iterator<Item = f64>,
    position: impl Fn(f64) -> f64,
    text: impl Fn(f64) -> String,
) -> Vec<(f64, String)> {
    if high <= low {
        return vec![(0.5, text(low))];
    }
    let mut out = vec![(0.0, text(low))];
    out.extend(
        inner
            .map(|x| (position(x), text(x)))
            .filter(|(p, _)| (0.1..=0.9).contains(p)),
    );
    out.push((1.0, text(high)));
    out
}

/// A JSON scalar as text (strings without quotes).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        text.chars().take(max - 1).chain(['…']).collect()
    } else {
        text.to_owned()
    }
}

/// Colour stops of the objective ramp, worst first (viridis at 0.25, 0.5, 0.75, 0.9: its
/// darkest and lightest ends would vanish on a dark or a light page).
const RAMP: [(u8, u8, u8); 4] = [
    (0x3b, 0x52, 0x8b),
    (0x21, 0x91, 0x8c),
    (0x5e, 0xc9, 0x62),
    (0xbd, 0xdf, 0x26),
];

/// The ramp's colour at `t` (0 worst, 1 best).
pub fn shade(t: f64) -> String {
    let x = t.clamp(0.0, 1.0) * (RAMP.len() - 1) as f64;
    let i = (x.floor() as usize).min(RAMP.len() - 2);
    let f = x - i as f64;
    let (a, b) = (RAMP[i], RAMP[i + 1]);
    let mix = |p: u8, q: u8| (f64::from(p) + (f64::from(q) - f64::from(p)) * f).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

const TOP: f64 = 52.0;
const PLOT_H: f64 = 240.0;
const LEFT: f64 = 96.0;
const RIGHT: f64 = 48.0;
const PRUNED: &str = "#888888";
const FAILED: &str = "#D55E00";

/// The chart: `axes` left to right, one polyline per trace; `key` labels the colour ramp's
/// worst and best ends (e.g. `("0.41 (worst)", "0.73 (best)")`).
pub fn chart(axes: &[Axis], traces: &[Trace], key: (&str, &str)) -> String {
    let n = axes.len().max(1);
    let width = (120.0 * n as f64).max(760.0);
    let bottom = TOP + PLOT_H;
    let height = bottom + 64.0;
    let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
    let mut svg = open_svg(
        width,
        height,
        &format!("parallel coordinates of {}", names.join(", ")),
    );
    let spacing = if n > 1 {
        (width - LEFT - RIGHT) / (n - 1) as f64
    } else {
        0.0
    };
    let x_of = |i: usize| {
        if n > 1 {
            LEFT + i as f64 * spacing
        } else {
            width / 2.0
        }
    };
    let y_of = |p: f64| bottom - p * PLOT_H;

    // Lines first (axes and labels go on top): failed and pruned at the back, then complete
    // trials from worst to best, the best last.
    let rank = |t: &Trace| match t.style {
        Style::Failed => -3.0,
        Style::Pruned => -2.0,
        Style::Shade(s) => s.clamp(0.0, 1.0) - 1.0,
        Style::Best => 1.0,
    };
    let mut order: Vec<&Trace> = traces.iter().collect();
    order.sort_by(|a, b| rank(a).total_cmp(&rank(b)));
    for t in order {
        let points: Vec<String> = axes
            .iter()
            .zip(&t.values)
            .enumerate()
            .filter_map(|(i, (axis, v))| {
                let p = axis.scale.position(v)?;
                Some(format!("{:.1},{:.1}", x_of(i), y_of(p)))
            })
            .collect();
        let style = match t.style {
            Style::Shade(s) => {
                format!(r#"stroke="{}" stroke-width="1.6" opacity="0.85""#, shade(s))
            }
            Style::Best => r#"stroke="currentColor" stroke-width="3.5""#.to_owned(),
            Style::Pruned => {
                format!(
                    r#"stroke="{PRUNED}" stroke-width="1.3" stroke-dasharray="6 4" opacity="0.6""#
                )
            }
            Style::Failed => {
                format!(
                    r#"stroke="{FAILED}" stroke-width="1.3" stroke-dasharray="2 3" opacity="0.6""#
                )
            }
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke-linejoin="round" {style} points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(&t.title)
        );
    }

    // Axes: the line, the name above (staggered on two rows when names would collide),
    // ticks with haloed labels to the left.
    let stagger = spacing > 0.0 && spacing < 150.0;
    for (i, axis) in axes.iter().enumerate() {
        let x = x_of(i);
        let _ = write!(
            svg,
            r#"<line class="axis" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{bottom}"/>"#
        );
        for (p, text) in axis.scale.ticks() {
            let y = y_of(p);
            let _ = write!(
                svg,
                r#"<line class="axis" x1="{:.1}" x2="{x:.1}" y1="{y:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick halo">{}</text>"#,
                x - 4.0,
                x - 6.0,
                y + 4.0,
                escape(&text)
            );
        }
        // The outer names lean inwards so they stay inside the drawing.
        let (anchor, dx) = match i {
            0 if n > 1 => ("start", -12.0),
            i if n > 1 && i == n - 1 => ("end", 12.0),
            _ => ("middle", 0.0),
        };
        let row = if stagger && i % 2 == 1 { 1.0 } else { 0.0 };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" class="axis-label">{}<title>{}</title></text>"#,
            x + dx,
            TOP - 30.0 + row * 16.0,
            escape(&short(&axis.name, 22)),
            escape(&axis.name)
        );
    }

    // Legend: the best line, pruned and failed when there are any, and the colour ramp.
    let y = bottom + 40.0;
    let mut x = LEFT - 60.0;
    let mut entry = |svg: &mut String, style: &str, text: &str| {
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" {style}/><text x="{:.1}" y="{y:.1}" class="legend">{}</text>"#,
            x + 22.0,
            y - 4.0,
            y - 4.0,
            x + 28.0,
            escape(text)
        );
        x += 40.0 + text.chars().count() as f64 * 7.0;
    };
    if traces.iter().any(|t| t.style == Style::Best) {
        entry(
            &mut svg,
            r#"stroke="currentColor" stroke-width="3.5""#,
            "best trial",
        );
    }
    if traces.iter().any(|t| t.style == Style::Pruned) {
        let style = format!(r#"stroke="{PRUNED}" stroke-width="2" stroke-dasharray="6 4""#);
        entry(&mut svg, &style, "pruned");
    }
    if traces.iter().any(|t| t.style == Style::Failed) {
        let style = format!(r#"stroke="{FAILED}" stroke-width="2" stroke-dasharray="2 3""#);
        entry(&mut svg, &style, "failed");
    }
    let stops: String = (0..RAMP.len())
        .map(|i| {
            let t = i as f64 / (RAMP.len() - 1) as f64;
            format!(r#"<stop offset="{t:.3}" stop-color="{}"/>"#, shade(t))
        })
        .collect();
    let key_left = x + 8.0 + key.0.chars().count() as f64 * 7.0;
    let _ = write!(
        svg,
        r#"<defs><linearGradient id="pc-ramp">{stops}</linearGradient></defs><text x="{x:.1}" y="{y:.1}" class="legend">{}</text><rect x="{key_left:.1}" y="{:.1}" width="120" height="10" fill="url(#pc-ramp)"/><text x="{:.1}" y="{y:.1}" class="legend">{}</text>"#,
        escape(key.0),
        y - 9.0,
        key_left + 128.0,
        escape(key.1)
    );
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn axes() -> Vec<Axis> {
        vec![
            Axis {
                name: "learning_rate".into(),
                scale: Scale::Log {
                    low: 1e-5,
                    high: 1e-3,
                    integer: false,
                },
            },
            Axis {
                name: "method <b>".into(),
                scale: Scale::Categories {
                    values: vec![json!("lora"), json!("dora")],
                },
            },
            Axis {
                name: "rank".into(),
                scale: Scale::Linear {
                    low: 1.0,
                    high: 12.0,
                    integer: true,
                },
            },
        ]
    }

    #[test]
    fn scales_place_values_in_their_own_scale() {
        let [lr, method, rank] = <[Axis; 3]>::try_from(axes()).unwrap();
        assert!((lr.scale.position(&json!(1e-4)).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(lr.scale.position(&json!(1.0)), Some(1.0), "clamped");
        assert_eq!(lr.scale.position(&Value::Null), None);
        assert_eq!(method.scale.position(&json!("lora")), Some(0.25));
        assert_eq!(method.scale.position(&json!("dora")), Some(0.75));
        assert_eq!(method.scale.position(&json!("full")), None);
        assert_eq!(rank.scale.position(&json!(12)), Some(1.0));
        let labels =
            |a: &Axis| -> Vec<String> { a.scale.ticks().into_iter().map(|t| t.1).collect() };
        assert_eq!(labels(&lr), ["1e-5", "1e-4", "1e-3"]);
        assert_eq!(labels(&method), ["lora", "dora"]);
        assert_eq!(
            labels(&rank),
            ["1", "5", "10", "12"],
            "whole numbers and both ends"
        );
        let narrow = Scale::Log {
            low: 2e-5,
            high: 2e-3,
            integer: false,
        };
        let ticks: Vec<String> = narrow.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(
            ticks,
            ["2e-5", "5e-5", "1e-4", "2e-4", "5e-4", "1e-3", "2e-3"]
        );
        assert_eq!(shade(0.0), "#3b528b");
        assert_eq!(shade(1.0), "#bddf26");
    }

    #[test]
    fn one_line_per_trace_with_labelled_axes() {
        let trace = |lr: f64, method: &str, rank: i64, style| Trace {
            values: vec![json!(lr), json!(method), json!(rank)],
            style,
            title: format!("lr {lr}"),
        };
        let svg = chart(
            &axes(),
            &[
                trace(1e-4, "lora", 4, Style::Shade(0.0)),
                trace(3e-4, "dora", 8, Style::Best),
                trace(1e-3, "dora", 12, Style::Pruned),
                Trace {
                    values: vec![json!(1e-5), json!("unlisted"), json!(2)],
                    style: Style::Failed,
                    title: "failed".into(),
                },
            ],
            ("0.1 (worst)", "0.9 (best)"),
        );
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains(">learning_rate<") && svg.contains(">rank<"));
        assert!(svg.contains(">method &lt;b&gt;<") && !svg.contains("<b>"));
        assert!(svg.contains(">1e-4<") && svg.contains(">dora<"));
        // The best line is drawn last and bold; pruned dashed; failed dotted.
        let last = svg.rfind("<polyline").unwrap();
        assert!(
            svg[last..].starts_with(
                r#"<polyline fill="none" stroke-linejoin="round" stroke="currentColor""#
            )
        );
        assert!(svg.contains(r#"stroke-dasharray="6 4" opacity="0.6""#));
        // The failed trial's unlisted choice leaves that axis out: two points, not three.
        let failed = svg.find("<title>failed</title>").unwrap();
        let start = svg[..failed].rfind("points=\"").unwrap() + 8;
        let points = svg[start..].split('"').next().unwrap();
        assert_eq!(points.split(' ').count(), 2, "{points}");
        assert!(
            svg.contains("0.1 (worst)") && svg.contains("best trial") && svg.contains("pruned")
        );
        assert!(svg.ends_with("</svg>"));
    }
}
