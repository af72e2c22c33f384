//! Line plots as SVG (plotters).

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One line.
pub struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    /// The colour's index, when set; else one colour per three series (more than four) or per
    /// series.
    color: Option<usize>,
}

impl Series {
    pub fn new(name: String, points: Vec<(f64, f64)>) -> Self {
        Series {
            name,
            points,
            dashed: false,
            color: None,
        }
    }
    pub fn dashed(name: String, points: Vec<(f64, f64)>) -> Self {
        Series {
            name,
            points,
            dashed: true,
            color: None,
        }
    }
    /// Draw in the colour of index `c` (series of one group share it).
    pub fn color(mut self, c: usize) -> Self {
        self.color = Some(c);
        self
    }
}

/// Draw `series` into an SVG file; `log_x` for a logarithmic x axis.
pub fn lines(
    path: &str,
    title: &str,
    x: &str,
    y: &str,
    log_x: bool,
    series: &[Series],
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {path}: {e}");
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (px, py) in pts {
        x0 = x0.min(*px);
        x1 = x1.max(*px);
        y1 = y1.max(*py);
    }
    let y1 = if y1 <= 1.0 { 1.05 } else { y1 * 1.1 };
    let root = SVGBackend::new(path, (820, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    let chart = builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56);
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    macro_rules! draw {
        ($chart:expr) => {{
            let mut c = $chart;
            c.configure_mesh()
                .x_desc(x)
                .y_desc(y)
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let color = colors
                    [s.color.unwrap_or(i / if series.len() > 4 { 3 } else { 1 }) % colors.len()];
                let style = ShapeStyle::from(color).stroke_width(2);
                let points = s.points.clone();
                if s.dashed {
                    c.draw_series(DashedLineSeries::new(points, 6, 4, style))
                        .map_err(|e| err(&e))?
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                } else {
                    c.draw_series(LineSeries::new(points.clone(), style))
                        .map_err(|e| err(&e))?
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                    c.draw_series(
                        points
                            .into_iter()
                            .map(|p| Circle::new(p, 3, style.filled())),
                    )
                    .map_err(|e| err(&e))?;
                }
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    if log_x {
        draw!(chart
            .build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), 0.0..y1)
            .map_err(|e| err(&e))?);
    } else {
        draw!(chart
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(|e| err(&e))?);
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
