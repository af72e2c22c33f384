//! QR codes for `rdv offer --qr` / `--qr-png`: the link (and, in two-channel mode, the passphrase
//! on its own) for a phone's camera.

use anyhow::{Context, Result};
use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, EcLevel, QrCode};
use std::io::Write;
use std::path::Path;

/// Pixels per module in a PNG.
const PNG_SCALE: usize = 8;
/// Light modules around the code (the standard's quiet zone).
const QUIET_ZONE: usize = 4;

/// The code for `text`, with medium error correction (a link of ~200 characters fits easily).
fn encode(text: &str) -> Result<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .context("the text is too long for a QR code")
}

/// `text` as a QR code drawn with half-block characters, two modules per character cell, quiet
/// zone included. For a dark terminal background (`light_background` false) the light modules
/// are drawn as blocks, so that the code shows dark on light as scanners expect.
pub(crate) fn terminal(text: &str, light_background: bool) -> Result<String> {
    let code = encode(text)?;
    let mut r = code.render::<Dense1x2>();
    if !light_background {
        r.dark_color(Dense1x2::Light).light_color(Dense1x2::Dark);
    }
    Ok(r.quiet_zone(true).build())
}

/// Write `text` as a QR code to a new PNG file (an existing file is never overwritten).
pub(crate) fn write_png(text: &str, path: &Path) -> Result<()> {
    let code = encode(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET_ZONE, i / modules + QUIET_ZONE);
        for y in my * PNG_SCALE..(my + 1) * PNG_SCALE {
            pixels[y * side + mx * PNG_SCALE..y * side + (mx + 1) * PNG_SCALE].fill(0);
        }
    }
    let side32 = u32::try_from(side).context("QR code too large")?;
    // Private (0600): in one-channel mode the image holds the passphrase too. Half an image
    // (a full disk) is removed again: a retry with the same name would find it in its way.
    crate::term::write_private(path, &path.display().to_string(), |file| {
        let mut out = std::io::BufWriter::new(file);
        let mut enc = png::Encoder::new(&mut out, side32, side32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(std::io::Error::other)?;
        w.write_image_data(&pixels)
            .and_then(|()| w.finish())
            .map_err(std::io::Error::other)?;
        out.flush()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Read a terminal rendering back into modules (true = dark) and decode it.
    pub(crate) fn decode_terminal(text: &str, light_background: bool) -> Option<String> {
        let mut rows: Vec<Vec<bool>> = Vec::new();
        for line in text.lines() {
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for c in line.chars() {
                let (t, b) = match c {
                    '\u{2588}' => (true, true),
                    '\u{2580}' => (true, false),
                    '\u{2584}' => (false, true),
                    ' ' => (false, false),
                    _ => return None,
                };
                // A block is drawn in the terminal's foreground colour.
                top.push(t == light_background);
                bottom.push(b == light_background);
            }
            rows.push(top);
            rows.push(bottom);
        }
        let h = rows.len();
        let w = rows.first()?.len();
        // Scale up a little: the detector wants more than one pixel per module.
        const S: usize = 4;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * S, h * S, |x, y| {
            if rows[y / S].get(x / S).copied().unwrap_or(false) {
                0
            } else {
                255
            }
        });
        let grids = img.detect_grids();
        let (_, content) = grids.first()?.decode().ok()?;
        Some(content)
    }

    const LINK: &str = "rdv1:2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion:7625/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA?k=argon2id:m=65536,t=3,p=4&p=correct-horse-battery-staple-river";

    #[test]
    fn terminal_codes_decode_to_the_exact_text() {
        for light in [false, true] {
            let drawn = terminal(LINK, light).unwrap();
            assert_eq!(decode_terminal(&drawn, light).as_deref(), Some(LINK));
        }
    }

    #[test]
    fn png_decodes_to_the_exact_text_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.png");
        write_png(LINK, &path).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * info.line_size + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        assert_eq!(grids[0].decode().unwrap().1, LINK);
        assert!(write_png("other", &path).is_err());
    }

    #[test]
    fn too_long_text_is_an_error() {
        assert!(terminal(&"x".repeat(5000), false).is_err());
    }
}
