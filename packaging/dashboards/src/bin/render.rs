//! Renders one PNG per Grafana dashboard (packaging/grafana/img/) from a real InfluxDB 1.x, with
//! the dashboards' own InfluxQL, for the README: Grafana itself does not install here.
//!
//!     flowlens-render-dashboards --address 127.0.0.1:8086 --database ntopng \
//!         --from-ms MS --to-ms MS [--interval 2s] [--out DIR] [--dashboards DIR] [--font TTF]
//!         [--var NAME=VALUE]...
//!
//! Variables are "All" unless `--var` selects one value (where a dashboard has that variable).
//!
//! packaging/grafana/render.sh runs it end to end (InfluxDB, flowlens, traffic, render).

use flowlens_dashboards::{
    expand, load_all, measurements, resolve, Dashboard, Influx, Panel, Selection, Series, TimeRange,
};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

const WIDTH: u32 = 1600;
const ROW_PX: u32 = 34;
const HEADER_PX: u32 = 64;
const BACKGROUND: RGBColor = RGBColor(250, 250, 252);
const PALETTE: [RGBColor; 10] = [
    RGBColor(115, 191, 105),
    RGBColor(242, 204, 12),
    RGBColor(87, 148, 242),
    RGBColor(255, 120, 10),
    RGBColor(242, 73, 92),
    RGBColor(184, 119, 217),
    RGBColor(31, 120, 193),
    RGBColor(150, 217, 141),
    RGBColor(255, 152, 48),
    RGBColor(112, 93, 160),
];

