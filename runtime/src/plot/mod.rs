//! Line charts as PNG, readable by a person without the JSON beside them: a title,
//! labelled axes with tick values, grid lines, one line (with its points) per series in
//! its own colour, and a legend when there are several. No font files or plotting
//! dependencies: a 5x7 bitmap font and the `png` encoder.

mod font;

/// One line of a chart.
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    /// Its name in the legend (shown when a chart has several).
    pub label: &'a str,
    /// The data, in drawing order.
    pub points: &'a [(f64, f64)],
}

/// One chart: a line per series, all on the same axes.
#[derive(Clone, Copy, Debug)]
pub struct Chart<'a> {
    /// Above the chart.
    pub title: &'a str,
    /// Under the x axis.
    pub x_label: &'a str,
    /// Above the y axis.
    pub y_label: &'a str,
    /// The lines, drawn in order in [`PALETTE`]'s colours.
    pub series: &'a [Series<'a>],
}

/// Line colours, in series order (then again from the first).
pub const PALETTE: [[u8; 3]; 4] = [BLUE, [255, 127, 14], [44, 160, 44], [214, 39, 40]];

const WIDTH: usize = 800;
const CHART_HEIGHT: usize = 440;
const SCALE: usize = 2;
const LEFT: usize = 90;
const RIGHT: usize = 30;
const TOP: usize = 60;
const BOTTOM: usize = 70;

const BLACK: [u8; 3] = [0, 0, 0];
const GREY: [u8; 3] = [225, 225, 225];
const BLUE: [u8; 3] = [31, 119, 180];

