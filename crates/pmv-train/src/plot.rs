//! PNG plots of a run: loss and accuracy curves, the confusion matrix (up to 50
//! classes) or per-class accuracy (more classes).
//!
//! Drawn with `plotters` on its bitmap backend with a font compiled into the binary
//! (DejaVu Sans, `assets/`), so plots render on machines without any system font.
//! Each image is written to a temporary name and renamed into place. It only draws;
//! the numbers come from [`super::metrics`] and `metrics.jsonl`.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &[u8] = include_bytes!("assets/DejaVuSans.ttf");
/// The family name plots ask for.
const FAMILY: &str = "sans-serif";

/// The largest class count drawn as a confusion matrix.
pub const CONFUSION_MAX_CLASSES: usize = 50;

#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    pub path: PathBuf,
    pub message: String,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            tracing::error!("the bundled plot font did not load");
        }
    });
}

/// Draws into a temporary PNG with `draw`, then renames it to `path`.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<PathBuf, PlotError> {
    register_font();
    let fail = |message: String| PlotError {
        path: path.to_owned(),
        message,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(&fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    fs_err::rename(&tmp, path).map_err(|e| fail(e.to_string()))?;
    Ok(path.to_owned())
}

/// A named series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Mark each point (sparse series such as per-epoch validation).
    pub markers: bool,
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// A line chart of several series against the optimiser step.
pub fn curves(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series<'_>],
    y_range: Option<(f64, f64)>,
) -> Result<PathBuf, PlotError> {
    render(path, (900, 560), |root| {
        let all: Vec<(f64, f64)> = series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
        let (y_min, y_max) = y_range.unwrap_or_else(|| {
            let lo = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = all.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() && hi.is_finite() && hi > lo {
                (lo.min(0.0), hi * 1.05)
            } else {
                (0.0, 1.0)
            }
        });
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, y_min..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("optimiser step")
            .y_desc(y_label)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FAMILY, 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            if s.markers {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

fn short(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_owned()
    } else {
        let mut s: String = name.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

/// The confusion matrix, rows true classes (named) and columns predictions (by index),
/// each row shaded by the fraction of its samples.
pub fn confusion(
    path: &Path,
    title: &str,
    matrix: &[Vec<u64>],
    names: &[String],
) -> Result<PathBuf, PlotError> {
    use plotters::coord::ranged1d::SegmentValue;
    let n = matrix.len().max(1);
    let cell = (720 / n).clamp(12, 60) as u32;
    let label_w = 200u32;
    let size = (label_w + cell * n as u32 + 40, 100 + cell * n as u32 + 50);
    let font = (cell as f64 * 0.45).clamp(9.0, 14.0);
    render(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(label_w)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
            .map_err(|e| e.to_string())?;
        let names_y: Vec<String> = names.iter().map(|s| short(s, 26)).collect();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class (index)")
            .x_labels(n)
            .y_labels(n)
            .label_style((FAMILY, font))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(j) => j.to_string(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| match v {
                // Row i is drawn from the top.
                SegmentValue::CenterOf(y) if *y < n => {
                    let i = n - 1 - y;
                    format!("{i} {}", names_y.get(i).map_or("", String::as_str))
                }
                _ => String::new(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        let at = |v: usize| SegmentValue::Exact(v);
        let mut cells = vec![];
        let mut texts = vec![];
        for (i, row) in matrix.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let y = n - 1 - i;
            for (j, &v) in row.iter().enumerate() {
                let f = if total > 0 {
                    v as f64 / total as f64
                } else {
                    0.0
                };
                let shade = (255.0 * (1.0 - f)) as u8;
                let colour = if i == j {
                    RGBColor(shade, 255 - (f * 90.0) as u8, shade)
                } else {
                    RGBColor(255, shade, shade)
                };
                cells.push(Rectangle::new(
                    [(at(j), at(y)), (at(j + 1), at(y + 1))],
                    colour.filled(),
                ));
                if v > 0 && cell >= 24 {
                    texts.push(Text::new(
                        v.to_string(),
                        (SegmentValue::CenterOf(j), SegmentValue::CenterOf(y)),
                        (FAMILY, font),
                    ));
                }
            }
        }
        chart.draw_series(cells).map_err(|e| e.to_string())?;
        chart.draw_series(texts).map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Per-class accuracy as bars sorted from best to worst (for many classes).
pub fn per_class(path: &Path, title: &str, accuracies: &[f64]) -> Result<PathBuf, PlotError> {
    let mut sorted: Vec<f64> = accuracies.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = sorted.len().max(1);
    render(path, (1000, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..n as f64, 0f64..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("classes, best to worst")
            .y_desc("top-1 accuracy")
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(sorted.iter().enumerate().map(|(i, &a)| {
                Rectangle::new([(i as f64, 0.0), (i as f64 + 0.9, a)], COLOURS[0].filled())
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(p: &Path) -> bool {
        std::fs::read(p).unwrap().starts_with(b"\x89PNG\r\n\x1a\n")
    }

    #[test]
    fn plots_render_without_system_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let loss = curves(
            &dir.path().join("loss.png"),
            "Loss",
            "loss",
            &[
                Series {
                    name: "train",
                    points: (0..50)
                        .map(|i| (i as f64, 2.0 / (1.0 + i as f64)))
                        .collect(),
                    markers: false,
                },
                Series {
                    name: "val",
                    points: vec![(25.0, 0.3), (49.0, 0.2)],
                    markers: true,
                },
            ],
            None,
        )
        .unwrap();
        assert!(is_png(&loss));
        let names: Vec<String> = (0..4).map(|i| format!("class {i}")).collect();
        let m = vec![
            vec![5, 1, 0, 0],
            vec![0, 6, 0, 0],
            vec![2, 0, 3, 1],
            vec![0, 0, 0, 0],
        ];
        assert!(is_png(
            &confusion(&dir.path().join("c.png"), "Confusion", &m, &names).unwrap()
        ));
        let accs: Vec<f64> = (0..120).map(|i| (i % 10) as f64 / 10.0).collect();
        assert!(is_png(
            &per_class(&dir.path().join("p.png"), "Per class", &accs).unwrap()
        ));
        // Empty input still draws.
        assert!(is_png(
            &curves(&dir.path().join("e.png"), "E", "y", &[], None).unwrap()
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }
}
