//! SVG charts drawn with plotters: performance relative to the baseline mode per guest and
//! mode, the cycle breakdown per guest and mode, and one line chart per swept numeric
//! parameter and guest with a line per mode. Text is real SVG text (sans-serif), colours
//! come from [`crate::palette`], and nothing depends on the host (no timestamps).

use crate::palette::{mode_color, CATEGORY, EXIT_GROUP, INK};
use crate::Report;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;
use std::error::Error;

type Res = Result<(), Box<dyn Error>>;

/// A line: mode position, name, points.
type Series = (usize, String, Vec<(f64, f64)>);

const FONT: &str = "sans-serif";
const HEIGHT: u32 = 600;

/// A chart: file name (`*.svg`) and SVG text.
pub type Chart = (String, String);

/// Every chart of a report (empty when no run produced metrics).
pub fn all(report: &Report) -> Result<Vec<Chart>, String> {
    let mut out = Vec::new();
    let e = |e: Box<dyn Error>| e.to_string();
    if report.rows.iter().any(|r| r.ok && r.metrics.is_some()) {
        out.push(("normalized.svg".to_string(), normalized(report).map_err(e)?));
        out.push((
            "cycle-breakdown.svg".to_string(),
            breakdown(report).map_err(e)?,
        ));
        let exits = report
            .rows
            .iter()
            .any(|r| r.metrics.as_ref().is_some_and(|m| m.vm_exits > 0));
        if exits {
            out.push(("vm-exits.svg".to_string(), exits_chart(report).map_err(e)?));
        }
    }
    out.extend(sweeps(report).map_err(e)?);
    out.extend(latency_cdfs(report).map_err(e)?);
    Ok(out)
}

/// One CDF chart per guest whose runs recorded transaction latencies: the cumulative
/// fraction of transactions against latency (µs, log scale), a line per mode (and sweep
/// point, when there are several).
pub fn latency_cdfs(report: &Report) -> Result<Vec<Chart>, Box<dyn Error>> {
    let mut out = Vec::new();
    for guest in report.guests() {
        let mut series: BTreeMap<String, Series> = BTreeMap::new();
        let mut of = "transactions".to_string();
        for r in report.rows.iter().filter(|r| r.guest == guest && r.ok) {
            let Some(m) = r.metrics.as_ref().filter(|m| !m.latency_cdf.is_empty()) else {
                continue;
            };
            if !m.latency_cdf_of.is_empty() {
                of.clone_from(&m.latency_cdf_of);
            }
            let pos = report.modes.iter().position(|x| *x == r.mode).unwrap_or(0);
            let point = r.point();
            let name = if point.is_empty() {
                r.mode.clone()
            } else {
                format!("{}, {point}", r.mode)
            };
            let pts = m
                .latency_cdf
                .iter()
                .map(|&(ns, f)| ((ns.max(1) as f64) / 1000.0, f))
                .collect();
            series.insert(format!("{pos:04}{name}"), (pos, name, pts));
        }
        if series.is_empty() {
            continue;
        }
        let xs = series.values().flat_map(|s| s.2.iter().map(|p| p.0));
        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let (x0, x1) = (x0 / 1.5, (x1 * 1.5).max(x0 * 2.0));
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, HEIGHT)).into_drawing_area();
            let draw = |root: &DrawingArea<SVGBackend, _>| -> Res {
                root.fill(&WHITE)?;
                let title = match of.as_str() {
                    "transactions" => format!("{guest}: transaction latency CDF"),
                    o => format!("{guest}: {o}: latency CDF"),
                };
                let mut chart =
                    line_frame(root, title).build_cartesian_2d((x0..x1).log_scale(), 0f64..1.02)?;
                chart
                    .configure_mesh()
                    .x_desc("latency (µs, log scale)")
                    .y_desc(format!("fraction of {of}"))
                    .label_style((FONT, 20).into_font().color(&INK))
                    .axis_desc_style((FONT, 22).into_font().color(&INK))
                    .draw()?;
                for (i, (pos, name, pts)) in series.values().enumerate() {
                    let mode = name.split(',').next().unwrap_or(name);
                    let color = line_color(report, series.len(), i, mode, *pos);
                    // A step function: each bucket's fraction holds up to its bound.
                    let mut steps = Vec::with_capacity(pts.len() * 2 + 1);
                    let mut last = 0.0;
                    for &(x, f) in pts {
                        steps.push((x, last));
                        steps.push((x, f));
                        last = f;
                    }
                    chart
                        .draw_series(LineSeries::new(steps, color.stroke_width(3)))?
                        .label(name.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                        });
                }
                legend(&mut chart)?;
                root.present()?;
                Ok(())
            };
            draw(&root)?;
        }
        out.push((format!("latency-cdf-{}.svg", file_part(&guest)), svg));
    }
    Ok(out)
}

