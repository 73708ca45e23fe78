//! Output: `-o json` prints the API's JSON; `-o table` prints chosen columns as a table.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// A column: header and JSON pointer into each row.
pub type Column<'a> = (&'a str, &'a str);

fn cell(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Prints `value` (an object, or `{"value":[…]}` / an array for lists).
pub fn print(format: Format, value: &Value, columns: &[Column<'_>]) {
    if format == Format::Json || columns.is_empty() {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    let rows: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.get("value").is_some_and(Value::is_array) => o
            .get("value")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, p)| cell(r, p)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
                .min(80)
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| {
                let v: String = v.chars().take(*w).collect();
                format!("{v:<w$}", w = *w)
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!(
        "{}",
        line(columns.iter().map(|(h, _)| h.to_string()).collect())
    );
    println!("{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in cells {
        println!("{}", line(r));
    }
}
