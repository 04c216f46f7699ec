//! One PNG per mode: a horizontal bar per figure on a 0–1 axis, with the Wilson 95%
//! interval as a whisker and the value printed beside it.

use std::path::Path;

use plotters::prelude::*;

use super::text::{GLYPH, draw_text, text_width};
use super::{ModeReport, mode_name};
use crate::error::{EvalError, Result};

pub const WIDTH: u32 = 1000;
pub const ROW_HEIGHT: i32 = 34;
const LABEL_SCALE: i32 = 2;
pub const TOP: i32 = 60;
/// The 0–1 axis runs from `BAR_LEFT` to `BAR_RIGHT` pixels.
pub const BAR_LEFT: i32 = 460;
pub const BAR_RIGHT: i32 = 900;
pub const INK: RGBColor = RGBColor(20, 20, 20);
pub const BAR: RGBColor = RGBColor(70, 120, 190);

pub fn draw_mode_chart(mode: &ModeReport, path: &Path) -> Result<()> {
    let rows = &mode.headline;
    let height = (TOP + ROW_HEIGHT * rows.len().max(1) as i32 + 50) as u32;
    draw(mode, path, height).map_err(|e| EvalError::Chart {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn x_of(value: f64) -> i32 {
    BAR_LEFT + ((BAR_RIGHT - BAR_LEFT) as f64 * value.clamp(0.0, 1.0)).round() as i32
}

fn draw(
    mode: &ModeReport,
    path: &Path,
    height: u32,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let area = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    area.fill(&WHITE)?;
    let (ink, bar) = (INK, BAR);
    let grid = RGBColor(220, 220, 220);
    let title = format!("SLC eval - mode {}", mode_name(mode.mode));
    draw_text(&area, &title, (20, 16), 3, &ink)?;
    let bottom = TOP + ROW_HEIGHT * mode.headline.len().max(1) as i32;
    for tick in 0..=4 {
        let value = tick as f64 / 4.0;
        let x = x_of(value);
        area.draw(&PathElement::new(vec![(x, TOP - 4), (x, bottom)], grid))?;
        let label = format!("{value:.2}");
        draw_text(
            &area,
            &label,
            (x - text_width(&label, 1) / 2, bottom + 8),
            1,
            &ink,
        )?;
    }
    if mode.headline.is_empty() {
        draw_text(&area, "no figures", (20, TOP + 8), LABEL_SCALE, &ink)?;
    }
    for (index, row) in mode.headline.iter().enumerate() {
        let top = TOP + index as i32 * ROW_HEIGHT;
        let middle = top + ROW_HEIGHT / 2;
        let mut label = row.column_label();
        let room = ((BAR_LEFT - 30) / (GLYPH * LABEL_SCALE)) as usize;
        if label.chars().count() > room {
            label = label
                .chars()
                .take(room.saturating_sub(1))
                .collect::<String>()
                + "~";
        }
        draw_text(
            &area,
            &label,
            (20, middle - GLYPH * LABEL_SCALE / 2),
            LABEL_SCALE,
            &ink,
        )?;
        area.draw(&Rectangle::new(
            [
                (BAR_LEFT, top + 7),
                (x_of(row.figure.value), top + ROW_HEIGHT - 7),
            ],
            bar.filled(),
        ))?;
        let (low, high) = (x_of(row.figure.low), x_of(row.figure.high));
        area.draw(&PathElement::new(
            vec![(low, middle), (high, middle)],
            ink.stroke_width(2),
        ))?;
        for x in [low, high] {
            area.draw(&PathElement::new(
                vec![(x, middle - 6), (x, middle + 6)],
                ink.stroke_width(2),
            ))?;
        }
        let value = format!("{:.3}", row.figure.value);
        draw_text(&area, &value, (BAR_RIGHT + 12, middle - GLYPH / 2), 1, &ink)?;
    }
    area.present()?;
    Ok(())
}