/// A line's colour: the mode's own, unless there are more lines than modes (several sweep
/// points per mode), then one per line.
fn line_color(report: &Report, lines: usize, i: usize, mode: &str, pos: usize) -> RGBColor {
    if lines > report.modes.len() {
        mode_color("", i)
    } else {
        mode_color(mode, pos)
    }
}

/// A line chart's frame: its caption, margin and label areas.
fn line_frame<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, plotters::coord::Shift>,
    caption: String,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(root);
    b.caption(caption, (FONT, 30).into_font().color(&INK))
        .margin(20)
        .x_label_area_size(70)
        .y_label_area_size(90);
    b
}

/// The legend of a line chart, in the lower right corner.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Res
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(INK)
        .label_font((FONT, 20).into_font().color(&INK))
        .draw()?;
    Ok(())
}

fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn centred(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
        .color(&INK)
        .pos(Pos::new(HPos::Center, VPos::Top))
}

/// Geometric mean of the normalised performance over sweep points, per (guest, mode).
fn normalized_values(report: &Report) -> BTreeMap<(String, String), f64> {
    let mut acc: BTreeMap<(String, String), (f64, u32)> = BTreeMap::new();
    for (r, n) in report.rows.iter().zip(report.normalized()) {
        if let Some(n) = n.filter(|n| *n > 0.0) {
            let e = acc
                .entry((r.guest.clone(), r.mode.clone()))
                .or_insert((0.0, 0));
            e.0 += n.ln();
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(k, (s, c))| (k, (s / f64::from(c)).exp()))
        .collect()
}

/// Grouped bars: performance relative to the baseline per guest (group) and mode (bar).
pub fn normalized(report: &Report) -> Result<String, Box<dyn Error>> {
    let guests = report.guests();
    let values = normalized_values(report);
    let modes = &report.modes;
    let width = (160 + guests.len() * (60 + 70 * modes.len())).max(800) as u32;
    let ymax = values.values().copied().fold(1.0f64, f64::max) * 1.2;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, HEIGHT)).into_drawing_area();
        let draw = |root: &DrawingArea<SVGBackend, _>| -> Res {
            root.fill(&WHITE)?;
            let n = guests.len().max(1) as f64;
            let mut chart = ChartBuilder::on(root)
                .caption(
                    format!("Performance relative to {}", report.baseline),
                    (FONT, 30).into_font().color(&INK),
                )
                .margin(20)
                .x_label_area_size(70)
                .y_label_area_size(90)
                .build_cartesian_2d(0f64..n, 0f64..ymax)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .x_label_formatter(&|_| String::new())
                .x_desc("guest workload")
                .y_desc(format!(
                    "{} cycles / cycles (higher is faster)",
                    report.baseline
                ))
                .label_style((FONT, 20).into_font().color(&INK))
                .axis_desc_style((FONT, 22).into_font().color(&INK))
                .draw()?;
            let bw = 0.8 / modes.len().max(1) as f64;
            for (k, mode) in modes.iter().enumerate() {
                let color = mode_color(mode, k);
                let mut bars = Vec::new();
                let mut labels = Vec::new();
                for (g, guest) in guests.iter().enumerate() {
                    if let Some(v) = values.get(&(guest.clone(), mode.clone())) {
                        let x0 = g as f64 + 0.1 + k as f64 * bw;
                        bars.push(Rectangle::new(
                            [(x0, 0.0), (x0 + bw * 0.92, *v)],
                            color.filled(),
                        ));
                        labels.push(Text::new(
                            format!("{v:.2}"),
                            (x0 + bw * 0.46, *v + ymax * 0.01),
                            TextStyle::from((FONT, 18).into_font())
                                .color(&INK)
                                .pos(Pos::new(HPos::Center, VPos::Bottom)),
                        ));
                    }
                }
                chart
                    .draw_series(bars)?
                    .label(mode.clone())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 7), (x + 14, y + 7)], color.filled())
                    });
                chart.draw_series(labels)?;
            }
            chart.draw_series(LineSeries::new(
                vec![(0.0, 1.0), (n, 1.0)],
                INK.stroke_width(1),
            ))?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(INK)
                .label_font((FONT, 20).into_font().color(&INK))
                .draw()?;
            for (g, guest) in guests.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
                root.draw(&Text::new(guest.clone(), (px, py + 10), centred(20)))?;
            }
            root.present()?;
            Ok(())
        };
        draw(&root)?;
    }
    Ok(svg)
}

