//! PNG renderings of the SVG charts, for documents and viewers that take bitmaps. The SVG
//! is rasterised by resvg (pure Rust); text uses the system's fonts, the generic
//! `sans-serif` family resolved to the first installed sans face of a list of common
//! ones. Without any usable font the chart is still written, without its text.

use resvg::{tiny_skia, usvg};
use std::sync::{Arc, OnceLock};

/// Sans-serif faces tried in order for the charts' `sans-serif` text.
const SANS: &[&str] = &[
    "DejaVu Sans",
    "Liberation Sans",
    "Noto Sans",
    "FreeSans",
    "Arial",
    "Helvetica",
];

/// The system font database, loaded once per process (loading scans the font
/// directories, which costs more than rendering a chart).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_system_fonts();
        let installed = |name: &str| {
            db.faces()
                .any(|f| f.families.iter().any(|(n, _)| n == name))
        };
        if let Some(sans) = SANS.iter().find(|n| installed(n)) {
            db.set_sans_serif_family(*sans);
        }
        Arc::new(db)
    })
    .clone()
}

/// Rasterises `svg` at `scale` (1.0 = the SVG's own pixel size) into PNG bytes.
pub fn render(svg: &str, scale: f32) -> Result<Vec<u8>, String> {
    let opt = usvg::Options {
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("SVG: {e}"))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or("empty chart")?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("chart too large to rasterise")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| format!("PNG: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_svg_becomes_a_png_of_the_scaled_size() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect x="0" y="0" width="20" height="20" fill="rgb(0,114,178)"/><text x="22" y="15" font-family="sans-serif" font-size="12">x</text></svg>"#;
        let png = render(svg, 2.0).unwrap_or_default();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        assert_eq!(u32::from_be_bytes([png[16], png[17], png[18], png[19]]), 80);
        assert_eq!(u32::from_be_bytes([png[20], png[21], png[22], png[23]]), 40);
        // The same input gives the same bytes.
        assert_eq!(render(svg, 2.0).unwrap_or_default(), png);
    }

    #[test]
    fn malformed_svg_is_an_error() {
        assert!(render("<svg", 1.0).is_err());
    }
}
