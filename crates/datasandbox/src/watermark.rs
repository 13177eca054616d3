//! `datasandbox watermark`, run inside a pixel-streamed instance when its stack asks for it:
//! draws the user, the session and the time across the session's display, into its pixels
//! (not an overlay the user's browser could remove), so a photo or screenshot of the screen
//! names who was looking at it and when.
//!
//! There is no compositor, so nothing can be translucent: the watermark is a full-screen
//! override-redirect window whose *shape* is the text itself (the X SHAPE extension), in a
//! light grey, repeated across the screen. Its input shape is empty, so every click passes
//! through to the application below. It raises itself whenever another window appears or
//! moves, and redraws the time every minute. The text's glyphs come from the server's
//! built-in `fixed` font, read back as a bitmap and drawn enlarged as rectangles.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use x11rb::connection::{Connection, RequestConnection as _};
use x11rb::protocol::Event;
use x11rb::protocol::shape::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    ClipOrdering, ConfigureWindowAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, ImageFormat, ImageOrder, Rectangle,
    StackMode, Window, WindowClass,
};

/// The watermark's grey: visible on light and dark content alike.
pub const COLOR: u32 = 0x00a0_a0a0;
/// Each glyph pixel becomes a square this many pixels wide.
const SCALE: i16 = 2;
/// Vertical distance between rows of text, in pixels.
const ROW: i16 = 140;
/// Horizontal gap after each copy of the text, in pixels.
const GAP: i16 = 160;

type Error = Box<dyn std::error::Error>;

pub fn run() -> ExitCode {
    let user = std::env::var("DS_USER_NAME").unwrap_or_default();
    let session = std::env::var("DS_SESSION_ID").unwrap_or_default();
    match draw(&user, &session) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("watermark: {err}");
            ExitCode::from(1)
        }
    }
}

fn text(user: &str, session: &str) -> String {
    let short: String = session.chars().take(8).collect();
    format!("{user} | session {short} | {} UTC", chrono::Utc::now().format("%Y-%m-%d %H:%M"))
}

fn draw(user: &str, session: &str) -> Result<(), Error> {
    let (conn, screen) = x11rb::connect(Some(":1"))?;
    let screen = conn.setup().roots[screen].clone();
    conn.extension_information(shape::X11_EXTENSION_NAME)?.ok_or("the display has no SHAPE extension")?;
    let (width, height) = (screen.width_in_pixels, screen.height_in_pixels);
    let window = conn.generate_id()?;
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        window,
        screen.root,
        0,
        0,
        width,
        height,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new().background_pixel(COLOR).override_redirect(1),
    )?;
    // Clicks and keys go through to whatever is below.
    conn.shape_rectangles(shape::SO::SET, shape::SK::INPUT, ClipOrdering::UNSORTED, window, 0, 0, &[])?;
    // Windows appearing or moving on the root are the cue to raise the watermark again.
    conn.change_window_attributes(
        screen.root,
        &x11rb::protocol::xproto::ChangeWindowAttributesAux::new().event_mask(EventMask::SUBSTRUCTURE_NOTIFY),
    )?;
    let mut shown = String::new();
    let mut raised = Instant::now();
    loop {
        let now = text(user, session);
        if now != shown {
            let glyphs = render(&conn, screen.root, &now)?;
            let rectangles = tile(&glyphs, width, height);
            conn.shape_rectangles(shape::SO::SET, shape::SK::BOUNDING, ClipOrdering::UNSORTED, window, 0, 0, &rectangles)?;
            if shown.is_empty() {
                conn.map_window(window)?;
            }
            shown = now;
        }
        let mut moved = false;
        while let Some(event) = conn.poll_for_event()? {
            moved |= match event {
                Event::MapNotify(e) => e.window != window,
                Event::ConfigureNotify(e) => e.window != window,
                _ => false,
            };
        }
        if moved || raised.elapsed() > Duration::from_secs(2) {
            conn.configure_window(window, &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE))?;
            raised = Instant::now();
        }
        conn.flush()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text as a bitmap: width, height and the set pixels, row by row.
struct Glyphs {
    width: u16,
    height: u16,
    bits: Vec<bool>,
}

