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

/// Draws the propagation-delay CDF of each region pair into an SVG at `path`.
pub fn propagation_cdf(path: &Path, title: &str, pairs: &[PairCdf<'_>]) -> Result<(), String> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    // Cut the long tail so the body of the curves is readable: up to the worst p99.
    let x_max = pairs
        .iter()
        .map(|p| p.delays.quantile(0.99))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("propagation delay (virtual ms, origin ack to replica apply)")
        .y_desc("share of deliveries")
        .draw()
        .map_err(err)?;
    for (i, pair) in pairs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut points = vec![(0.0, 0.0)];
        for (v, f) in pair.delays.cdf() {
            if (v as f64) > x_max {
                points.push((x_max, f));
                break;
            }
            points.push((v as f64, f));
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

/// Draws the share of replicas holding every acknowledged update over time, with a vertical
/// line at each fault event (grey) and at the last heal (red). Times are seconds of virtual
/// time since the start of the run.
pub fn agreement(
    path: &Path,
    title: &str,
    samples: &[(f64, f64)],
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
        .y_desc("replicas holding every acknowledged update")
        .draw()
        .map_err(err)?;
    for &t in fault_times {
        chart
            .draw_series(LineSeries::new(
                vec![(t, 0.0), (t, 1.05)],
                RGBColor(190, 190, 190),
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
            samples.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label("replicas in agreement")
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
