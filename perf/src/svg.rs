//! A small self-written SVG bar chart: one panel per measure (each with its own unit and scale),
//! one horizontal bar per backend, the value printed beside each bar.

use std::fmt::Write as _;

/// One measure across the backends.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    /// E.g. "Mbit/s, higher is better".
    pub note: String,
    /// (backend, value); `None` is drawn as "n/a".
    pub bars: Vec<(String, Option<f64>)>,
    /// Decimals of the printed values.
    pub decimals: usize,
}

const PANEL_W: f64 = 480.0;
const LABEL_W: f64 = 130.0;
const VALUE_W: f64 = 70.0;
const BAR_H: f64 = 22.0;
const BAR_GAP: f64 = 8.0;
const PANEL_HEAD: f64 = 44.0;
const MARGIN: f64 = 16.0;
const COLUMNS: usize = 2;
const COLORS: [&str; 7] = [
    "#8c8c8c", "#d98c1f", "#3d85c6", "#2e9e5b", "#9b59b6", "#c0392b", "#7a1f14",
];

/// Escapes text for SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole SVG document: a title, a subtitle line per `subtitle` entry, then the panels in a
/// grid of two columns. The same backend gets the same colour in every panel.
pub fn bar_chart(title: &str, subtitle: &[String], panels: &[Panel]) -> String {
    let rows = panels.len().div_ceil(COLUMNS);
    let bars = panels.iter().map(|p| p.bars.len()).max().unwrap_or(0) as f64;
    let panel_h = PANEL_HEAD + bars * (BAR_H + BAR_GAP) + MARGIN;
    let head = 36.0 + 16.0 * subtitle.len() as f64;
    let width = MARGIN + COLUMNS as f64 * (PANEL_W + MARGIN);
    let height = head + rows as f64 * (panel_h + MARGIN) + MARGIN;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, line) in subtitle.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="{MARGIN}" y="{:.0}" fill="#555">{}</text>"##,
            42.0 + 16.0 * i as f64,
            escape(line)
        );
    }
    let names: Vec<&str> = panels
        .iter()
        .flat_map(|p| p.bars.iter().map(|b| b.0.as_str()))
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    for (k, panel) in panels.iter().enumerate() {
        let x0 = MARGIN + (k % COLUMNS) as f64 * (PANEL_W + MARGIN);
        let y0 = head + (k / COLUMNS) as f64 * (panel_h + MARGIN);
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.0}" y="{y0:.0}" width="{PANEL_W:.0}" height="{panel_h:.0}" fill="none" stroke="#ccc"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.0}" font-weight="bold">{}</text>"#,
            x0 + 10.0,
            y0 + 18.0,
            escape(&panel.title)
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.0}" y="{:.0}" fill="#555" font-size="11">{}</text>"##,
            x0 + 10.0,
            y0 + 34.0,
            escape(&panel.note)
        );
        let max = panel.bars.iter().filter_map(|b| b.1).fold(0.0f64, f64::max);
        let span = PANEL_W - LABEL_W - VALUE_W - 20.0;
        for (i, (name, value)) in panel.bars.iter().enumerate() {
            let y = y0 + PANEL_HEAD + i as f64 * (BAR_H + BAR_GAP);
            let color = COLORS[names.iter().position(|n| n == name).unwrap_or(0) % COLORS.len()];
            let _ = writeln!(
                s,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
                x0 + LABEL_W,
                y + BAR_H * 0.7,
                escape(name)
            );
            let bar_x = x0 + LABEL_W + 8.0;
            match value {
                Some(v) => {
                    let w = if max > 0.0 { v / max * span } else { 0.0 }.max(1.0);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{bar_x:.0}" y="{y:.0}" width="{w:.1}" height="{BAR_H:.0}" fill="{color}"/>"#
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.0}" y="{:.0}">{v:.prec$}</text>"#,
                        bar_x + w + 6.0,
                        y + BAR_H * 0.7,
                        prec = panel.decimals
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.0}" y="{:.0}" fill="#888">n/a</text>"##,
                        bar_x + 4.0,
                        y + BAR_H * 0.7
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_bar_and_escapes_text() {
        let panels = vec![
            Panel {
                title: "guest→host".into(),
                note: "Mbit/s, higher is better".into(),
                bars: vec![("a<b".into(), Some(100.0)), ("c".into(), Some(50.0))],
                decimals: 0,
            },
            Panel {
                title: "latency".into(),
                note: "ms".into(),
                bars: vec![("a<b".into(), None), ("c".into(), Some(0.25))],
                decimals: 2,
            },
        ];
        let svg = bar_chart("t & t", &["sub".into()], &panels);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains("t &amp; t"));
        assert!(svg.contains(">100<"));
        assert!(svg.contains(">0.25<"));
        assert!(svg.contains(">n/a<"));
        // The larger bar spans the whole scale, the other half of it.
        let span = PANEL_W - LABEL_W - VALUE_W - 20.0;
        assert!(svg.contains(&format!(r#"width="{span:.1}""#)));
        assert!(svg.contains(&format!(r#"width="{:.1}""#, span / 2.0)));
    }
}
