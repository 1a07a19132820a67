//! The plot: p50 latency and throughput against the number of clients, one
//! line per measurement (floors dashed, keyhaven solid, peers dotted), as
//! a self-contained SVG.

use std::fmt::Write as _;

use crate::report::{Group, Measurement, Report};

const WIDTH: f64 = 1100.0;
const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 300.0;
const TOP: f64 = 70.0;
const LEFTS: [f64; 2] = [90.0, 640.0];
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// A log-scaled axis over `[lo, hi]` (both > 0).
#[derive(Debug, Clone, Copy)]
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// The axis covering `values` (positive ones), widened to whole decades
    /// when `decades`, else by a little on each side.
    fn covering(values: impl Iterator<Item = f64>, decades: bool) -> Option<Self> {
        let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi <= 0.0 {
            return None;
        }
        if decades {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil());
            if hi <= lo {
                hi = lo * 10.0;
            }
        } else {
            if hi <= lo {
                hi = lo * 2.0;
            }
            lo /= 1.25;
            hi *= 1.25;
        }
        Some(Self { lo, hi })
    }

    /// Where `v` falls, 0.0 (lo) to 1.0 (hi).
    fn frac(self, v: f64) -> f64 {
        (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
    }

    /// The powers of ten within the axis.
    fn decades(self) -> Vec<f64> {
        let (a, b) = (
            self.lo.log10().ceil() as i32,
            self.hi.log10().floor() as i32,
        );
        (a..=b).map(|e| 10f64.powi(e)).collect()
    }
}

/// Text escaped for XML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A latency tick label: `1 µs`, `100 µs`, `10 ms`, `1 s`.
fn latency_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else if us >= 1.0 {
        format!("{us} µs")
    } else {
        format!("{} ns", us * 1e3)
    }
}

/// A rate tick label: `100`, `10k`, `1M`.
fn rate_label(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{}M", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{}k", ops / 1e3)
    } else {
        format!("{ops}")
    }
}

/// The stroke pattern of a group.
fn dash(group: Group) -> &'static str {
    match group {
        Group::Floor => " stroke-dasharray=\"7 4\"",
        Group::Keyhaven => "",
        Group::Peer => " stroke-dasharray=\"2 3\"",
    }
}

/// One panel: frame, ticks, labels and a line per measurement.
struct Panel<'a> {
    left: f64,
    title: &'a str,
    y_label: &'a str,
    x: LogAxis,
    y: LogAxis,
    y_tick: fn(f64) -> String,
    value: fn(&crate::stats::Summary) -> f64,
}

impl Panel<'_> {
    fn px(&self, clients: f64) -> f64 {
        self.left + self.x.frac(clients) * PANEL_W
    }

    fn py(&self, v: f64) -> f64 {
        TOP + PANEL_H - self.y.frac(v) * PANEL_H
    }

    fn draw(&self, out: &mut String, lines: &[&Measurement], ticks: &[usize]) {
        let (l, b) = (self.left, TOP + PANEL_H);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            l + PANEL_W / 2.0,
            TOP - 12.0,
            esc(self.title)
        );
        for v in self.y.decades() {
            let y = self.py(v);
            let _ = writeln!(
                out,
                "<line x1=\"{l:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
                l + PANEL_W,
                l - 6.0,
                y + 4.0,
                esc(&(self.y_tick)(v))
            );
        }
        for &c in ticks {
            let x = self.px(c as f64);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" y2=\"{b:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{c}</text>",
                b + 16.0
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{l:.1}\" y=\"{TOP:.1}\" width=\"{PANEL_W:.1}\" height=\"{PANEL_H:.1}\" \
             fill=\"none\" stroke=\"#444\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\">clients \
             (each with its own connection, log scale)</text>\n\
             <text transform=\"translate({:.1} {:.1}) rotate(-90)\" text-anchor=\"middle\" \
             font-size=\"12\">{}</text>",
            l + PANEL_W / 2.0,
            b + 36.0,
            l - 58.0,
            TOP + PANEL_H / 2.0,
            esc(self.y_label)
        );
        for (i, m) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> = m
                .throughput
                .iter()
                .map(|p| (p.clients as f64, (self.value)(&p.summary)))
                .filter(|(c, v)| *c > 0.0 && v.is_finite() && *v > 0.0)
                .map(|(c, v)| (self.px(c), self.py(v)))
                .collect();
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{} points=\"{}\">\
                 <title>{}</title></polyline>",
                dash(m.group),
                path.join(" "),
                esc(&m.name)
            );
            for (x, y) in points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{color}\"/>"
                );
            }
        }
    }
}

