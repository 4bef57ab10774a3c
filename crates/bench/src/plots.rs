//! SVG plots of the results: impact per workload, hook costs, and the log-log growth of probe
//! memory with connections and of operator ingest time with pods.

use std::path::{Path, PathBuf};

use plotters::{coord::Shift, prelude::*};

use crate::{Error, Result, impact::Workload, report::Results, stats::summarize};

/// Colours of the series, in order.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn plot_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Plot {
        file: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// One bar: median with a min–max whisker.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    /// Median.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Grouped bars: one group per label, one bar per series (missing bars are left out).
pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[&str],
    groups: &[(String, Vec<Option<Bar>>)],
) -> Result<()> {
    let err = plot_err(path);
    let all = groups.iter().flat_map(|(_, b)| b.iter().flatten());
    let (lo, hi) = all.fold((0.0f64, 0.0f64), |(lo, hi), b| {
        (lo.min(b.min), hi.max(b.max))
    });
    let pad = ((hi - lo) * 0.1).max(0.5);
    // Room above the tallest bar for the legend.
    let top = hi + ((hi - lo) * 0.35).max(1.0);
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n - 0.5, (lo - pad)..top)
        .map_err(|e| err(&e))?;
    let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (s, name) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let bars_of = groups.iter().enumerate().filter_map(|(g, (_, b))| {
            let b = (*b.get(s)?)?;
            Some((g as f64 - 0.4 + width * s as f64, b))
        });
        let pts: Vec<(f64, Bar)> = bars_of.collect();
        chart
            .draw_series(pts.iter().map(|(x, b)| {
                Rectangle::new(
                    [(*x + width * 0.1, 0.0), (*x + width * 0.9, b.median)],
                    colour.filled(),
                )
            }))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        chart
            .draw_series(pts.iter().map(|(x, b)| {
                PathElement::new(
                    vec![(*x + width / 2.0, b.min), (*x + width / 2.0, b.max)],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Whole decades around the positive values: a log axis labels its decades only.
fn range_log(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 1.0..10.0;
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    lo..hi
}

/// Axis numbers without a useless ".0".
fn tick(v: &f64) -> String {
    if v.abs() >= 1.0 && v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Lines with points on log-log axes.
pub fn loglog(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let err = plot_err(path);
    let xs = range_log(series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)));
    let ys = range_log(series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)));
    let root: DrawingArea<SVGBackend, Shift> =
        SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xs.log_scale(), ys.log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .copied()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

fn bar_of(values: &[f64]) -> Option<Bar> {
    summarize(values).map(|s| Bar {
        median: s.median,
        min: s.min,
        max: s.max,
    })
}

/// The number in a workload name like `held_conns_10000` or `operator_ingest_100_pods`.
fn number_in(name: &str) -> Option<f64> {
    name.split('_').find_map(|p| p.parse().ok())
}

/// Draws every plot the results have data for; returns the files written.
pub fn draw_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    // Impact, netdx next to bpftrace: throughput loss at saturation, and p99 increase at half
    // load (apart: latency ratios run to hundreds of percent and would flatten the others).
    for (latency, file, title, metric) in [
        (
            false,
            "impact.svg",
            "Throughput loss at saturation",
            "throughput_loss_pct",
        ),
        (
            true,
            "impact-p99.svg",
            "p99 latency increase at 50 % of saturation",
            "p99_increase_pct",
        ),
    ] {
        let groups: Vec<(String, Vec<Option<Bar>>)> = Workload::ALL
            .iter()
            .filter(|w| w.is_latency() == latency)
            .map(|w| {
                let bars =
                    ["netdx", "bpftrace"].map(|c| bar_of(&results.values(w.id(), c, metric)));
                (w.id().to_string(), bars.to_vec())
            })
            .filter(|(_, b)| b.iter().any(Option::is_some))
            .collect();
        if !groups.is_empty() {
            let p = dir.join(file);
            bars(
                &p,
                title,
                "% vs no probe (median, min-max)",
                &["netdx", "bpftrace"],
                &groups,
            )?;
            out.push(p);
        }
    }
    // Hook costs: ns per program run, real vs no-op.
    let mut progs: Vec<String> = results
        .rows
        .iter()
        .filter_map(|r| r.metric.strip_prefix("ns_per_run.").map(str::to_string))
        .collect();
    progs.sort();
    progs.dedup();
    if !progs.is_empty() {
        let groups: Vec<(String, Vec<Option<Bar>>)> = progs
            .iter()
            .map(|p| {
                let m = format!("ns_per_run.{p}");
                let bars = ["netdx", "noop"]
                    .map(|c| bar_of(&results.values(crate::hooks::WORKLOAD, c, &m)));
                (p.clone(), bars.to_vec())
            })
            .collect();
        let p = dir.join("hooks.svg");
        bars(
            &p,
            "Kernel time per program run (bpf stats)",
            "ns per run",
            &["netdx programs", "no-op programs"],
            &groups,
        )?;
        out.push(p);
    }
    // RSS against held connections, one line per probe.
    let mut nodes: Vec<String> = results
        .rows
        .iter()
        .filter(|r| r.workload.starts_with("held_conns_") && r.metric == "rss_mib")
        .map(|r| r.condition.clone())
        .collect();
    nodes.sort();
    nodes.dedup();
    let series: Vec<(String, Vec<(f64, f64)>)> = nodes
        .iter()
        .map(|n| {
            let pts = results
                .rows
                .iter()
                .filter(|r| &r.condition == n && r.metric == "rss_mib")
                .filter_map(|r| Some((number_in(&r.workload)?, r.value)))
                .collect();
            (n.clone(), pts)
        })
        .collect();
    if series.iter().any(|(_, p)| p.iter().any(|(x, _)| *x > 0.0)) {
        let p = dir.join("scale-rss.svg");
        loglog(
            &p,
            "node-probe RSS vs held connections",
            "connections held (log)",
            "RSS MiB (log)",
            &series,
        )?;
        out.push(p);
    }
    // Operator ingest time against pods.
    let pts: Vec<(f64, f64)> = results
        .rows
        .iter()
        .filter(|r| {
            r.workload.starts_with("operator_ingest_") && r.metric == "ms_per_cluster_window"
        })
        .filter_map(|r| Some((number_in(&r.workload)?, r.value)))
        .collect();
    if !pts.is_empty() {
        let p = dir.join("ingest-time.svg");
        loglog(
            &p,
            "Operator ingest time per cluster window vs pods",
            "pods (log)",
            "ms per window, all nodes (log)",
            &[("one core".to_string(), pts)],
        )?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_workload_names() {
        assert_eq!(number_in("held_conns_10000"), Some(10_000.0));
        assert_eq!(number_in("operator_ingest_100_pods"), Some(100.0));
        assert_eq!(number_in("pipeline"), None);
    }

    #[test]
    fn plots_are_svg_files() {
        let dir = std::env::temp_dir().join(format!("ndx-bench-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Results::default();
        for (round, v) in [(1, 1.0), (2, 2.0)] {
            r.add("redis_np", "netdx", round, "throughput_loss_pct", v, "");
            r.add(
                "redis_np",
                "bpftrace",
                round,
                "throughput_loss_pct",
                v * 5.0,
                "",
            );
        }
        r.add("held_conns_1000", "netdx node-0", 1, "rss_mib", 20.0, "");
        r.add("held_conns_10000", "netdx node-0", 1, "rss_mib", 30.0, "");
        r.add(
            "operator_ingest_10_pods",
            "in-process",
            1,
            "ms_per_cluster_window",
            0.5,
            "",
        );
        let files = draw_all(&r, &dir).unwrap();
        assert_eq!(files.len(), 3);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.starts_with("<svg"), "{}", f.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
