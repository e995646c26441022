//! The report's charts: line charts drawn as SVG text by `plotters`.
//!
//! Owns one chart's look: a title, axes with descriptions, one line (and
//! optionally dots) per series, markers for special steps, horizontal
//! reference lines (a tolerance) and dotted vertical lines (epoch ends),
//! on a linear or a log y axis. Guarantees: points that a log axis cannot
//! show (zero, negative) are left out rather than drawn at a wrong place;
//! a chart with no points at all is `None`, so the page can say so instead
//! of drawing empty axes.

use std::ops::Range;

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::ReportError;

/// Colours of runs (a run's series share its colour), readable on white.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];
/// Skipped updates.
pub const SKIPPED: RGBColor = RGBColor(214, 39, 40);
/// Solves where blow-up protection fired.
pub const PROTECTED: RGBColor = RGBColor(255, 127, 14);
/// Tolerance lines.
pub const TOL: RGBColor = RGBColor(214, 39, 40);

const WIDTH: u32 = 760;
const HEIGHT: u32 = 330;

/// One line on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    /// Also draw a dot at each point (sparse series, e.g. one per epoch).
    pub dots: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkShape {
    Cross,
    Triangle,
}

/// Markers at special points (skipped updates, protected solves).
#[derive(Debug, Clone)]
pub struct Marks {
    pub label: String,
    pub color: RGBColor,
    pub shape: MarkShape,
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line.
#[derive(Debug, Clone)]
pub struct HLine {
    pub label: String,
    pub y: f64,
    pub color: RGBColor,
}

#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_y: bool,
    /// The x axis counts whole things (epochs): label integers only.
    pub whole_x: bool,
    pub series: Vec<Series>,
    pub marks: Vec<Marks>,
    pub hlines: Vec<HLine>,
    /// Dotted vertical lines (epoch ends).
    pub vlines: Vec<f64>,
}

impl Chart {
    fn keep(&self, y: f64) -> bool {
        y.is_finite() && (!self.log_y || y > 0.0)
    }

    /// Whether the chart has a point to draw.
    pub fn has_points(&self) -> bool {
        self.series
            .iter()
            .flat_map(|s| &s.points)
            .any(|p| p.0.is_finite() && self.keep(p.1))
    }

    fn ranges(&self) -> (Range<f64>, Range<f64>) {
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .chain(self.marks.iter().flat_map(|m| m.points.iter()))
            .filter(|p| p.0.is_finite() && self.keep(p.1));
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        for h in self.hlines.iter().filter(|h| self.keep(h.y)) {
            (y0, y1) = (y0.min(h.y), y1.max(h.y));
        }
        if x1 <= x0 {
            (x0, x1) = (x0 - 1.0, x1 + 1.0);
        }
        // The top third stays free for the legend.
        let y = if self.log_y {
            let span = (y1 / y0).ln().max(10f64.ln());
            (y0 / 2.0)..(y1.ln() + 0.5 * span).exp()
        } else {
            let (lo, hi) = if y1 > y0 {
                (0.06 * (y1 - y0), 0.5 * (y1 - y0))
            } else {
                (0.5 * y0.abs().max(1.0), 0.5 * y0.abs().max(1.0))
            };
            (y0 - lo)..(y1 + hi)
        };
        (x0..x1, y)
    }
}

/// Numbers on axes: short, with an exponent when small or large.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Labels of a log axis: powers of ten only (the other grid lines stay
/// unlabelled, or the labels would overlap).
pub fn power_of_ten(v: f64) -> String {
    let e = v.log10();
    if v > 0.0 && (e - e.round()).abs() < 1e-6 {
        format!("1e{}", e.round() as i32)
    } else {
        String::new()
    }
}

/// Labels of an axis counting whole things (epochs): integers only.
pub fn whole_number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// The chart as an SVG document, or `None` when it has nothing to draw.
pub fn svg(chart: &Chart) -> Result<Option<String>, ReportError> {
    if !chart.has_points() {
        return Ok(None);
    }
    let (x, y) = chart.ranges();
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        let drawn = if chart.log_y {
            draw(&root, chart, x, y.log_scale())
        } else {
            draw(&root, chart, x, y)
        };
        drawn
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|reason| ReportError::Chart {
                chart: chart.title.clone(),
                reason,
            })?;
    }
    Ok(Some(buf))
}

fn draw<Y>(
    root: &DrawingArea<SVGBackend, Shift>,
    chart: &Chart,
    x: Range<f64>,
    y: Y,
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (x0, x1) = (x.start, x.end);
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    let (y_lo, y_hi) = {
        let r = ctx.y_range();
        (r.start, r.end)
    };
    let x_fmt = |v: &f64| {
        if chart.whole_x {
            whole_number(*v)
        } else {
            short_number(*v)
        }
    };
    let y_fmt = |v: &f64| {
        if chart.log_y {
            power_of_ten(*v)
        } else {
            short_number(*v)
        }
    };
    ctx.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for &v in &chart.vlines {
        ctx.draw_series(DashedLineSeries::new(
            [(v, y_lo), (v, y_hi)],
            3,
            4,
            RGBColor(170, 170, 170).into(),
        ))
        .map_err(e)?;
    }
    for h in chart.hlines.iter().filter(|h| chart.keep(h.y)) {
        let c = h.color;
        ctx.draw_series(DashedLineSeries::new(
            [(x0, h.y), (x1, h.y)],
            8,
            5,
            c.stroke_width(2),
        ))
        .map_err(e)?
        .label(h.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    for s in &chart.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && chart.keep(p.1))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let c = s.color;
        ctx.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(e)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
        if s.dots {
            ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(e)?;
        }
    }
    for m in &chart.marks {
        let pts: Vec<(f64, f64)> = m
            .points
            .iter()
            .copied()
            .filter(|p| chart.keep(p.1))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let c = m.color;
        match m.shape {
            MarkShape::Cross => ctx
                .draw_series(pts.iter().map(|&p| Cross::new(p, 5, c.stroke_width(2))))
                .map_err(e)?
                .label(m.label.as_str())
                .legend(move |p| Cross::new(p, 5, c.stroke_width(2))),
            MarkShape::Triangle => ctx
                .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 6, c.filled())))
                .map_err(e)?
                .label(m.label.as_str())
                .legend(move |p| TriangleMarker::new(p, 6, c.filled())),
        };
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    Ok(())
}
