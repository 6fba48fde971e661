//! Shared by the benches: interpolation at a rate, and a dependency-free SVG line plot with a
//! log-scaled y axis.

use std::fmt::Write as _;
use std::path::Path;

/// `log(y)` interpolated linearly in rate at `x`, from the two nearest points around it
/// (`(bits, y)` pairs, any order). `None` outside the measured range.
pub fn at(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let mut p = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p.windows(2).find(|w| w[0].0 <= x && x <= w[1].0).map(|w| {
        let t = if w[1].0 > w[0].0 {
            (x - w[0].0) / (w[1].0 - w[0].0)
        } else {
            0.0
        };
        (w[0].1.ln() * (1.0 - t) + w[1].1.ln() * t).exp()
    })
}

/// `a / b` to four decimals, or `n/a` when either is missing (the benches' last lines).
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.4}", a / b),
        _ => "n/a".into(),
    }
}

/// Writes a bench's table and plot as `<dir>/<stem>.md` and `<dir>/<stem>.svg`.
pub fn write_outputs(dir: &Path, stem: &str, md: &str, svg: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (md_path, svg_path) = (
        dir.join(format!("{stem}.md")),
        dir.join(format!("{stem}.svg")),
    );
    std::fs::write(&md_path, md)?;
    std::fs::write(&svg_path, svg)?;
    println!("wrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}

/// One plotted series: name, colour, `(bits, y)` points.
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line plot of `(name, colour, points)` series: x = measured bits per parameter (1..9),
/// y on a log scale labelled `y_label`.
pub fn svg(series: &[Series<'_>], y_label: &str) -> String {
    let (w, h, m) = (640.0, 420.0, 60.0);
    let all: Vec<&(f64, f64)> = series.iter().flat_map(|s| s.2.iter()).collect();
    let (x0, x1) = (1.0f64, 9.0f64);
    let ys: Vec<f64> = all.iter().map(|p| p.1.log10()).collect();
    let (y0, y1) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min).floor(),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max).ceil(),
    );
    let px = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
    let py = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for b in 1..=9 {
        let x = px(f64::from(b));
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{b}</text>",
            m,
            h - m,
            h - m + 16.0
        );
    }
    let mut y = y0;
    while y <= y1 + 1e-9 {
        let yy = py(y);
        let _ = writeln!(
            s,
            "<line x1=\"{m}\" y1=\"{yy}\" x2=\"{}\" y2=\"{yy}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">1e{y}</text>",
            w - m,
            m - 6.0,
            yy + 4.0
        );
        y += 1.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">measured bits per parameter</text>",
        w / 2.0,
        h - 16.0
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{y_label}</text>",
        h / 2.0,
        h / 2.0
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let mut p = pts.clone();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = p
            .iter()
            .filter(|q| q.0 >= x0 && q.0 <= x1)
            .map(|q| format!("{:.1},{:.1}", px(q.0), py(q.1.log10())))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for q in path {
            let (a, b) = q.split_once(',').expect("x,y");
            let _ = writeln!(
                s,
                "<circle cx=\"{a}\" cy=\"{b}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
        let ly = m + 16.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            w - m - 170.0,
            ly,
            w - m - 152.0,
            ly + 5.0
        );
    }
    s.push_str("</svg>\n");
    s
}
