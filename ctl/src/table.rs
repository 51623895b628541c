//! Plain-text tables and bars for the terminal.

/// A left- or right-aligned column.
#[derive(Clone, Copy)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// `s` with its control characters written as escapes (`\n`, `\t`, `\x1b`...), as redis-cli
/// quotes key names: a key name is the client's data, and printed raw a newline would break a
/// table row and an escape sequence would reach the operator's terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Renders rows under a header, each column as wide as its widest cell; control characters
/// in cells are escaped ([`printable`]).
pub fn render(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let escaped: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = &escaped;
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

/// Seconds since the Unix epoch on this machine's clock (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A Unix time as `2026-11-28 10:11:43 UTC` (the same text the module's advice uses).
pub use opt_core::report::utc;

/// A span of seconds in its two largest units: `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m {}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("user:1"), "user:1");
        assert_eq!(printable("a\nb\tc\u{1b}[2J\0"), "a\\nb\\tc\\x1b[2J\\x00");
        let t = render(&[("key", Align::Left)], &[vec!["line\nbreak".into()]]);
        assert_eq!(t, "key\nline\\nbreak\n");
    }

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

    #[test]
    fn spans() {
        assert_eq!(span(45), "45s");
        assert_eq!(span(725), "12m 5s");
        assert_eq!(span(12_000), "3h 20m");
        assert_eq!(span(187_200), "2d 4h");
        assert_eq!(span(-3), "0s");
    }
}
