//! Plain-text tables for the operator CLI (no colours, fits a terminal, pipes well).

/// Renders rows under a header with columns padded to the widest cell and separated by two
/// spaces. Cells are single-line: newlines are shown as `\n`.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| s.replace('\n', "\\n");
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(clean(cell).chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.iter().map(|c| clean(c)).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns() {
        let t = render(
            &["uuid", "name"],
            &[
                vec!["a".into(), "node-1".into()],
                vec!["bbbb".into(), "x\ny".into()],
            ],
        );
        assert_eq!(t, "UUID  NAME\na     node-1\nbbbb  x\\ny\n");
    }

    #[test]
    fn empty_table_has_header() {
        assert_eq!(render(&["a"], &[]), "A\n");
    }
}
