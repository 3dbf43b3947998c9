//! The pictures in docs/benchmarks.md, drawn from the JSON results with plotters' SVG backend (no system fonts).

use std::path::Path;

use plotters::prelude::*;

use crate::Row;
use crate::compare::Side;

type Points = Vec<(f64, f64)>;

/// One chart: `lines` against peers (log scale), `marks` as single labelled points (ESO at its peer count).
fn chart(
    file: &Path,
    title: &str,
    y_label: &str,
    lines: &[(&str, Points, RGBColor)],
    marks: &[(&str, (f64, f64), RGBColor)],
) -> Result<(), String> {
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.1.clone())
        .chain(marks.iter().map(|m| m.1))
        .collect();
    let y_max = all
        .iter()
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(file, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((5f64..2000f64).log_scale(), 0f64..y_max)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc("peers")
        .y_desc(y_label)
        .x_labels(4)
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, points, color) in lines {
        let color = *color;
        c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        c.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    for (name, point, color) in marks {
        let color = *color;
        c.draw_series(std::iter::once(TriangleMarker::new(
            *point,
            7,
            color.filled(),
        )))
        .map_err(|e| e.to_string())?
        .label(*name)
        .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, color.filled()));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// The never-rotated rows as a line; rotated rows are drawn as marks.
fn points(rows: &[Row], f: impl Fn(&Row) -> f64) -> Points {
    rows.iter()
        .filter(|r| r.error.is_none() && !r.rotated)
        .map(|r| (r.peers as f64, f(r)))
        .filter(|p| p.1.is_finite())
        .collect()
}

/// Draws docs/img/propagation.svg and docs/img/memory.svg.
pub fn draw(dir: &Path, rows: &[Row], eso: &[Side], eso_peers: usize) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (blue, red, orange) = (
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
    );
    let x = eso_peers as f64;
    let fast = eso.iter().find(|s| s.name.contains("10s"));
    let mut marks = Vec::new();
    if let Some(s) = fast {
        marks.push(("ESO 10s refresh p50", (x, s.propagation_p50_s), orange));
        marks.push(("ESO 10s refresh p99", (x, s.propagation_p99_s), red));
    }
    let rotated: Vec<&Row> = rows
        .iter()
        .filter(|r| r.rotated && r.error.is_none())
        .collect();
    let purple = RGBColor(148, 103, 189);
    let label = |r: &Row, what: &str| {
        format!(
            "{what}, rotation {}",
            r.rotation.as_deref().unwrap_or("done")
        )
    };
    let rotated_labels: Vec<String> = rotated.iter().map(|r| label(r, "meshtrust p99")).collect();
    for (r, name) in rotated.iter().zip(&rotated_labels) {
        marks.push((name.as_str(), (r.peers as f64, r.propagation_p99_s), purple));
    }
    chart(
        &dir.join("propagation.svg"),
        "Propagation of a peer's new kubeconfig",
        "seconds",
        &[
            ("meshtrust p50", points(rows, |r| r.propagation_p50_s), blue),
            (
                "meshtrust p99",
                points(rows, |r| r.propagation_p99_s),
                RGBColor(44, 160, 44),
            ),
        ],
        &marks,
    )?;
    let mut memory: Vec<_> = eso
        .iter()
        .filter(|s| s.name.starts_with("ESO"))
        .take(1)
        .map(|s| ("ESO RSS at idle", (x, s.rss_mib), red))
        .collect();
    let memory_labels: Vec<String> = rotated.iter().map(|r| label(r, "RSS")).collect();
    for (r, name) in rotated.iter().zip(&memory_labels) {
        memory.push((name.as_str(), (r.peers as f64, r.rss_mib), purple));
    }
    chart(
        &dir.join("memory.svg"),
        "Resident memory at idle",
        "MiB",
        &[("meshtrust agent RSS", points(rows, |r| r.rss_mib), blue)],
        &memory,
    )
}
