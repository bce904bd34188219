//! `soak --plot soak.csv out.png`: the samples of a soak run, one panel per
//! quantity against time, the warm-up shaded. Drawn as `compare --plot`
//! draws `benches/compare.png` (plotters, a bitmap, a system TrueType font
//! or `MPROC_PLOT_FONT`).

use plotters::prelude::*;

use super::{warmup_end, Sample};

const LINE: RGBColor = RGBColor(214, 95, 0);
const WARMUP: RGBColor = RGBColor(228, 228, 228);
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

/// Draws `samples` into `output` (PNG).
pub(crate) fn draw(samples: &[Sample], output: &str) -> Result<(), String> {
    load_font()?;
    draw_panels(samples, output).map_err(|e| format!("{output}: {e}"))
}

type Get = fn(&Sample) -> f64;

fn draw_panels(samples: &[Sample], output: &str) -> Result<(), Box<dyn std::error::Error>> {
    let panels: [(&str, Get, bool); 5] = [
        ("driver RSS (MiB)", |s| s.rss_kib as f64 / 1024.0, false),
        ("driver descriptors", |s| s.fds as f64, true),
        ("driver threads", |s| s.threads as f64, true),
        ("child processes", |s| s.children as f64, true),
        (
            "child processes' RSS (MiB)",
            |s| s.children_rss_kib as f64 / 1024.0,
            false,
        ),
    ];
    let root = BitMapBackend::new(output, (1200, 1150)).into_drawing_area();
    root.fill(&WHITE)?;
    let last = samples.last().map_or(1.0, |s| s.t_s);
    let cycles = samples.last().map_or(0, |s| s.cycles);
    let (title, body) = root.split_vertically(50);
    title.draw(&Text::new(
        format!(
            "mproc soak: mixed load, {:.0} min, {cycles} cycles; sampled every 10 s (warm-up shaded)",
            last / 60.0
        ),
        (20, 15),
        ("sans-serif", 22).into_font(),
    ))?;
    let minutes = last / 60.0;
    let warm = warmup_end(samples) / 60.0;
    for (area, (name, get, whole)) in body.split_evenly((5, 1)).iter().zip(panels) {
        let values: Vec<f64> = samples.iter().map(get).collect();
        let hi = values.iter().fold(0f64, |h, v| h.max(*v)).max(1.0) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .margin_right(30)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .caption(name, ("sans-serif", 18))
            .build_cartesian_2d(0f64..minutes.max(0.1), 0f64..hi)?;
        chart.draw_series([Rectangle::new(
            [(0.0, 0.0), (warm.min(minutes), hi)],
            WARMUP.filled(),
        )])?;
        let y_fmt = |v: &f64| {
            if whole {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        };
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_label_formatter(&y_fmt)
            .x_label_style(("sans-serif", 14))
            .y_label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .zip(&values)
            .map(|(s, v)| (s.t_s / 60.0, *v))
            .collect();
        chart.draw_series([PathElement::new(pts.clone(), LINE.stroke_width(2))])?;
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 2, LINE.filled())))?;
    }
    root.present()?;
    Ok(())
}
