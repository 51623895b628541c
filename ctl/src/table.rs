//! Plain-text tables and bars for the terminal.

/// A left- or right-aligned column.
#[derive(Clone, Copy)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// Renders rows under a header, each column as wide as its widest cell.
pub fn render(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(h.chars().count())
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(header)
            .zip(&widths)
            .map(|((c, (_, align)), w)| {
                let pad = w.saturating_sub(c.chars().count());
                match align {
                    Align::Left => format!("{c}{}", " ".repeat(pad)),
                    Align::Right => format!("{}{c}", " ".repeat(pad)),
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|(h, _)| *h).collect());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A bar of `width` cells filled in proportion to `fraction` (0 to 1).
pub fn bar(fraction: f64, width: usize) -> String {
    let filled = (fraction.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "·".repeat(width - filled))
}

/// A count in a short human form: 950, 12.3k, 4.5M.
pub fn human(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.1}G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else if a >= 100.0 || n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = render(
            &[("rank", Align::Right), ("key", Align::Left)],
            &[
                vec!["1".into(), "a".into()],
                vec!["10".into(), "bbb".into()],
            ],
        );
        assert_eq!(t, "rank  key\n   1  a\n  10  bbb\n");
        assert_eq!(bar(0.5, 4), "██··");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(7.0), "7");
        assert_eq!(human(2.5), "2.5");
    }
}