struct Args {
    influx: Influx,
    range: TimeRange,
    out: PathBuf,
    dashboards: PathBuf,
    font: PathBuf,
    vars: Vec<(String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut address = "127.0.0.1:8086".to_string();
    let mut database = "ntopng".to_string();
    let (mut from_ms, mut to_ms) = (None, None);
    let mut interval = "2s".to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = root.join("grafana/img");
    let mut dashboards = flowlens_dashboards::dashboards_dir();
    let mut font = PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    let mut vars = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--address" => address = value()?,
            "--database" => database = value()?,
            "--from-ms" => from_ms = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--to-ms" => to_ms = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--interval" => interval = value()?,
            "--out" => out = value()?.into(),
            "--dashboards" => dashboards = value()?.into(),
            "--font" => font = value()?.into(),
            "--var" => {
                let v = value()?;
                let (name, value) = v.split_once('=').ok_or("--var takes NAME=VALUE")?;
                vars.push((name.to_string(), value.to_string()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let (Some(from_ms), Some(to_ms)) = (from_ms, to_ms) else {
        return Err("--from-ms and --to-ms are required".into());
    };
    Ok(Args {
        influx: Influx { address, database },
        range: TimeRange {
            from_ms,
            to_ms,
            interval,
        },
        out,
        dashboards,
        font,
        vars,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("E! flowlens-render-dashboards: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let font = std::fs::read(&args.font).map_err(|e| {
        format!(
            "font {}: {e} (Debian: apt-get install fonts-dejavu-core)",
            args.font.display()
        )
    })?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        register_font("sans-serif", style, font).map_err(|_| "font is not a TrueType font")?;
    }
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    for (path, dashboard) in load_all(&args.dashboards).map_err(|e| e.to_string())? {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let png = args.out.join(format!("{name}.png"));
        render(&dashboard, &args, &png)?;
        println!("{}", png.display());
    }
    Ok(())
}

/// One line or bar of a panel.
struct Line {
    label: String,
    points: Vec<(i64, f64)>,
}

fn panel_lines(
    panel: &Panel,
    args: &Args,
    vars: &[flowlens_dashboards::Resolved],
) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    for target in &panel.targets {
        let query = expand(&target.query, vars, &args.range);
        let series: Vec<Series> = args.influx.query(&query).map_err(|e| e.to_string())?;
        for s in series {
            for (col, column) in s.columns.iter().enumerate().skip(1) {
                let points: Vec<(i64, f64)> = s
                    .values
                    .iter()
                    .filter_map(|row| Some((row[0].as_i64()?, row.get(col)?.as_f64()?)))
                    .collect();
                if !points.is_empty() {
                    lines.push(Line {
                        label: s.label(&target.alias, column),
                        points,
                    });
                }
            }
        }
    }
    Ok(lines)
}

fn render(dashboard: &Dashboard, args: &Args, png: &std::path::Path) -> Result<(), String> {
    let mut vars =
        resolve(dashboard, &args.influx, &args.range, Selection::All).map_err(|e| e.to_string())?;
    let mut selected = Vec::new();
    for var in &mut vars {
        if let Some((name, value)) = args.vars.iter().find(|(n, _)| *n == var.name) {
            var.value = flowlens_dashboards::regex_escape(value);
            selected.push(format!("{name} = {value}"));
        }
    }
    selected.push("other variables = All".into());
    let rows = dashboard
        .panels
        .iter()
        .map(|p| p.grid_pos.y + p.grid_pos.h)
        .max()
        .unwrap_or(8);
    let height = HEADER_PX + rows * ROW_PX + 8;
    let root = BitMapBackend::new(png, (WIDTH, height)).into_drawing_area();
    root.fill(&BACKGROUND).map_err(|e| e.to_string())?;
    let seconds = (args.range.to_ms - args.range.from_ms) / 1000;
    root.draw(&Text::new(
        dashboard.title.clone(),
        (16, 10),
        ("sans-serif", 28).into_font().style(FontStyle::Bold),
    ))
    .map_err(|e| e.to_string())?;
    root.draw(&Text::new(
        format!(
            "Rendered by packaging/grafana/render.sh from real flowlens output in InfluxDB 1.x, \
             with the dashboard's InfluxQL ({seconds} s of data, GROUP BY time({}), {})",
            args.range.interval,
            selected.join(", ")
        ),
        (16, 42),
        ("sans-serif", 15).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(|e| e.to_string())?;
    let col_px = WIDTH as f64 / 24.0;
    for panel in &dashboard.panels {
        let g = panel.grid_pos;
        let x = (g.x as f64 * col_px) as i32 + 6;
        let y = (HEADER_PX + g.y * ROW_PX) as i32 + 4;
        let w = (g.w as f64 * col_px) as u32 - 12;
        let h = g.h * ROW_PX - 8;
        let area = root.clone().shrink((x, y), (w, h));
        area.fill(&WHITE).map_err(|e| e.to_string())?;
        let lines = panel_lines(panel, args, &vars)?;
        if lines.is_empty() {
            empty_panel(&area, panel)?;
        } else if panel.kind == "bargauge" {
            bar_panel(&area, panel, &lines)?;
        } else {
            time_panel(&area, panel, &lines, &args.range)?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn empty_panel(area: &Area<'_>, panel: &Panel) -> Result<(), String> {
    let from: Vec<String> = panel
        .targets
        .iter()
        .flat_map(|t| measurements(&t.query))
        .collect();
    area.draw(&Text::new(
        panel.title.clone(),
        (12, 8),
        ("sans-serif", 18).into_font().style(FontStyle::Bold),
    ))
    .map_err(|e| e.to_string())?;
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        format!(
            "No data yet: {} has no points in this database",
            from.join(", ")
        ),
        (24, h as i32 / 2 - 8),
        ("sans-serif", 16)
            .into_font()
            .color(&RGBColor(130, 130, 130)),
    ))
    .map_err(|e| e.to_string())?;
    let _ = w;
    Ok(())
}

/// Scale and unit label for the y axis.
fn scale(unit: &str, max: f64) -> (f64, String) {
    let (base, suffix) = match unit {
        "Bps" => ("B", "/s"),
        "bytes" => ("B", ""),
        "pps" => ("packets", "/s"),
        "ms" => return (1.0, "ms".into()),
        _ => ("", ""),
    };
    let (div, prefix) = if max >= 1e9 {
        (1e9, "G")
    } else if max >= 1e6 {
        (1e6, "M")
    } else if max >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let label = format!("{prefix}{base}{suffix}");
    (
        div,
        if label.is_empty() {
            "count".into()
        } else {
            label
        },
    )
}

fn clock(ms: i64) -> String {
    let s = (ms / 1000).rem_euclid(86400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn time_panel(
    area: &Area<'_>,
    panel: &Panel,
    lines: &[Line],
    range: &TimeRange,
) -> Result<(), String> {
    // Stacked panels draw cumulative sums over the series (aligned GROUP BY time buckets).
    let mut drawn: Vec<(String, Vec<(i64, f64)>)> = Vec::new();
    let mut sums: BTreeMap<i64, f64> = BTreeMap::new();
    for line in lines {
        let points = if panel.stacked() {
            line.points
                .iter()
                .map(|&(t, v)| {
                    let s = sums.entry(t).or_insert(0.0);
                    *s += v;
                    (t, *s)
                })
                .collect()
        } else {
            line.points.clone()
        };
        drawn.push((line.label.clone(), points));
    }
    let max = drawn
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
        .fold(0.0f64, f64::max);
    let (div, unit) = scale(panel.unit(), max);
    let top = if max > 0.0 { max / div * 1.1 } else { 1.0 };
    // The legend goes right of the chart, as in Grafana's table legend, so it hides no line.
    let (w, _) = area.dim_in_pixel();
    let (plot, legend) = area.split_horizontally(w * 72 / 100);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            &panel.title,
            ("sans-serif", 18).into_font().style(FontStyle::Bold),
        )
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(range.from_ms..range.to_ms, 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(236, 236, 236))
        .bold_line_style(RGBColor(220, 220, 220))
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|t| clock(*t))
        .y_desc(unit)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())?;
    let order: Vec<usize> = if panel.stacked() {
        (0..drawn.len()).rev().collect()
    } else {
        (0..drawn.len()).collect()
    };
    for i in order {
        let (_, points) = &drawn[i];
        let color = PALETTE[i % PALETTE.len()];
        let scaled: Vec<(i64, f64)> = points.iter().map(|&(t, v)| (t, v / div)).collect();
        if panel.stacked() {
            chart
                .draw_series(AreaSeries::new(scaled, 0.0, color.mix(0.55)).border_style(color))
                .map_err(|e| e.to_string())?;
        } else {
            chart
                .draw_series(LineSeries::new(scaled, color.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
    }
    let (_, h) = legend.dim_in_pixel();
    let rows = ((h as i32 - 40) / 18).max(1) as usize;
    for (i, (label, _)) in drawn.iter().enumerate().take(rows) {
        let y = 36 + i as i32 * 18;
        let color = PALETTE[i % PALETTE.len()];
        let text = if i + 1 == rows && drawn.len() > rows {
            format!("... and {} more", drawn.len() - i)
        } else {
            label.chars().take(34).collect()
        };
        legend
            .draw(&Rectangle::new([(4, y + 2), (16, y + 12)], color.filled()))
            .map_err(|e| e.to_string())?;
        legend
            .draw(&Text::new(text, (22, y), ("sans-serif", 13)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn bar_panel(area: &Area<'_>, panel: &Panel, lines: &[Line]) -> Result<(), String> {
    let mut bars: Vec<(String, f64)> = lines
        .iter()
        .filter_map(|l| l.points.last().map(|&(_, v)| (l.label.clone(), v)))
        .collect();
    bars.sort_by(|a, b| b.1.total_cmp(&a.1));
    bars.truncate(10);
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max);
    let (div, unit) = scale(panel.unit(), max);
    let top = if max > 0.0 { max / div * 1.1 } else { 1.0 };
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(
            &panel.title,
            ("sans-serif", 18).into_font().style(FontStyle::Bold),
        )
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..top, (0..n).into_segmented())
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(RGBColor(236, 236, 236))
        .y_labels(n as usize + 1)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names
                .get((n - 1 - *i) as usize)
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let row = n - 1 - i as i32;
            let color = PALETTE[i % PALETTE.len()];
            let (low, high) = (SegmentValue::Exact(row), SegmentValue::Exact(row + 1));
            Rectangle::new([(0.0, low), (v / div, high)], color.filled())
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}