/// The plot of `report`'s throughput runs as a standalone SVG document:
/// p50 latency and ops/s against clients, both log-log.
pub fn svg(report: &Report) -> String {
    let lines: Vec<&Measurement> = report
        .measurements
        .iter()
        .filter(|m| !m.throughput.is_empty())
        .collect();
    let mut ticks: Vec<usize> = lines
        .iter()
        .flat_map(|m| m.throughput.iter().map(|p| p.clients))
        .filter(|c| *c > 0)
        .collect();
    ticks.sort_unstable();
    ticks.dedup();
    let legend_rows = lines.len().div_ceil(3);
    let height = TOP + PANEL_H + 70.0 + 22.0 * legend_rows as f64 + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    let title = format!(
        "keyhaven-bench {}: {} CPU{}{}",
        report.version,
        report.machine.cpus,
        if report.machine.cpus == 1 { "" } else { "s" },
        if report.quick {
            " — quick mode (CI): the figures mean nothing"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" \
         font-weight=\"bold\">{}</text>",
        WIDTH / 2.0,
        esc(&title)
    );
    let x = LogAxis::covering(ticks.iter().map(|&c| c as f64), false);
    let lat = LogAxis::covering(
        lines
            .iter()
            .flat_map(|m| m.throughput.iter().map(|p| p.summary.p50_us)),
        true,
    );
    let ops = LogAxis::covering(
        lines
            .iter()
            .flat_map(|m| m.throughput.iter().map(|p| p.summary.ops_per_s)),
        true,
    );
    match (x, lat, ops) {
        (Some(x), Some(lat), Some(ops)) => {
            Panel {
                left: LEFTS[0],
                title: "p50 latency under load",
                y_label: "p50 latency (log scale)",
                x,
                y: lat,
                y_tick: latency_label,
                value: |s| s.p50_us,
            }
            .draw(&mut out, &lines, &ticks);
            Panel {
                left: LEFTS[1],
                title: "throughput",
                y_label: "operations per second (log scale)",
                x,
                y: ops,
                y_tick: rate_label,
                value: |s| s.ops_per_s,
            }
            .draw(&mut out, &lines, &ticks);
        }
        _ => {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no throughput runs in \
                 this report</text>",
                WIDTH / 2.0,
                TOP + PANEL_H / 2.0
            );
        }
    }
    // Legend: three columns under the panels.
    let legend_top = TOP + PANEL_H + 64.0;
    for (i, m) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let (col, row) = (i % 3, i / 3);
        let x = LEFTS[0] + col as f64 * 330.0;
        let y = legend_top + row as f64 * 22.0;
        let kind = match m.group {
            Group::Floor => "floor",
            Group::Keyhaven => "keyhaven",
            Group::Peer => "peer",
        };
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" \
             stroke-width=\"2\"{}/><circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3.5\" \
             fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{} ({kind})</text>",
            x + 34.0,
            dash(m.group),
            x + 17.0,
            x + 42.0,
            y + 4.5,
            esc(&m.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Point;
    use crate::stats::Summary;

    fn point(clients: usize, p50_us: f64, ops_per_s: f64) -> Point {
        Point::new(
            clients,
            Summary {
                p50_us,
                p99_us: p50_us * 3.0,
                ops_per_s,
                samples: 100,
            },
        )
    }

    /// Checks that every element opened is closed, in order.
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let Some(len) = rest[start..].find('>') else {
                return false;
            };
            let tag = &rest[start + 1..start + len];
            rest = &rest[start + len + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.trim()) {
                    return false;
                }
            } else {
                let name = tag.split_whitespace().next().unwrap_or_default();
                stack.push(name);
            }
        }
        stack.is_empty()
    }

    #[test]
    fn one_line_per_measurement_in_each_panel() {
        let mut report = Report::new(true);
        let mut floor = Measurement::new("tonic_echo", Group::Floor, "floor");
        floor.throughput = vec![point(1, 30.0, 20_000.0), point(8, 80.0, 60_000.0)];
        let mut ours = Measurement::new("retrieve <&>", Group::Keyhaven, "ours");
        ours.throughput = vec![point(1, 60.0, 12_000.0), point(8, 200.0, 30_000.0)];
        let mut peer = Measurement::new("secret_tool_lookup", Group::Peer, "latency only");
        peer.latency = Vec::new();
        report.measurements = vec![floor, ours, peer];

        let svg = svg(&report);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(balanced(&svg), "unbalanced SVG:\n{svg}");
        // Two panels, two measurements with throughput points.
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("retrieve &lt;&amp;&gt;"));
        assert!(!svg.contains("secret_tool_lookup"));
        assert!(svg.contains("stroke-dasharray=\"7 4\""));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn an_empty_report_is_still_a_document() {
        let svg = svg(&Report::new(false));
        assert!(balanced(&svg));
        assert_eq!(svg.matches("<polyline").count(), 0);
    }
}
