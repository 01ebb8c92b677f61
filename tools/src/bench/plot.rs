//! A hand-written SVG of a benchmark run: the latency percentile curves (log latency against
//! "nines": 0%, 90%, 99%, … 99.999%, max) and throughput over time. No plotting crate: the
//! picture is a few hundred lines of plain SVG elements.

use std::fmt::Write as _;

use crate::units::fmt_ns;

/// One latency distribution to draw: (nines, latency in ns) points, see
/// [`super::hist::percentile_curve`].
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 760.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 220.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// Escape text for an SVG text node or attribute.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Panel {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
}

impl Panel {
    fn frame(&self, svg: &mut String, title: &str, x_label: &str, y_label: &str) {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fcfcfc" stroke="#333"/>
<text x="{:.1}" y="{:.1}" font-size="15" font-weight="bold">{}</text>
<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>
<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>
"##,
            self.x0,
            self.y0,
            self.w,
            self.h,
            self.x0,
            self.y0 - 10.0,
            esc(title),
            self.x0 + self.w / 2.0,
            self.y0 + self.h + 36.0,
            esc(x_label),
            self.x0 - 62.0,
            self.y0 + self.h / 2.0,
            self.x0 - 62.0,
            self.y0 + self.h / 2.0,
            esc(y_label),
        );
    }

    fn x_tick(&self, svg: &mut String, x: f64, label: &str) {
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>
<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>
"##,
            self.y0,
            self.y0 + self.h,
            self.y0 + self.h + 16.0,
            esc(label)
        );
    }

    fn y_tick(&self, svg: &mut String, y: f64, label: &str) {
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>
<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>
"##,
            self.x0,
            self.x0 + self.w,
            self.x0 - 6.0,
            y + 4.0,
            esc(label)
        );
    }
}

/// Render the run as an SVG document.
pub fn render(title: &str, subtitle: &str, curves: &[Curve], timeline: &[(f64, f64)]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="28" font-size="18" font-weight="bold">{}</text>
<text x="{LEFT}" y="48" font-size="12" fill="#555">{}</text>
"##,
        esc(title),
        esc(subtitle)
    );

    // Latency percentile curves.
    let lat = Panel {
        x0: LEFT,
        y0: 90.0,
        w: WIDTH - LEFT - RIGHT,
        h: 360.0,
    };
    lat.frame(
        &mut svg,
        "Latency by percentile",
        "percentile",
        "latency (log scale)",
    );
    let values: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0f64, f64::max);
    let (lo_dec, hi_dec) = if values.is_empty() {
        (2.0, 6.0)
    } else {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    };
    let x_of = |nines: f64| lat.x0 + nines / 5.5 * lat.w;
    let y_of = |ns: f64| {
        let l = ns.max(1.0).log10().clamp(lo_dec, hi_dec);
        lat.y0 + lat.h - (l - lo_dec) / (hi_dec - lo_dec) * lat.h
    };
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
        (5.5, "max"),
    ] {
        lat.x_tick(&mut svg, x_of(nines), label);
    }
    let mut dec = lo_dec;
    while dec <= hi_dec {
        lat.y_tick(&mut svg, y_of(10f64.powf(dec)), &fmt_ns(10f64.powf(dec)));
        dec += 1.0;
    }
    for (i, c) in curves.iter().enumerate() {
        if c.points.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        for (j, &(nines, ns)) in c.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                x_of(nines),
                y_of(ns)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path d="{}" fill="none" stroke="{color}" stroke-width="2"/>"##,
            d.trim_end()
        );
        let ly = lat.y0 + 20.0 + i as f64 * 20.0;
        let lx = lat.x0 + lat.w + 16.0;
        let _ = write!(
            svg,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/>
<text x="{:.1}" y="{:.1}" font-size="12">{}</text>
"##,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            esc(&c.name)
        );
    }

    // Throughput over time.
    let tp = Panel {
        x0: LEFT,
        y0: 520.0,
        w: WIDTH - LEFT - RIGHT,
        h: 180.0,
    };
    tp.frame(&mut svg, "Throughput over time", "seconds", "messages/s");
    let t_max = timeline
        .iter()
        .map(|p| p.0)
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let r_max = timeline.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0);
    let tx = |t: f64| tp.x0 + t / t_max * tp.w;
    let ty = |r: f64| tp.y0 + tp.h - r / r_max * tp.h;
    for i in 0..=4 {
        let t = t_max * f64::from(i) / 4.0;
        tp.x_tick(&mut svg, tx(t), &format!("{t:.1}"));
        let r = r_max * f64::from(i) / 4.0;
        tp.y_tick(&mut svg, ty(r), &format_rate(r));
    }
    if !timeline.is_empty() {
        let mut d = String::new();
        for (j, &(t, r)) in timeline.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                tx(t),
                ty(r)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path d="{}" fill="none" stroke="{}" stroke-width="2"/>"##,
            d.trim_end(),
            COLORS[0]
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.1}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.0}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_document_with_escaped_text() {
        let curve = Curve {
            name: "put <1 KiB> & co".into(),
            points: vec![(0.0, 1000.0), (2.0, 5000.0), (5.5, 80_000.0)],
        };
        let svg = render("t", "s", &[curve], &[(0.1, 10.0), (0.2, 20.0)]);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("put &lt;1 KiB&gt; &amp; co"));
        let empty = render("t", "s", &[], &[]);
        assert!(empty.contains("<svg"));
    }
}
