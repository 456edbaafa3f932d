//! RFC 4180 CSV for the tables Custos prints or serves (reports in the CLI
//! and in the approval app's downloads): one writer, so a cell with a comma,
//! quote or line break is quoted the same way everywhere.

/// `columns` and `rows` as CSV, lines ended by CRLF; a cell holding `,`,
/// `"`, CR or LF is quoted, with its quotes doubled.
pub fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let esc = |c: &String| {
        if c.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.clone()
        }
    };
    let mut out = String::new();
    for r in std::iter::once(columns).chain(rows.iter().map(Vec::as_slice)) {
        out.push_str(&r.iter().map(esc).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}
