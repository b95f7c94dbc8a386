//! `ringbench plot RESULTS.json OUT.svg`: draws a `scripts/bench.sh` result file as an SVG bar
//! chart with plotters. One horizontal bar per suite entry (MB/s, 10^6 B/s), coloured by what it
//! measures (producer, consumer, both), labelled with its MB/s and its fraction of the ceiling it
//! is read against; the machine's ceilings (loopback TCP, O_DIRECT write and read) are dashed
//! vertical lines. Entries that did not run show their status instead of a bar.
//!
//! Runs on the main thread, no runtime. Reads only the fields bench.sh writes (`ceilings`,
//! `entries[].{name,fsync,ceiling,status,result.total.mb_per_s}`, `timestamp`, `machine`);
//! missing fields are drawn as missing, never invented.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

const WIDTH: u32 = 1000;
const ROW_PX: u32 = 34;
const TOP_PX: u32 = 60;
const BOTTOM_PX: u32 = 90;
const LABEL_PX: u32 = 330;

/// Ceilings drawn as lines: JSON key, legend name, colour.
const CEILINGS: [(&str, &str, RGBColor); 3] = [
    ("loopback_tcp_mb_per_s", "loopback TCP", RGBColor(0x88, 0x88, 0x88)),
    ("o_direct_write_mb_per_s", "O_DIRECT write", RGBColor(0xb0, 0x40, 0x40)),
    ("o_direct_read_mb_per_s", "O_DIRECT read", RGBColor(0x7a, 0x4f, 0xa0)),
];

/// Bar colour by the kind of ceiling an entry is read against.
fn kind_colour(kind: &str) -> RGBColor {
    match kind {
        "consumer" => RGBColor(0x6a, 0x9f, 0x58),
        "both" => RGBColor(0xc0, 0x80, 0x3a),
        _ => RGBColor(0x48, 0x78, 0xa8),
    }
}

struct Row {
    label: String,
    mb_per_s: Option<f64>,
    kind: String,
    ceiling: Option<f64>,
    status: String,
}

/// Reads `source` and writes the chart to `target`.
pub fn run(source: &Path, target: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(source)
        .map_err(|error| format!("cannot read {}: {error}", source.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|error| format!("{}: {error}", source.display()))?;
    let ceilings = &doc["ceilings"];
    let rows: Vec<Row> = doc["entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            let kind = entry["ceiling"].as_str().unwrap_or("producer").to_string();
            let disk_key =
                if kind == "consumer" { "o_direct_read_mb_per_s" } else { "o_direct_write_mb_per_s" };
            Row {
                label: format!(
                    "{} (fsync {})",
                    entry["name"].as_str().unwrap_or("?"),
                    entry["fsync"].as_str().unwrap_or("?")
                ),
                mb_per_s: entry["result"]["total"]["mb_per_s"].as_f64(),
                kind,
                ceiling: ceilings[disk_key].as_f64(),
                status: entry["status"].as_str().unwrap_or("?").to_string(),
            }
        })
        .collect();
    if rows.is_empty() {
        return Err(format!("{}: no entries to plot", source.display()));
    }
    let largest = rows
        .iter()
        .filter_map(|row| row.mb_per_s)
        .chain(CEILINGS.iter().filter_map(|(key, _, _)| ceilings[*key].as_f64()))
        .fold(1.0_f64, f64::max);
    let x_max = largest * 1.15;
    let height = TOP_PX + ROW_PX * rows.len() as u32 + BOTTOM_PX;

    let root = SVGBackend::new(target, (WIDTH, height)).into_drawing_area();
    let draw = |error: DrawingAreaErrorKind<_>| format!("drawing {}: {error}", target.display());
    root.fill(&WHITE).map_err(draw)?;
    let machine = &doc["machine"];
    let title = format!(
        "ringbroker bench {}: {} cores, kernel {}, {} s per run",
        doc["timestamp"].as_str().unwrap_or("?"),
        machine["nproc"].as_u64().map_or("?".to_string(), |n| n.to_string()),
        machine["kernel"].as_str().unwrap_or("?"),
        doc["seconds"].as_u64().map_or("?".to_string(), |n| n.to_string()),
    );
    let (chart_area, legend_area) = root.split_vertically(height - 40);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(LABEL_PX)
        .build_cartesian_2d(0.0..x_max, 0.0..rows.len() as f64)
        .map_err(draw)?;
    let labels: Vec<String> = rows.iter().rev().map(|row| row.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("MB/s (10^6 B/s); % = share of the disk ceiling the entry is read against")
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&|y| {
            // Labels sit at the bar centres (k + 0.5); the other ticks stay blank.
            let k = y - 0.5;
            if (k - k.round()).abs() < 1e-6 && k >= 0.0 {
                labels.get(k.round() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(draw)?;

    let count = rows.len();
    for (index, row) in rows.iter().enumerate() {
        // First entry at the top.
        let y = (count - 1 - index) as f64;
        match row.mb_per_s {
            Some(value) => {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y + 0.2), (value, y + 0.8)],
                        kind_colour(&row.kind).filled(),
                    )))
                    .map_err(draw)?;
                let share = row
                    .ceiling
                    .filter(|ceiling| *ceiling > 0.0)
                    .map(|ceiling| format!(" ({:.0}%)", value / ceiling * 100.0))
                    .unwrap_or_default();
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{value:.0} MB/s{share}"),
                        (value + x_max * 0.01, y + 0.5),
                        ("sans-serif", 13)
                            .into_font()
                            .into_text_style(&chart_area)
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )))
                    .map_err(draw)?;
            }
            None => {
                chart
                    .draw_series(std::iter::once(Text::new(
                        row.status.clone(),
                        (x_max * 0.01, y + 0.5),
                        ("sans-serif", 13)
                            .into_font()
                            .color(&RGBColor(0xb0, 0x40, 0x40))
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )))
                    .map_err(draw)?;
            }
        }
    }
    for (key, name, colour) in CEILINGS {
        let Some(value) = ceilings[key].as_f64() else { continue };
        chart
            .draw_series(DashedLineSeries::new(
                [(value, 0.0), (value, count as f64)],
                6,
                4,
                colour.stroke_width(2),
            ))
            .map_err(draw)?
            .label(format!("{name} {value:.0} MB/s"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;

    let mut x = 20;
    for kind in ["producer", "consumer", "both"] {
        legend_area
            .draw(&Rectangle::new([(x, 10), (x + 12, 22)], kind_colour(kind).filled()))
            .map_err(draw)?;
        legend_area.draw(&Text::new(kind, (x + 18, 10), ("sans-serif", 13))).map_err(draw)?;
        x += 110;
    }
    root.present().map_err(draw)?;
    Ok(())
}
