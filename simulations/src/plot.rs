//! SVG plots of a run: propagation delay CDF per region pair, and the share of replicas in
//! agreement over time around the heal. Drawing only; the data comes from the run.

use crate::metrics::Histogram;
use plotters::prelude::*;
use std::path::Path;

/// A line on the propagation plot: a region pair and its delay histogram.
pub struct PairCdf<'a> {
    /// `"us-east -> eu-west"`.
    pub label: String,
    /// Delays in ms.
    pub delays: &'a Histogram,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Draws the propagation-delay CDF of each region pair into an SVG at `path`, on a
/// logarithmic time axis (deliveries within a region take about a millisecond, those across
/// a healed partition tens of seconds).
pub fn propagation_cdf(path: &Path, title: &str, pairs: &[PairCdf<'_>]) -> Result<(), String> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = pairs
        .iter()
        .map(|p| p.delays.max())
        .max()
        .unwrap_or(1)
        .max(10) as f64
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("propagation delay, virtual ms from the origin's ack to the replica's apply (log scale)")
        .y_desc("share of deliveries")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err)?;
    for (i, pair) in pairs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let cdf = pair.delays.cdf();
        // A step up at the first delay, not a ramp from the axis.
        let first = cdf.first().map_or(1.0, |&(v, _)| (v as f64).max(1.0));
        let mut points = vec![(first, 0.0)];
        for (v, f) in cdf {
            points.push(((v as f64).max(1.0), f));
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(pair.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Draws replica agreement over time: the share of replicas holding every acknowledged
/// update, and the mean share of the updates a replica holds, with a vertical line at each
/// fault event (grey) and at the last heal (red). `samples` are `(seconds since the start,
/// share complete, mean share held)`.
pub fn agreement(
    path: &Path,
    title: &str,
    samples: &[(f64, f64, f64)],
    fault_times: &[f64],
    heal_time: f64,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = samples.last().map(|s| s.0).unwrap_or(1.0).max(heal_time) * 1.02 + 0.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("share")
        .draw()
        .map_err(err)?;
    for &t in fault_times {
        chart
            .draw_series(LineSeries::new(
                vec![(t, 0.0), (t, 1.05)],
                RGBColor(200, 200, 200),
            ))
            .map_err(err)?;
    }
    chart
        .draw_series(LineSeries::new(
            vec![(heal_time, 0.0), (heal_time, 1.05)],
            RED.stroke_width(2),
        ))
        .map_err(err)?
        .label("last heal")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.0, s.2)),
            GREEN.stroke_width(2),
        ))
        .map_err(err)?
        .label("updates held by a replica (mean share)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.0, s.1)),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label("replicas holding every update")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
