//! Line charts as SVG text, written by hand (no plotting dependency): panels side by side, each
//! with its axes (linear or logarithmic), grid, tick labels and axis labels, and one legend for
//! all of them below. Plain SVG 1.1 (no scripts, no CSS, no external fonts), so that browsers
//! and GitHub's image view render it alike, on a white background that dark themes keep.

use std::fmt::Write;

/// One line: its points in data units, drawn in the order given.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
    pub dashed: bool,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    Log,
}

pub struct Axis {
    pub label: String,
    pub scale: Scale,
    /// Ticks at these values with these labels (e.g. the message sizes); `None`: chosen from
    /// the data (1-2-5 steps, or decades and their 2 and 5 on a log scale).
    pub ticks: Option<Vec<(f64, String)>>,
}

pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

/// Colours that stay apart for readers with the common colour-vision deficiencies (Okabe-Ito).
pub const PALETTE: [&str; 6] = [
    "#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

const PANEL_W: f64 = 480.0;
const PANEL_H: f64 = 330.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 60.0;
const MARGIN_B: f64 = 55.0;
const LEGEND_H: f64 = 30.0;

/// A chart of `panels` side by side under `title`.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len() as f64;
    let height = PANEL_H + LEGEND_H + 10.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\" \
         font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        draw_panel(&mut out, panel, i as f64 * PANEL_W);
    }
    // One legend: every series name once, in order of first appearance.
    let mut seen: Vec<&Series> = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if !seen.iter().any(|x| x.name == s.name) {
            seen.push(s);
        }
    }
    let item_w = 170.0;
    let x0 = (width - item_w * seen.len() as f64).max(0.0) / 2.0;
    let y = PANEL_H + LEGEND_H / 2.0;
    for (i, s) in seen.iter().enumerate() {
        let x = x0 + i as f64 * item_w;
        let _ = writeln!(
            out,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"2.5\"{}/>\
             <circle cx=\"{}\" cy=\"{y}\" r=\"3.5\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            x + 28.0,
            s.color,
            dash(s.dashed),
            x + 14.0,
            s.color,
            x + 34.0,
            y + 4.0,
            escape(&s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Data to pixels along one axis.
struct Map {
    scale: Scale,
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Map {
    fn at(&self, v: f64) -> f64 {
        let (v, lo, hi) = match self.scale {
            Scale::Linear => (v, self.lo, self.hi),
            Scale::Log => (v.log10(), self.lo.log10(), self.hi.log10()),
        };
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        self.from + t * (self.to - self.from)
    }
}

fn draw_panel(out: &mut String, panel: &Panel, left: f64) {
    let (x0, x1) = (left + MARGIN_L, left + PANEL_W - MARGIN_R);
    let (y0, y1) = (PANEL_H - MARGIN_B, MARGIN_T);
    let points = || panel.series.iter().flat_map(|s| s.points.iter().copied());
    let valid = |scale: Scale, v: f64| v.is_finite() && (scale == Scale::Linear || v > 0.0);
    let xs: Vec<f64> = points()
        .map(|p| p.0)
        .filter(|&v| valid(panel.x.scale, v))
        .collect();
    let ys: Vec<f64> = points()
        .map(|p| p.1)
        .filter(|&v| valid(panel.y.scale, v))
        .collect();
    let (xlo, xhi, xticks) = domain(&panel.x, &xs, false);
    let (ylo, yhi, yticks) = domain(&panel.y, &ys, true);
    let mx = Map {
        scale: panel.x.scale,
        lo: xlo,
        hi: xhi,
        from: x0,
        to: x1,
    };
    let my = Map {
        scale: panel.y.scale,
        lo: ylo,
        hi: yhi,
        from: y0,
        to: y1,
    };
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"46\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        (x0 + x1) / 2.0,
        escape(&panel.title)
    );
    for (v, label) in &yticks {
        let y = my.at(*v);
        let _ = writeln!(
            out,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444444\">{}</text>",
            x0 - 6.0,
            y + 4.0,
            escape(label)
        );
    }
    for (v, label) in &xticks {
        let x = mx.at(*v);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{y1}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444444\">{}</text>",
            y0 + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{x0}\" y=\"{y1}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888888\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        x1 - x0,
        y0 - y1,
        (x0 + x1) / 2.0,
        y0 + 38.0,
        escape(&panel.x.label),
        left + 16.0,
        (y0 + y1) / 2.0,
        escape(&panel.y.label)
    );
    for s in &panel.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| valid(panel.x.scale, *x) && valid(panel.y.scale, *y))
            .map(|&(x, y)| (mx.at(x), my.at(y)))
            .collect();
        if pts.len() > 1 {
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>",
                path.join(" "),
                s.color,
                dash(s.dashed)
            );
        }
        // Markers only where they stay apart (a soak has hundreds of points).
        if pts.len() <= 40 {
            for (x, y) in pts {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{}\"/>",
                    s.color
                );
            }
        }
    }
}

