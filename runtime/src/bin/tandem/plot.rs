//! A dependency-light PNG line plot (dev accuracy against cumulative bytes sent):
//! axes with ten ticks each, the line and its points. The numbers themselves are in
//! the metrics JSON; the plot shows the shape.

const WIDTH: usize = 640;
const HEIGHT: usize = 400;
const MARGIN: usize = 40;

/// An RGB PNG of `points` (x, y), scaled to fit: x from 0, y from 0.5 to 1 (accuracy
/// of a binary task) unless the data leave that range.
pub(crate) fn line_png(points: &[(f64, f64)]) -> Vec<u8> {
    let mut pixels = vec![255u8; WIDTH * HEIGHT * 3];
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_min = points.iter().map(|p| p.1).fold(0.5, f64::min);
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let (plot_w, plot_h) = ((WIDTH - 2 * MARGIN) as f64, (HEIGHT - 2 * MARGIN) as f64);
    let to_px = |(x, y): (f64, f64)| {
        let px = MARGIN as f64 + x / x_max * plot_w;
        let py = (HEIGHT - MARGIN) as f64 - (y - y_min) / (y_max - y_min).max(1e-9) * plot_h;
        (px, py)
    };
    let mut set = |x: i64, y: i64, rgb: [u8; 3]| {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            let at = (y as usize * WIDTH + x as usize) * 3;
            pixels[at..at + 3].copy_from_slice(&rgb);
        }
    };
    let black = [0, 0, 0];
    let (x0, y0) = (MARGIN as i64, (HEIGHT - MARGIN) as i64);
    for i in 0..=(WIDTH - 2 * MARGIN) as i64 {
        set(x0 + i, y0, black);
    }
    for i in 0..=(HEIGHT - 2 * MARGIN) as i64 {
        set(x0, y0 - i, black);
    }
    for t in 0..=10 {
        let tx = x0 + t * (WIDTH - 2 * MARGIN) as i64 / 10;
        let ty = y0 - t * (HEIGHT - 2 * MARGIN) as i64 / 10;
        for d in 1..=5 {
            set(tx, y0 + d, black);
            set(x0 - d, ty, black);
        }
    }
    let blue = [31, 119, 180];
    for pair in points.windows(2) {
        let (a, b) = (to_px(pair[0]), to_px(pair[1]));
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            set(
                (a.0 + t * (b.0 - a.0)).round() as i64,
                (a.1 + t * (b.1 - a.1)).round() as i64,
                blue,
            );
        }
    }
    for &p in points {
        let (px, py) = to_px(p);
        for dy in -3..=3 {
            for dx in -3..=3 {
                set(px.round() as i64 + dx, py.round() as i64 + dy, blue);
            }
        }
    }
    encode(&pixels)
}

fn encode(pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH as u32, HEIGHT as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Writing into a Vec cannot fail on I/O; a failure here would be a size bug.
    let mut writer = encoder.write_header().expect("PNG header into memory");
    writer
        .write_image_data(pixels)
        .expect("PNG data of the declared size");
    drop(writer);
    out
}
