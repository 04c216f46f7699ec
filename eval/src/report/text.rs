//! Text for the PNG charts from the public-domain 8×8 bitmap font in `font8x8`, drawn pixel
//! by pixel: no system fonts, no font files, identical output on every machine.

use font8x8::UnicodeFonts;
use plotters::prelude::*;

pub const GLYPH: i32 = 8;

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale`×`scale`.
pub fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    (x, y): (i32, i32),
    scale: i32,
    color: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (index, character) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(character)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        let origin_x = x + index as i32 * GLYPH * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for column in 0..8 {
                if bits & (1 << column) != 0 {
                    let left = origin_x + column * scale;
                    let top = y + row as i32 * scale;
                    for dy in 0..scale {
                        for dx in 0..scale {
                            area.draw_pixel((left + dx, top + dy), color)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

pub fn text_width(text: &str, scale: i32) -> i32 {
    text.chars().count() as i32 * GLYPH * scale
}
