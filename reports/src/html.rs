//! `report.html`: the content of `report.md` as one self-contained page. The tables are
//! HTML tables and the SVG charts are inlined as markup, so the file opens offline with
//! nothing beside it: no scripts, no external style sheets, fonts or images. Like the
//! other outputs it holds no timestamps or host details.

use crate::charts::Chart;
use crate::tables::{exits_table, run_table, summary};
use crate::Report;
use std::fmt::Write as _;

/// `s` with `&`, `<`, `>` and `"` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

/// Escaped text with `code` spans (between backticks) as `<code>` elements.
fn inline(s: &str) -> String {
    s.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", escape(part))
            } else {
                escape(part)
            }
        })
        .collect()
}

/// An SVG document as markup to place inside HTML: any XML declaration or doctype before
/// the `<svg` element is dropped.
fn svg_markup(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..]).trim_end()
}

const STYLE: &str = "body{font-family:sans-serif;color:#222;margin:2em auto;max-width:1400px;padding:0 1em;line-height:1.4}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:.85em;display:block;overflow-x:auto}\
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}\
th{background:#f2f2f2}td.t{text-align:left}tr.failed td{background:#fbe3e3}\
code{background:#f4f4f4;padding:0 .2em}figure{margin:1.5em 0}\
figcaption{font-size:.9em;color:#555;margin-bottom:.3em}\
figure svg{max-width:100%;height:auto;border:1px solid #eee}";

/// `report.html`: title, description, summary, the table of every run, the failures, and
/// every chart inlined (in the order given, captioned with its file name).
pub fn html(report: &Report, charts: &[Chart]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "<!DOCTYPE html>");
    let _ = writeln!(o, "<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">");
    let _ = writeln!(
        o,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    );
    let _ = writeln!(o, "<title>{}</title>", escape(&report.name));
    let _ = writeln!(o, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(o, "<h1>{}</h1>", escape(&report.name));
    if !report.description.trim().is_empty() {
        let _ = writeln!(o, "<p>{}</p>", inline(report.description.trim()));
    }
    let _ = writeln!(o, "<p>{}</p>", inline(&summary(report)));
    let _ = writeln!(o, "<h2>Runs</h2>\n<table>\n<thead>\n<tr>");
    let (head, rows) = run_table(report);
    for h in &head {
        let _ = writeln!(o, "<th>{}</th>", escape(h));
    }
    let _ = writeln!(o, "</tr>\n</thead>\n<tbody>");
    // Text columns (guest, mode, swept values) align left; numbers right.
    let text_cols = 3 + report.params.len() + 1;
    for (row, r) in rows.iter().zip(&report.rows) {
        let _ = write!(o, "<tr{}>", if r.ok { "" } else { " class=\"failed\"" });
        for (i, c) in row.iter().enumerate() {
            let class = if (1..text_cols).contains(&i) {
                " class=\"t\""
            } else {
                ""
            };
            let _ = write!(o, "<td{class}>{}</td>", escape(c));
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</tbody>\n</table>");
    if let Some((head, rows)) = exits_table(report) {
        let _ = writeln!(o, "<h2>VM exits by reason</h2>\n<table>\n<thead>\n<tr>");
        for h in &head {
            let _ = writeln!(o, "<th>{}</th>", escape(h));
        }
        let _ = writeln!(o, "</tr>\n</thead>\n<tbody>");
        for row in &rows {
            let _ = write!(o, "<tr>");
            for (i, c) in row.iter().enumerate() {
                let class = if (1..3).contains(&i) {
                    " class=\"t\""
                } else {
                    ""
                };
                let _ = write!(o, "<td{class}>{}</td>", escape(c));
            }
            let _ = writeln!(o, "</tr>");
        }
        let _ = writeln!(o, "</tbody>\n</table>");
    }
    if report.rows.iter().any(|r| !r.ok) {
        let _ = writeln!(o, "<h2>Failed runs</h2>\n<ul>");
        for r in report.rows.iter().filter(|r| !r.ok) {
            let point = if r.params.is_empty() {
                String::new()
            } else {
                format!(" / {}", r.point())
            };
            let _ = writeln!(
                o,
                "<li>run {} ({} / {}{}): {}</li>",
                r.index,
                escape(&r.guest),
                escape(&r.mode),
                escape(&point),
                escape(&r.reason)
            );
        }
        let _ = writeln!(o, "</ul>");
    }
    if !charts.is_empty() {
        let _ = writeln!(o, "<h2>Charts</h2>");
        for (name, svg) in charts {
            let _ = writeln!(
                o,
                "<figure id=\"{}\">\n<figcaption>{}</figcaption>\n{}\n</figure>",
                escape(name),
                escape(name),
                svg_markup(svg)
            );
        }
    }
    let _ = writeln!(o, "</body>\n</html>");
    o
}
