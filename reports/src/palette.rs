//! Colours: the Okabe-Ito palette (distinguishable with the common colour-vision
//! deficiencies), with one fixed colour per mode in every chart.

use plotters::style::RGBColor;

/// Okabe-Ito blue.
pub const BLUE: RGBColor = RGBColor(0, 114, 178);
/// Okabe-Ito vermillion.
pub const VERMILLION: RGBColor = RGBColor(213, 94, 0);
/// Okabe-Ito orange.
pub const ORANGE: RGBColor = RGBColor(230, 159, 0);
/// Okabe-Ito bluish green.
pub const GREEN: RGBColor = RGBColor(0, 158, 115);
/// Okabe-Ito reddish purple.
pub const PURPLE: RGBColor = RGBColor(204, 121, 167);
/// Okabe-Ito sky blue.
pub const SKY: RGBColor = RGBColor(86, 180, 233);
/// Okabe-Ito yellow.
pub const YELLOW: RGBColor = RGBColor(240, 228, 66);
/// Neutral grey.
pub const GREY: RGBColor = RGBColor(153, 153, 153);
/// Near-black for text and axes.
pub const INK: RGBColor = RGBColor(34, 34, 34);

/// The colour of a mode: fixed for the modes hvsim knows or will know, then by position.
pub fn mode_color(mode: &str, position: usize) -> RGBColor {
    match mode {
        "native" => BLUE,
        "pv" => VERMILLION,
        "hvm-shadow" => ORANGE,
        "hvm-ept" => GREEN,
        "hvm-ept-apicv" => SKY,
        "hybrid" => PURPLE,
        _ => [YELLOW, GREY, INK][position % 3],
    }
}

/// The colour of a cycle category (in [`crate::Metrics::breakdown`] order): guest work in
/// blues, walk stalls in warm colours, virtualization overheads in purple/black/green,
/// idle grey.
pub const CATEGORY: [RGBColor; 9] = [
    SKY, BLUE, VERMILLION, ORANGE, YELLOW, PURPLE, INK, GREEN, GREY,
];

/// The colour of an exit-reason group (in [`crate::metrics::EXIT_GROUPS`] order).
pub const EXIT_GROUP: [RGBColor; 11] = [
    VERMILLION,
    SKY,
    YELLOW,
    GREY,
    ORANGE,
    PURPLE,
    BLUE,
    GREEN,
    INK,
    RGBColor(120, 60, 0),
    RGBColor(200, 200, 200),
];
