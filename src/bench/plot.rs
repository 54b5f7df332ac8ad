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

/// Draws `report`'s latency curve (and the fan-out curve, if any) into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let mut curves = vec![("request latency", curve(&report.histogram), BLUE)];
    if let Some(h) = report.push_histogram.as_ref().filter(|h| !h.is_empty()) {
        curves.push(("send -> subscriber push", curve(h), RED));
    }
    if curves[0].1.is_empty() {
        return Err("no latency was recorded".into());
    }
    let all = || curves.iter().flat_map(|c| c.1.iter());
    let top = all().map(|p| p.1).fold(0.0f64, f64::max).max(0.001) * 1.1;
    let right = all().map(|p| p.0).fold(1.0f64, f64::max).ceil();

    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let caption = format!(
        "userbus {}: {} conns, P={}, {:.0} req/s",
        report.test, report.connections, report.pipeline, report.requests_per_sec
    );
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
    for (label, points, color) in curves {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
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
}