/// Stacked bars: each guest and mode's cycles by category, as a share of its total
/// (summed over sweep points).
pub fn breakdown(report: &Report) -> Result<String, Box<dyn Error>> {
    let names = crate::Metrics::default().breakdown().map(|(n, _)| n);
    stacked(
        report,
        &Stacked {
            title: "Cycle breakdown",
            y_desc: "share of cycles (%)",
            names: &names,
            colors: &CATEGORY,
            share: true,
        },
        |m| m.breakdown().iter().map(|(_, c)| *c).collect(),
    )
}

/// Stacked bars: each guest and mode's VM exits per million guest instructions, by
/// exit-reason group (summed over sweep points).
pub fn exits_chart(report: &Report) -> Result<String, Box<dyn Error>> {
    let names = crate::Metrics::default().exits().map(|(n, _)| n);
    stacked(
        report,
        &Stacked {
            title: "VM exits by reason",
            y_desc: "exits per million guest instructions",
            names: &names,
            colors: &EXIT_GROUP,
            share: false,
        },
        |m| {
            let per = 1e6 / m.instructions.max(1) as f64;
            m.exits()
                .iter()
                .map(|(_, c)| (*c as f64 * per).round() as u64)
                .collect()
        },
    )
}

/// What a stacked-bar chart shows.
struct Stacked<'a> {
    title: &'a str,
    y_desc: &'a str,
    names: &'a [&'a str],
    colors: &'a [RGBColor],
    /// Bars as a share of each bar's total (100 %) rather than absolute values.
    share: bool,
}

/// Stacked bars, one per guest and mode, of the values `values` gives for a run's
/// metrics (summed over sweep points), one segment per category.
fn stacked(
    report: &Report,
    spec: &Stacked,
    values: impl Fn(&crate::Metrics) -> Vec<u64>,
) -> Result<String, Box<dyn Error>> {
    let guests = report.guests();
    let modes = &report.modes;
    let k_n = spec.names.len();
    let mut sums: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in report.rows.iter().filter(|r| r.ok) {
        if let Some(m) = &r.metrics {
            let e = sums
                .entry((r.guest.clone(), r.mode.clone()))
                .or_insert_with(|| vec![0; k_n]);
            for (i, c) in values(m).iter().enumerate().take(k_n) {
                e[i] += c;
            }
        }
    }
    let y_max = if spec.share {
        100.0
    } else {
        let top = sums
            .values()
            .map(|s| s.iter().sum::<u64>())
            .max()
            .unwrap_or(0);
        (top as f64 * 1.1).max(1.0)
    };
    let per_group = modes.len().max(1) as f64 + 0.6;
    let n = guests.len().max(1) as f64 * per_group;
    let width =
        (260 + (guests.len() * modes.len().max(1)) * 90 + guests.len() * 60).max(800) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, HEIGHT)).into_drawing_area();
        let draw = |root: &DrawingArea<SVGBackend, _>| -> Res {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(root)
                .caption(spec.title, (FONT, 30).into_font().color(&INK))
                .margin(20)
                .x_label_area_size(if modes.len() > 1 { 90 } else { 70 })
                .y_label_area_size(90)
                .right_y_label_area_size(230)
                .build_cartesian_2d(0f64..n, 0f64..y_max)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .x_label_formatter(&|_| String::new())
                .x_desc("guest workload and mode")
                .y_desc(spec.y_desc)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style((FONT, 20).into_font().color(&INK))
                .axis_desc_style((FONT, 22).into_font().color(&INK))
                .draw()?;
            for (c, name) in spec.names.iter().enumerate() {
                let color = spec.colors[c % spec.colors.len()];
                let mut bars = Vec::new();
                for (g, guest) in guests.iter().enumerate() {
                    for (k, mode) in modes.iter().enumerate() {
                        let Some(s) = sums.get(&(guest.clone(), mode.clone())) else {
                            continue;
                        };
                        let scale = if spec.share {
                            100.0 / s.iter().sum::<u64>().max(1) as f64
                        } else {
                            1.0
                        };
                        let below: u64 = s[..c].iter().sum();
                        let y0 = below as f64 * scale;
                        let y1 = (below + s[c]) as f64 * scale;
                        let x0 = g as f64 * per_group + 0.3 + k as f64;
                        bars.push(Rectangle::new(
                            [(x0 + 0.1, y0), (x0 + 0.9, y1)],
                            color.filled(),
                        ));
                    }
                }
                chart.draw_series(bars)?.label(*name).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 7), (x + 14, y + 7)], color.filled())
                });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .margin(-220)
                .background_style(WHITE.mix(0.9))
                .border_style(INK)
                .label_font((FONT, 18).into_font().color(&INK))
                .draw()?;
            for (g, guest) in guests.iter().enumerate() {
                let mut y = 8;
                if modes.len() > 1 {
                    for (k, mode) in modes.iter().enumerate() {
                        let x = g as f64 * per_group + 0.3 + k as f64 + 0.5;
                        let (px, py) = chart.backend_coord(&(x, 0.0));
                        root.draw(&Text::new(mode.clone(), (px, py + 8), centred(16)))?;
                    }
                    y = 32;
                }
                let x = g as f64 * per_group + per_group / 2.0;
                let (px, py) = chart.backend_coord(&(x, 0.0));
                root.draw(&Text::new(guest.clone(), (px, py + y), centred(20)))?;
            }
            root.present()?;
            Ok(())
        };
        draw(&root)?;
    }
    Ok(svg)
}

