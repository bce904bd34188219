//! `compare --plot results.json out.png`: mproc against Python per workload,
//! on one log axis.
//!
//! Every figure of `results.json` (written by `scripts/compare.py`) that is a
//! time or a rate becomes *time per operation* (a rate of r/s is 1/r s per
//! operation; a time stays a time), so workloads of different units share one
//! axis where shorter is better. p99s, bandwidths and ratios are left to the
//! table. Each row is labelled with how many times better mproc is; a black
//! tick marks the raw floor where the figure has one.
//!
//! The text needs a TrueType font: the first of a few common system paths,
//! or `MPROC_PLOT_FONT`.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

const MPROC: RGBColor = RGBColor(214, 95, 0);
const PYTHON: RGBColor = RGBColor(55, 118, 171);
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

/// One bar pair.
struct Row {
    label: String,
    mproc: Option<f64>,
    python: Option<f64>,
    ratio: Option<f64>,
    /// The raw floor of the same figure, if it has one.
    floor: Option<f64>,
    note: String,
}

/// Seconds per operation for a figure, if it is a time or a rate.
fn seconds_per_op(value: f64, unit: &str) -> Option<f64> {
    if !(value.is_finite() && value > 0.0) {
        return None;
    }
    match unit {
        "s" => Some(value),
        "ms" => Some(value * 1e-3),
        "µs" => Some(value * 1e-6),
        u if u.ends_with("/s") && !u.ends_with("B/s") => Some(1.0 / value),
        _ => None,
    }
}

fn rows(results: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    for r in results["rows"].as_array().into_iter().flatten() {
        let metric = r["metric"].as_str().unwrap_or("");
        let unit = r["unit"].as_str().unwrap_or("");
        if metric == "p99" || metric.contains("memcpy") {
            continue;
        }
        let side = |k: &str| r[k].as_f64().and_then(|v| seconds_per_op(v, unit));
        let (mproc, python) = (side("mproc"), side("python"));
        if mproc.is_none() && python.is_none() {
            continue;
        }
        let per = if unit.ends_with("/s") {
            format!(
                " (per {})",
                unit.trim_end_matches("/s").trim_end_matches('s')
            )
        } else {
            String::new()
        };
        out.push(Row {
            label: format!("{} {}{}", r["id"].as_str().unwrap_or("?"), metric, per),
            mproc,
            python,
            ratio: r["ratio"].as_f64(),
            floor: r["floor"].as_f64().and_then(|v| seconds_per_op(v, unit)),
            note: r["mproc_note"].as_str().unwrap_or("").to_string(),
        });
    }
    out
}

fn load_font() -> Result<(), String> {
    let env = std::env::var("MPROC_PLOT_FONT").ok();
    let path = env
        .iter()
        .map(String::as_str)
        .chain(FONTS.iter().copied())
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| {
            "no TrueType font found for the plot's text (install fonts-dejavu-core or set MPROC_PLOT_FONT)"
                .to_string()
        })?;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    // The font table wants 'static data; this process ends after the plot.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{path}: not a usable font"))
}

fn human_seconds(s: f64) -> String {
    let (v, unit) = if s >= 1.0 {
        (s, "s")
    } else if s >= 1e-3 {
        (s * 1e3, "ms")
    } else if s >= 1e-6 {
        (s * 1e6, "µs")
    } else {
        (s * 1e9, "ns")
    };
    if v >= 100.0 || (v - v.round()).abs() < 1e-6 * v {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// `q` to three significant digits, without an exponent.
fn three_digits(q: f64) -> String {
    match q {
        q if q >= 100.0 => format!("{q:.0}"),
        q if q >= 10.0 => format!("{q:.1}"),
        q => format!("{q:.2}"),
    }
}

/// Draws the plot of `input` (results.json) into `output` (PNG).
pub(crate) fn draw(input: &str, output: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
    let results: Value = serde_json::from_str(&text).map_err(|e| format!("{input}: {e}"))?;
    let rows = rows(&results);
    if rows.is_empty() {
        return Err(format!("{input}: nothing to plot"));
    }
    load_font()?;
    draw_rows(&rows, &results, output).map_err(|e| format!("{output}: {e}"))
}

fn draw_rows(
    rows: &[Row],
    results: &Value,
    output: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = rows.len();
    let (width, height) = (1500u32, 150 + 38 * n as u32);
    let root = BitMapBackend::new(output, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;

    let all = rows.iter().flat_map(|r| [r.mproc, r.python]).flatten();
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil());

    let machine = results["machine"]["cpu"].as_str().unwrap_or("");
    let caption = format!(
        "mproc vs Python multiprocessing, 2 workers: time per operation, log scale (shorter is better) — {}",
        results["mode"].as_str().unwrap_or("")
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .margin_left(340)
        .margin_right(250)
        .x_label_area_size(56)
        .y_label_area_size(0)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc(format!("seconds per operation — {machine}"))
        .x_label_formatter(&|v| human_seconds(*v))
        .x_label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    // Row i is drawn from the top: y in [n-1-i, n-i).
    let top = |i: usize| (n - 1 - i) as f64;
    for (i, r) in rows.iter().enumerate() {
        let y = top(i);
        if let Some(v) = r.mproc {
            chart.draw_series([Rectangle::new(
                [(lo, y + 0.52), (v, y + 0.88)],
                MPROC.filled(),
            )])?;
        }
        if let Some(v) = r.python {
            chart.draw_series([Rectangle::new(
                [(lo, y + 0.12), (v, y + 0.48)],
                PYTHON.filled(),
            )])?;
        }
        if let Some(f) = r.floor {
            let tick = vec![(f, y + 0.04), (f, y + 0.96)];
            chart.draw_series([PathElement::new(tick, BLACK.stroke_width(3))])?;
        }
    }

    let label = TextStyle::from(("sans-serif", 16).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    let side = TextStyle::from(("sans-serif", 16).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, r) in rows.iter().enumerate() {
        let (x0, y0) = chart.backend_coord(&(lo, top(i) + 0.5));
        root.draw(&Text::new(r.label.clone(), (x0 - 10, y0), label.clone()))?;
        let (x1, _) = chart.backend_coord(&(hi, top(i) + 0.5));
        let verdict = match (r.ratio, r.mproc) {
            (Some(q), _) if q >= 1.0 => format!("mproc {}x better", three_digits(q)),
            (Some(q), _) => format!("mproc {}x worse", three_digits(1.0 / q)),
            (None, None) if !r.note.is_empty() => "mproc: not available".to_string(),
            _ => String::new(),
        };
        root.draw(&Text::new(verdict, (x1 + 10, y0), side.clone()))?;
    }

    // Legend, bottom left, beside the axis description.
    let legend = TextStyle::from(("sans-serif", 17).into_font()).color(&BLACK);
    let y = height as i32 - 40;
    for (k, (name, color)) in [("mproc", MPROC), ("Python", PYTHON)]
        .into_iter()
        .enumerate()
    {
        let x = 30 + 130 * k as i32;
        root.draw(&Rectangle::new([(x, y), (x + 22, y + 16)], color.filled()))?;
        root.draw(&Text::new(name, (x + 30, y - 1), legend.clone()))?;
    }
    let tick = vec![(30 + 270, y - 4), (30 + 270, y + 20)];
    root.draw(&PathElement::new(tick, BLACK.stroke_width(3)))?;
    root.draw(&Text::new("raw floor", (30 + 282, y - 1), legend))?;
    root.present()?;
    Ok(())
}
