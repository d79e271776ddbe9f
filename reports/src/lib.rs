//! Formats run results: Markdown/CSV tables, paper-style charts and a self-contained HTML
//! report. Knows only the result types of `sim-core`; computes nothing about the model.