fn dash(dashed: bool) -> &'static str {
    if dashed {
        " stroke-dasharray=\"6,4\""
    } else {
        ""
    }
}

/// The axis's range and its ticks. `from_zero`: a linear axis starts at 0 (a y axis of
/// amounts), so that differences are not magnified.
fn domain(axis: &Axis, values: &[f64], from_zero: bool) -> (f64, f64, Vec<(f64, String)>) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() {
        (lo, hi)
    } else {
        (1.0, 10.0)
    };
    if let Some(ticks) = &axis.ticks {
        let tlo = ticks.iter().map(|t| t.0).fold(lo, f64::min);
        let thi = ticks.iter().map(|t| t.0).fold(hi, f64::max);
        // A little room so that the first and last points do not sit on the frame.
        let (plo, phi) = match axis.scale {
            Scale::Log => (tlo / (thi / tlo).powf(0.04), thi * (thi / tlo).powf(0.04)),
            Scale::Linear => {
                let pad = (thi - tlo).max(1.0) * 0.04;
                (tlo - pad, thi + pad)
            }
        };
        return (plo, phi, ticks.clone());
    }
    match axis.scale {
        Scale::Log => {
            let (dlo, dhi) = (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            );
            let (plo, phi) = (10f64.powf(dlo), 10f64.powf(dhi));
            let mut ticks = Vec::new();
            for d in dlo as i32..=dhi as i32 {
                for m in [1.0, 2.0, 5.0] {
                    let v = m * 10f64.powi(d);
                    // Few decades: 1, 2, 5 each; many: the decades alone.
                    if v >= plo && v <= phi && (m == 1.0 || dhi - dlo <= 2.0) {
                        ticks.push((v, number(v)));
                    }
                }
            }
            (plo, phi, ticks)
        }
        Scale::Linear => {
            let lo = if from_zero { lo.min(0.0) } else { lo };
            let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
            let step = nice_step(span / 6.0);
            let (plo, phi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
            let phi = if phi > plo { phi } else { plo + step };
            let n = ((phi - plo) / step).round() as usize;
            let ticks = (0..=n)
                .map(|i| plo + i as f64 * step)
                .map(|v| (v, number(v)))
                .collect();
            (plo, phi, ticks)
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

/// A tick label: `0.5`, `20`, `1.5k`, `20k`, `2M`.
pub fn number(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_steps() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(20.0), "20");
        assert_eq!(number(1500.0), "1.5k");
        assert_eq!(number(20000.0), "20k");
        assert_eq!(number(2e6), "2M");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(12.0), 20.0);
        assert_eq!(nice_step(100.0), 100.0);
    }

    #[test]
    fn a_chart_is_well_formed_svg() {
        let panel = |title: &str| Panel {
            title: title.into(),
            x: Axis {
                label: "size".into(),
                scale: Scale::Log,
                ticks: Some(vec![(64.0, "64 B".into()), (65536.0, "64 KiB".into())]),
            },
            y: Axis {
                label: "µs".into(),
                scale: Scale::Log,
                ticks: None,
            },
            series: vec![Series {
                name: "A & B".into(),
                points: vec![(64.0, 17.0), (65536.0, 140.0), (1024.0, f64::NAN)],
                color: PALETTE[0],
                dashed: true,
            }],
        };
        let svg = svg("t <1>", &[panel("one"), panel("two")]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("A &amp; B") && svg.contains("t &lt;1&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