/// One line chart per numeric swept parameter and guest: cycles against the value, one
/// line per mode (per mode and value of the other parameters, when several are swept).
pub fn sweeps(report: &Report) -> Result<Vec<Chart>, Box<dyn Error>> {
    let mut out = Vec::new();
    for p in &report.params {
        let numeric = report
            .rows
            .iter()
            .all(|r| r.params.get(p).is_some_and(|v| v.parse::<f64>().is_ok()));
        if !numeric {
            continue;
        }
        for guest in report.guests() {
            // series name -> (mode position, points)
            let mut series: BTreeMap<String, Series> = BTreeMap::new();
            for r in report.rows.iter().filter(|r| r.guest == guest && r.ok) {
                let (Some(m), Some(x)) = (
                    &r.metrics,
                    r.params.get(p).and_then(|v| v.parse::<f64>().ok()),
                ) else {
                    continue;
                };
                let others: Vec<String> = r
                    .params
                    .iter()
                    .filter(|(q, _)| *q != p)
                    .map(|(q, v)| format!("{q}={v}"))
                    .collect();
                let pos = report.modes.iter().position(|x| *x == r.mode).unwrap_or(0);
                let name = if others.is_empty() {
                    r.mode.clone()
                } else {
                    format!("{}, {}", r.mode, others.join(", "))
                };
                series
                    .entry(format!("{pos:04}{name}"))
                    .or_insert((pos, name, Vec::new()))
                    .2
                    .push((x, m.cycles as f64 / 1e6));
            }
            if series.is_empty() {
                continue;
            }
            let xs = series.values().flat_map(|s| s.2.iter().map(|p| p.0));
            let (mut x0, mut x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
            if x0 == x1 {
                x0 -= 1.0;
                x1 += 1.0;
            }
            let pad = (x1 - x0) * 0.05;
            let ymax = series
                .values()
                .flat_map(|s| s.2.iter().map(|p| p.1))
                .fold(0.0f64, f64::max)
                .max(1e-6)
                * 1.15;
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (900, HEIGHT)).into_drawing_area();
                let draw = |root: &DrawingArea<SVGBackend, _>| -> Res {
                    root.fill(&WHITE)?;
                    let mut chart = line_frame(root, format!("{guest}: cycles vs {p}"))
                        .build_cartesian_2d((x0 - pad)..(x1 + pad), 0f64..ymax)?;
                    chart
                        .configure_mesh()
                        .x_desc(p.clone())
                        .y_desc("cycles (millions)")
                        .label_style((FONT, 20).into_font().color(&INK))
                        .axis_desc_style((FONT, 22).into_font().color(&INK))
                        .draw()?;
                    for (i, (pos, name, pts)) in series.values().enumerate() {
                        let mut pts = pts.clone();
                        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                        let mode = name.split(',').next().unwrap_or(name);
                        let color = line_color(report, series.len(), i, mode, *pos);
                        chart
                            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?
                            .label(name.clone())
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                            });
                        chart.draw_series(
                            pts.iter()
                                .map(|&(x, y)| Circle::new((x, y), 5, color.filled())),
                        )?;
                    }
                    legend(&mut chart)?;
                    root.present()?;
                    Ok(())
                };
                draw(&root)?;
            }
            out.push((
                format!("sweep-{}-{}.svg", file_part(p), file_part(&guest)),
                svg,
            ));
        }
    }
    Ok(out)
}
