//! `--plot FILE.svg`: the latency percentile curve, drawn with `plotters`.
//!
//! The x axis is the percentile on the usual HDR scale, `log10(1 / (1 - q))`, so
//! 90%, 99%, 99.9% and 99.99% are evenly spaced and the tail gets room; the y axis
//! is the latency in milliseconds. Only the SVG backend is used, and text is placed
//! by plotters' built-in estimate: no font files, no system libraries.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::report::Report;

/// Picture size in pixels.
pub const PLOT_SIZE: (u32, u32) = (800, 480);
/// Points per halving of the distance to 100% on the curve.
const QUANTILE_TICKS: u32 = 8;
/// Highest percentile drawn: 99.999%, five nines.
pub const MAX_NINES: f64 = 5.0;

/// The x position of quantile `q` (0 ≤ q < 1).
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-9)).log10().min(MAX_NINES)
}

/// Colours of the curves, in order.
const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, RGBColor(255, 140, 0), BLACK];

/// Draws `report`'s latency curve (and the fan-out curve, if any) into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let mut curves = vec![("request latency".to_string(), curve(&report.histogram))];
    if let Some(h) = report.push_histogram.as_ref().filter(|h| !h.is_empty()) {
        curves.push(("send -> subscriber push".to_string(), curve(h)));
    }
    if curves[0].1.is_empty() {
        return Err("no latency was recorded".into());
    }
    let caption = format!(
        "userbus {}: {} conns, P={}, {:.0} req/s",
        report.test, report.connections, report.pipeline, report.requests_per_sec
    );
    draw_curves(&caption, &curves, path)
}

/// Draws recorded percentile curves into `path`: each of `specs` is
/// `LABEL=FILE`, FILE holding "percentile milliseconds" lines (percentile in
/// 0..=100, as redis-benchmark's "Latency by percentile distribution").
pub fn draw_files(title: &str, specs: &[String], path: &Path) -> Result<(), String> {
    let mut curves = Vec::with_capacity(specs.len());
    for spec in specs {
        let (label, file) = spec
            .split_once('=')
            .ok_or_else(|| format!("--curve {spec}: expected LABEL=FILE"))?;
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let points = parse_percentiles(&text);
        if points.is_empty() {
            return Err(format!("{file}: no \"percentile milliseconds\" lines"));
        }
        curves.push((label.to_string(), points));
    }
    if curves.is_empty() {
        return Err("no curve given".into());
    }
    draw_curves(title, &curves, path)
}

/// (x, milliseconds) points of "percentile milliseconds" lines; other lines are
/// skipped.
fn parse_percentiles(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let pct: f64 = words.next()?.trim_end_matches('%').parse().ok()?;
            let ms: f64 = words.next()?.parse().ok()?;
            (0.0..=100.0)
                .contains(&pct)
                .then(|| (nines(pct / 100.0), ms))
        })
        .collect()
}

/// Draws `curves` (label, points) into `path` under `caption`.
fn draw_curves(
    caption: &str,
    curves: &[(String, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<(), String> {
    let all = || curves.iter().flat_map(|c| c.1.iter());
    let top = all().map(|p| p.1).fold(0.0f64, f64::max).max(0.001) * 1.1;
    let right = all().map(|p| p.0).fold(1.0f64, f64::max).ceil();

    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..right, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(right as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A histogram (microseconds) as (x, milliseconds) points.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(QUANTILE_TICKS)
        .map(|v| {
            (
                nines(v.quantile_iterated_to()),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect()
}

/// `0 → 0%`, `1 → 90%`, `2 → 99%`, `3 → 99.9%` ...
fn percentile_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let pct = q * 100.0;
    let digits = (x.round() as usize).saturating_sub(2);
    format!("{pct:.digits$}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn recorded_percentiles_parse_with_or_without_the_sign() {
        let text = "50.000 0.543\n99.9% 4.887\nLatency by percentile\n100.000 5.1\n";
        let points = parse_percentiles(text);
        assert_eq!(points.len(), 3);
        assert!((points[1].0 - 3.0).abs() < 1e-9);
        assert_eq!(points[2], (MAX_NINES, 5.1));
    }
}
