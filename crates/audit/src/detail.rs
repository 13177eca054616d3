//! The one-line detail `trace` shows beside an event, for the events whose parameters say
//! what a person did: the code they ran, the dataset file they opened and what they read.

use serde_json::Value;

/// What a timeline shows of a record besides its action: executed code (its first piece), the
/// result's status and count, the size of what `input()` read; a dataset file opened (by which
/// program) or refused a change, and what was read from it.
pub(crate) fn detail(record: &str) -> Option<String> {
    let record: Value = serde_json::from_str(record).ok()?;
    let asked = &record["requestParameters"];
    match record["eventName"].as_str()? {
        "ExecuteCode" => Some(format!("[{}] {}", asked["MessageId"].as_str().unwrap_or("-"), asked["Code"].as_str().unwrap_or_default())),
        "ExecuteCodeResult" => Some(format!(
            "[{}] {} #{}",
            asked["MessageId"].as_str().unwrap_or("-"),
            asked["Status"].as_str().unwrap_or("-"),
            asked["ExecutionCount"]
        )),
        "KernelInput" => Some(format!("[{}] {} bytes read by input()", asked["MessageId"].as_str().unwrap_or("-"), asked["InputBytes"])),
        "DatasetFileOpened" | "DatasetWriteRefused" => {
            let process = &asked["Process"];
            let what = asked["Operation"].as_str().map_or_else(String::new, |op| format!("{op} "));
            Some(format!(
                "{what}{} by {} (pid {})",
                asked["Key"].as_str().unwrap_or("-"),
                process["Executable"].as_str().unwrap_or("?"),
                process["Pid"].as_i64().map_or_else(|| "?".to_owned(), |p| p.to_string())
            ))
        }
        "DatasetFileClosed" => Some(match asked["BytesRead"].as_u64() {
            Some(bytes) if asked["Sparse"] == true => format!("{} read {bytes} bytes, sparse", asked["Key"].as_str().unwrap_or("-")),
            Some(bytes) => format!("{} read {bytes} bytes in {}", asked["Key"].as_str().unwrap_or("-"), asked["Ranges"]),
            None => format!("{} closed (reads not counted)", asked["Key"].as_str().unwrap_or("-")),
        }),
        _ => None,
    }
}