struct Canvas {
    pixels: Vec<u8>,
    height: usize,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..self.height as i64).contains(&y) {
            let at = (y as usize * WIDTH + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&rgb);
        }
    }

    /// `text` with its top-left corner at (x, y).
    fn text(&mut self, x: i64, y: i64, text: &str) {
        for (i, c) in text.chars().enumerate() {
            let left = x + (i * (font::WIDTH + 1) * SCALE) as i64;
            for (row, bits) in font::glyph(c).iter().enumerate() {
                for col in 0..font::WIDTH {
                    if bits >> (font::WIDTH - 1 - col) & 1 == 1 {
                        for dy in 0..SCALE {
                            for dx in 0..SCALE {
                                self.set(
                                    left + (col * SCALE + dx) as i64,
                                    y + (row * SCALE + dy) as i64,
                                    BLACK,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// A filled square of half-width `half` centred on (x, y).
    fn square(&mut self, x: i64, y: i64, half: i64, rgb: [u8; 3]) {
        for dy in -half..=half {
            for dx in -half..=half {
                self.set(x + dx, y + dy, rgb);
            }
        }
    }

    fn line(&mut self, a: (f64, f64), b: (f64, f64), rgb: [u8; 3]) {
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            self.set(
                (a.0 + t * (b.0 - a.0)).round() as i64,
                (a.1 + t * (b.1 - a.1)).round() as i64,
                rgb,
            );
        }
    }
}

/// Width in pixels of `text`.
fn text_width(text: &str) -> usize {
    text.chars().count() * (font::WIDTH + 1) * SCALE
}

/// Tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about
/// five of them.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * power);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|t| *t <= hi + step * 1e-9)
        .collect()
}

/// The data range widened to whole tick steps, and its ticks.
fn axis((lo, hi): (f64, f64)) -> (f64, f64, Vec<f64>) {
    let first = ticks(lo, hi);
    let step = if first.len() > 1 {
        first[1] - first[0]
    } else {
        (hi - lo).max(1e-12)
    };
    let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    (lo, hi, ticks(lo, hi))
}

/// A tick value as text, with as many decimals as the step needs.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{value:.decimals$}")
}

/// The range of `values` padded to include 0-width data, and `floor` if given.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo, hi)
}

fn draw(canvas: &mut Canvas, top: usize, chart: &Chart<'_>) {
    let (x0, x1) = (LEFT as f64, (WIDTH - RIGHT) as f64);
    let (y_bottom, y_top) = ((top + CHART_HEIGHT - BOTTOM) as f64, (top + TOP) as f64);
    let all = || chart.series.iter().flat_map(|s| s.points.iter());
    let (xlo, xhi, xt) = axis(range(all().map(|p| p.0)));
    let (ylo, yhi, yt) = axis(range(all().map(|p| p.1)));
    let px = |x: f64| x0 + (x - xlo) / (xhi - xlo).max(f64::EPSILON) * (x1 - x0);
    let py = |y: f64| y_bottom - (y - ylo) / (yhi - ylo).max(f64::EPSILON) * (y_bottom - y_top);
    let glyph_h = (font::HEIGHT * SCALE) as i64;
    canvas.text(
        (WIDTH as i64 - text_width(chart.title) as i64) / 2,
        top as i64 + 12,
        chart.title,
    );
    canvas.text(8, top as i64 + TOP as i64 - glyph_h - 12, chart.y_label);
    let step = |t: &[f64]| if t.len() > 1 { t[1] - t[0] } else { 1.0 };
    for &t in &xt {
        let x = px(t);
        canvas.line((x, y_top), (x, y_bottom), GREY);
        canvas.line((x, y_bottom), (x, y_bottom + 6.0), BLACK);
        let label = tick_label(t, step(&xt));
        canvas.text(
            x as i64 - text_width(&label) as i64 / 2,
            y_bottom as i64 + 12,
            &label,
        );
    }
    for &t in &yt {
        let y = py(t);
        canvas.line((x0, y), (x1, y), GREY);
        canvas.line((x0 - 6.0, y), (x0, y), BLACK);
        let label = tick_label(t, step(&yt));
        canvas.text(
            x0 as i64 - 12 - text_width(&label) as i64,
            y as i64 - glyph_h / 2,
            &label,
        );
    }
    canvas.line((x0, y_bottom), (x1, y_bottom), BLACK);
    canvas.line((x0, y_bottom), (x0, y_top), BLACK);
    canvas.text(
        (x0 + x1) as i64 / 2 - text_width(chart.x_label) as i64 / 2,
        y_bottom as i64 + 12 + glyph_h + 10,
        chart.x_label,
    );
    for (i, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        for pair in points.windows(2) {
            canvas.line(pair[0], pair[1], colour);
        }
        if points.len() <= 60 {
            for &(x, y) in &points {
                canvas.square(x.round() as i64, y.round() as i64, 2, colour);
            }
        }
    }
    if chart.series.len() > 1 {
        // The legend, top left inside the plot area: a colour square and the label.
        for (i, series) in chart.series.iter().enumerate() {
            let y = y_top as i64 + 10 + i as i64 * (glyph_h + 8);
            let x = x0 as i64 + 14;
            canvas.square(x + 5, y + glyph_h / 2, 5, PALETTE[i % PALETTE.len()]);
            canvas.text(x + 16, y, series.label);
        }
    }
}

/// The charts stacked top to bottom in one RGB PNG.
pub fn png(charts: &[Chart<'_>]) -> Vec<u8> {
    let height = CHART_HEIGHT * charts.len().max(1);
    let mut canvas = Canvas {
        pixels: vec![255u8; WIDTH * height * 3],
        height,
    };
    for (i, chart) in charts.iter().enumerate() {
        draw(&mut canvas, i * CHART_HEIGHT, chart);
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Writing into a Vec cannot fail on I/O; a failure here would be a size bug.
    let mut writer = encoder.write_header().expect("PNG header into memory");
    writer
        .write_image_data(&canvas.pixels)
        .expect("PNG data of the declared size");
    drop(writer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_covering_the_range() {
        assert_eq!(ticks(0.0, 100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(1.0, 9.0), [2.0, 4.0, 6.0, 8.0]);
        let t = ticks(0.1, 0.93);
        assert!(t.len() >= 4 && t.len() <= 7, "{t:?}");
        assert!((t[1] - t[0] - 0.2).abs() < 1e-9, "{t:?}");
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_label(40.0, 20.0), "40");
    }

    #[test]
    fn draws_a_decodable_png_with_text_and_a_line() {
        let points: Vec<(f64, f64)> = (1..=50)
            .map(|r| (r as f64, 50.0 + r as f64 * 0.7))
            .collect();
        let series = [Series {
            label: "RUN",
            points: &points,
        }];
        let chart = Chart {
            title: "TEST ACCURACY",
            x_label: "ROUND",
            y_label: "ACCURACY (%)",
            series: &series,
        };
        let bytes = png(&[chart, chart]);
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width as usize, info.height as usize),
            (WIDTH, 2 * CHART_HEIGHT)
        );
        let count = |rgb: [u8; 3]| buf.chunks_exact(3).filter(|p| *p == rgb).count();
        // Text, axes and ticks in black; the line in blue; both charts drawn.
        assert!(count(BLACK) > 2000, "{} black pixels", count(BLACK));
        assert!(count(BLUE) > 1000, "{} blue pixels", count(BLUE));
        // Nothing drawn for an empty chart but its frame and labels: no panic.
        let empty = Chart {
            series: &[],
            ..chart
        };
        assert!(!png(&[empty]).is_empty());
    }

    #[test]
    fn each_series_has_its_colour_and_a_legend_entry() {
        let rising: Vec<(f64, f64)> = (0..30).map(|i| (i as f64, i as f64)).collect();
        let flat: Vec<(f64, f64)> = (0..30).map(|i| (i as f64, 10.0)).collect();
        let pixels = |series: &[Series<'_>]| {
            let bytes = png(&[Chart {
                title: "T",
                x_label: "X",
                y_label: "Y",
                series,
            }]);
            let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            reader.next_frame(&mut buf).unwrap();
            buf
        };
        let count = |buf: &[u8], rgb: [u8; 3]| buf.chunks_exact(3).filter(|p| *p == rgb).count();
        let one = pixels(&[Series {
            label: "A",
            points: &rising,
        }]);
        let two = pixels(&[
            Series {
                label: "A",
                points: &rising,
            },
            Series {
                label: "B",
                points: &flat,
            },
        ]);
        assert_eq!(count(&one, PALETTE[1]), 0, "one series, one colour");
        assert!(
            count(&two, PALETTE[1]) > 300,
            "the second line in the second colour"
        );
        // The legend adds its two labels in black: more black than the single chart.
        assert!(count(&two, BLACK) > count(&one, BLACK));
    }
}