/// Draws `text` in the server's built-in `fixed` font into a one-bit pixmap and reads it back.
fn render(conn: &impl Connection, root: Window, text: &str) -> Result<Glyphs, Error> {
    // `fixed` is Latin-1; anything else becomes `?`.
    let bytes: Vec<u8> = text.chars().map(|c| u8::try_from(u32::from(c)).ok().filter(|b| *b >= 0x20).unwrap_or(b'?')).collect();
    let font = conn.generate_id()?;
    conn.open_font(font, b"fixed")?.check()?;
    let chars: Vec<x11rb::protocol::xproto::Char2b> =
        bytes.iter().map(|b| x11rb::protocol::xproto::Char2b { byte1: 0, byte2: *b }).collect();
    let extents = conn.query_text_extents(font, &chars)?.reply()?;
    let width = u16::try_from(extents.overall_width.max(1))?;
    let height = u16::try_from((extents.font_ascent + extents.font_descent).max(1))?;
    let pixmap = conn.generate_id()?;
    conn.create_pixmap(1, pixmap, root, width, height)?;
    let gc = conn.generate_id()?;
    conn.create_gc(gc, pixmap, &CreateGCAux::new().foreground(0).background(0).font(font))?;
    conn.poly_fill_rectangle(pixmap, gc, &[Rectangle { x: 0, y: 0, width, height }])?;
    conn.change_gc(gc, &x11rb::protocol::xproto::ChangeGCAux::new().foreground(1))?;
    conn.image_text8(pixmap, gc, 0, extents.font_ascent, &bytes)?;
    let image = conn.get_image(ImageFormat::XY_PIXMAP, pixmap, 0, 0, width, height, 1)?.reply()?;
    let setup = conn.setup();
    let pad = usize::from(setup.bitmap_format_scanline_pad.max(8));
    let stride = usize::from(width).div_ceil(pad) * pad / 8;
    let lsb = setup.bitmap_format_bit_order == ImageOrder::LSB_FIRST;
    let mut bits = Vec::with_capacity(usize::from(width) * usize::from(height));
    for y in 0..usize::from(height) {
        for x in 0..usize::from(width) {
            let byte = image.data.get(y * stride + x / 8).copied().unwrap_or(0);
            let bit = if lsb { x % 8 } else { 7 - x % 8 };
            bits.push(byte >> bit & 1 == 1);
        }
    }
    conn.free_gc(gc)?;
    conn.free_pixmap(pixmap)?;
    conn.close_font(font)?;
    Ok(Glyphs { width, height, bits })
}

/// The text repeated across the screen, enlarged, as runs of set pixels; every other row is
/// shifted by half a copy so that no column is free of it.
fn tile(glyphs: &Glyphs, width: u16, height: u16) -> Vec<Rectangle> {
    let copy = i16::try_from(glyphs.width).unwrap_or(i16::MAX).saturating_mul(SCALE).saturating_add(GAP);
    let mut rectangles = Vec::new();
    let (screen_width, screen_height) = (i16::try_from(width).unwrap_or(i16::MAX), i16::try_from(height).unwrap_or(i16::MAX));
    let mut row = 0;
    let mut top = ROW / 3;
    while top < screen_height {
        let mut left = if row % 2 == 0 { -copy / 4 } else { copy / 4 };
        while left < screen_width {
            for y in 0..glyphs.height {
                let line = &glyphs.bits[usize::from(y) * usize::from(glyphs.width)..][..usize::from(glyphs.width)];
                let mut x = 0;
                while x < line.len() {
                    if !line[x] {
                        x += 1;
                        continue;
                    }
                    let start = x;
                    while x < line.len() && line[x] {
                        x += 1;
                    }
                    let (start, run) = (i16::try_from(start).unwrap_or(0), u16::try_from(x - start).unwrap_or(0));
                    rectangles.push(Rectangle {
                        x: left.saturating_add(start * SCALE),
                        y: top.saturating_add(i16::try_from(y).unwrap_or(0) * SCALE),
                        width: run * SCALE.unsigned_abs(),
                        height: SCALE.unsigned_abs(),
                    });
                }
            }
            left = left.saturating_add(copy);
        }
        top = top.saturating_add(ROW);
        row += 1;
    }
    rectangles
}

#[cfg(test)]
mod tests {
    use super::{Glyphs, tile};

    #[test]
    fn the_text_covers_every_row_band_and_merges_runs() {
        // A 3×2 glyph bitmap: a run of two, a gap, then one pixel; one pixel on the second line.
        let glyphs = Glyphs { width: 3, height: 2, bits: vec![true, true, false, false, true, false] };
        let rectangles = tile(&glyphs, 1280, 800);
        assert!(rectangles.iter().any(|r| r.width == 4 && r.height == 2), "a run of two becomes one 4×2 rectangle");
        let rows: std::collections::BTreeSet<i16> = rectangles.iter().map(|r| r.y).collect();
        assert!(rows.len() >= 10, "every band of the screen has text: {rows:?}");
        assert!(rectangles.iter().all(|r| r.y < 800 + 4));
    }
}
