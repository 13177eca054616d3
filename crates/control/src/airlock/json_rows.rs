//! JSON that is a table: a top-level array of records (objects, or arrays), as pandas'
//! `to_json(orient="records")` and most tools write rows. It is rewritten, one record at a
//! time, as a CSV in an unnamed temporary file, which the table checks and the lineage check
//! then read like any table: exporting rows as JSON instead of CSV changes nothing.

use std::fmt;
use std::io::{self, BufWriter, Read, Seek, Write};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The rows of `source` (JSON) as a CSV file, rewound, if it is an array of records.
pub(super) fn as_csv(source: &mut dyn Read) -> io::Result<Option<std::fs::File>> {
    let mut out = BufWriter::new(tempfile::tempfile()?);
    let mut reader = serde_json::Deserializer::from_reader(io::BufReader::with_capacity(1 << 16, source));
    let table = match (Rows { out: &mut out, header: None, written: Ok(()) }).deserialize(&mut reader) {
        Ok(table) => table,
        // Not the shape of a table (its validity was judged before).
        Err(_) => return Ok(None),
    };
    if !table {
        return Ok(None);
    }
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.rewind()?;
    Ok(Some(file))
}

struct Rows<'a, W: Write> {
    out: &'a mut W,
    /// An object record's keys, from the first one: every row's cells in this order.
    header: Option<Vec<String>>,
    written: io::Result<()>,
}

impl<W: Write> Rows<'_, W> {
    fn write(&mut self, cells: impl Iterator<Item = String>) -> io::Result<()> {
        let line: Vec<String> = cells.map(|cell| format!("\"{}\"", cell.replace('"', "\"\""))).collect();
        writeln!(self.out, "{}", line.join(","))
    }

    fn record(&mut self, value: Value) -> Result<bool, io::Error> {
        match value {
            Value::Object(map) => {
                if self.header.is_none() {
                    let keys: Vec<String> = map.keys().cloned().collect();
                    self.write(keys.iter().cloned())?;
                    self.header = Some(keys);
                }
                let header = self.header.clone().unwrap_or_default();
                self.write(header.iter().map(|key| map.get(key).map(cell).unwrap_or_default()))?;
                Ok(true)
            }
            Value::Array(items) => {
                if self.header.is_none() {
                    // Arrays of arrays: the first is the header, as in a CSV.
                    self.header = Some(Vec::new());
                }
                self.write(items.iter().map(cell))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// A cell as text: a string as it is, anything else as its JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl<'de, W: Write> DeserializeSeed<'de> for Rows<'_, W> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, W: Write> Visitor<'de> for Rows<'_, W> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<bool, A::Error> {
        let mut table = true;
        // One record at a time; a document that is not all records is not a table, but is read
        // to its end all the same.
        while let Some(value) = seq.next_element::<Value>()? {
            if table && self.written.is_ok() {
                match self.record(value) {
                    Ok(true) => {}
                    Ok(false) => table = false,
                    Err(err) => self.written = Err(err),
                }
            }
        }
        self.written.map_err(serde::de::Error::custom)?;
        Ok(table && self.header.is_some())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(json: &str) -> Option<String> {
        let mut file = as_csv(&mut json.as_bytes()).expect("read")?;
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read back");
        Some(text)
    }

    #[test]
    fn records_become_rows_and_other_json_is_not_a_table() {
        assert_eq!(
            csv(r#"[{"region": "north", "n": 120}, {"n": 3, "region": "so\"uth"}]"#).as_deref(),
            Some("\"region\",\"n\"\n\"north\",\"120\"\n\"so\"\"uth\",\"3\"\n")
        );
        assert_eq!(csv(r#"[["region", "n"], ["north", 3]]"#).as_deref(), Some("\"region\",\"n\"\n\"north\",\"3\"\n"));
        assert_eq!(csv(r#"{"region": "north"}"#), None);
        assert_eq!(csv(r#"[1, 2, 3]"#), None);
        assert_eq!(csv("[]"), None);
    }
}
