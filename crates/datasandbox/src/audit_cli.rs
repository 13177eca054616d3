//! `datasandbox audit …`: lookup, query, trace and reindex go through the server (so they are
//! authorized and audited); validate works offline on any copy of the trail.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::cli::AuditCommand;
use crate::cli::{EndpointArgs, SpecArgs};
use crate::client::{CallError, call, fail, for_terminal};

pub async fn run(data_dir: &Path, command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Lookup { event_name, event_source, user, request_id, correlation_id, resource, start, end, max, next_token } => {
            let attributes: Vec<Value> = [
                ("EventName", event_name),
                ("EventSource", event_source),
                ("Username", user),
                ("RequestId", request_id),
                ("CorrelationId", correlation_id),
                ("ResourceName", resource),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| json!({ "AttributeKey": key, "AttributeValue": v })))
            .collect();
            let input = with_members(
                json!({ "LookupAttributes": attributes, "MaxResults": max }),
                [("StartTime", start), ("EndTime", end), ("NextToken", next_token)],
            );
            call_and_print(data_dir, "audit:LookupEvents", input, print_events_page).await
        }
        AuditCommand::Query { sql, json: as_json } => {
            call_and_print(data_dir, "audit:Query", json!({ "Sql": sql }), |out| print_query_result(out, as_json)).await
        }
        AuditCommand::Trace { user, session, correlation_id, since, until, json: as_json, all } => {
            let input = with_members(
                json!({}),
                [("UserId", user), ("SessionId", session), ("CorrelationId", correlation_id), ("StartTime", since), ("EndTime", until)],
            );
            call_and_print(data_dir, "audit:Trace", input, |out| print_trace(out, as_json, all)).await
        }
        AuditCommand::Reindex => {
            call_and_print(data_dir, "audit:Reindex", json!({}), |out| println!("indexed {} records", out["RecordsIndexed"])).await
        }
        AuditCommand::Validate { start, end, verbose, trail_dir, public_key, witness, spec } => {
            let options = (|| {
                if let Some(witness) = witness.as_ref().filter(|w| !w.is_dir()) {
                    return Err(format!("the witness `{}` is not a directory", witness.display()));
                }
                Ok(audit::ValidateOptions { start: parse_time("start", start)?, end: parse_time("end", end)?, verbose, witness })
            })();
            match options {
                Ok(options) => validate(data_dir, &spec, trail_dir, public_key, options).await,
                Err(message) => validation_failure(message),
            }
        }
    }
}

/// Calls `action` on the local server and prints its answer with `print`, or the error.
async fn call_and_print(data_dir: &Path, action: &str, input: Value, print: impl FnOnce(&Value)) -> ExitCode {
    let local = EndpointArgs::LOCAL;
    match call(data_dir, &local, action, Bytes::from(input.to_string())).await {
        Ok(out) => {
            print(&out);
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

/// `input` with each member that was given; the others are left out.
fn with_members<const N: usize>(mut input: Value, members: [(&str, Option<String>); N]) -> Value {
    for (member, value) in members {
        if let Some(value) = value {
            input[member] = json!(value);
        }
    }
    input
}

/// A page of `LookupEvents`: one JSON record per line, and the token of the next page on
/// standard error.
fn print_events_page(out: &Value) {
    for event in out["Events"].as_array().into_iter().flatten() {
        println!("{}", for_terminal(&event.to_string()));
    }
    if let Some(token) = out["NextToken"].as_str() {
        eprintln!("more records: --next-token {}", for_terminal(token));
    }
}

/// A query's rows, as a table or one JSON object per row.
fn print_query_result(out: &Value, as_json: bool) {
    let columns: Vec<String> = out["Columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect();
    let rows: Vec<Vec<Value>> = out["Rows"].as_array().into_iter().flatten().filter_map(|r| r.as_array().cloned()).collect();
    if as_json {
        for row in audit::rows_as_objects(&columns, &rows) {
            println!("{}", for_terminal(&row.to_string()));
        }
    } else {
        print_table(&columns, &rows.iter().map(|r| r.iter().map(cell).collect()).collect::<Vec<_>>());
    }
}

/// A timeline, as a table (time, source, who, action, resources, outcome, detail) or one JSON
/// record per line. In the table, unless `all`, a run of identical read-only calls is one line
/// with its count and its first and last times.
fn print_trace(out: &Value, as_json: bool, all: bool) {
    let events = out["Events"].as_array().cloned().unwrap_or_default();
    if as_json {
        for event in &events {
            println!("{}", for_terminal(&event.to_string()));
        }
        return;
    }
    let rows: Vec<Vec<String>> = fold_runs(&events, all)
        .into_iter()
        .map(|(e, count, last)| {
            let who = format!("{}:{}", e["userType"].as_str().unwrap_or("-"), e["userName"].as_str().unwrap_or("-"));
            let resources: Vec<&str> = e["resources"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let time =
                if count > 1 { format!("{} … {}", cell(&e["eventTime"]), cell(&last["eventTime"])) } else { cell(&e["eventTime"]) };
            let action = if count > 1 { format!("{} ×{count}", cell(&e["action"])) } else { cell(&e["action"]) };
            vec![
                time,
                cell(&e["sourceIPAddress"]),
                who,
                action,
                if resources.is_empty() { "-".to_owned() } else { resources.iter().map(|r| resource(r)).collect::<Vec<_>>().join(" ") },
                e["errorCode"].as_str().unwrap_or("ok").to_owned(),
                e["detail"].as_str().map_or_else(|| "-".to_owned(), str::to_owned),
            ]
        })
        .collect();
    print_table(&["TIME", "SOURCE", "WHO", "ACTION", "RESOURCES", "OUTCOME", "DETAIL"].map(str::to_owned), &rows);
}

/// Each event with how many identical read-only calls follow it in a run (itself included) and
/// the run's last; every event alone when `all`.
fn fold_runs(events: &[Value], all: bool) -> Vec<(&Value, usize, &Value)> {
    let same = |a: &Value, b: &Value| {
        a["readOnly"] == true
            && ["userType", "userName", "action", "errorCode", "sourceIPAddress", "resources", "detail"].iter().all(|k| a[*k] == b[*k])
    };
    let mut runs: Vec<(&Value, usize, &Value)> = Vec::new();
    for event in events {
        match runs.last_mut() {
            Some((first, count, last)) if !all && same(first, event) => {
                *count += 1;
                *last = event;
            }
            _ => runs.push((event, 1, event)),
        }
    }
    runs
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A resource in the trace's column, where one space parts it from the next: as it is, or in
/// quotes (JSON's) if it is empty or holds a space or a quote, so that two resources never
/// read as one or one as two.
fn resource(name: &str) -> String {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '"') { Value::from(name).to_string() } else { name.to_owned() }
}

/// `text` as a terminal can show it without acting on it. A record's strings are its users'
/// (the code they ran, a file's name, a program's path): a control character or a
/// bidirectional override printed raw would let them move the cursor, erase lines or reorder
/// what the operator reads, hiding an action from the one command meant to show it. Each is
/// shown as its code point (`\u{1b}`), a line break as `⏎`.
fn shown(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("⏎ "),
            c if crate::client::acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn print_table(columns: &[String], rows: &[Vec<String>]) {
    print!("{}", table(columns, rows));
}

/// Rows under their columns, each cell shown harmlessly (`shown`) and cut at 80 characters,
/// then the count of rows.
fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let clip = |s: &str| {
        let s = shown(s);
        if s.chars().count() > 80 { format!("{}…", s.chars().take(79).collect::<String>()) } else { s }
    };
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (index, value) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(clip(value).chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    let mut out = line(columns.iter().map(|c| clip(c)).collect()) + "\n";
    for row in rows {
        out += &(line(row.iter().map(|v| clip(v)).collect()) + "\n");
    }
    out + &format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" })
}

fn parse_time(member: &str, value: Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| format!("--{member} `{v}` is not an RFC 3339 time like 2026-11-29T00:00:00Z"))
        })
        .transpose()
}

fn validation_failure(message: String) -> ExitCode {
    fail(CallError { document: json!({ "Code": "ValidationException", "Message": message, "RequestId": null }), exit: 1 })
}

/// `audit validate`: every node's chain in the trail, each checked with its own public key
/// and reported under its name, then one verdict line per node; exit 1 if any is invalid. A
/// single embedded node's trail reports as it always did, without node lines.
async fn validate(
    data_dir: &Path,
    spec: &SpecArgs,
    trail_dir: Option<PathBuf>,
    public_key: Option<PathBuf>,
    options: audit::ValidateOptions,
) -> ExitCode {
    let (root, _copy) = match trail_dir {
        Some(dir) => (dir, None),
        None => match bucket_copy(data_dir, spec).await {
            Ok(Some(copy)) => (copy.0.clone(), Some(copy)),
            Ok(None) => (data_dir.join("trail"), None),
            Err(message) => return validation_failure(message),
        },
    };
    let key = match &public_key {
        Some(path) => {
            let read = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the public key `{}`: {e}", path.display()))
                .and_then(|text| audit::parse_public_key(&text).map_err(|e| format!("`{}`: {e}", path.display())));
            match read {
                Ok(key) => Some(key),
                Err(message) => return validation_failure(message),
            }
        }
        None => None,
    };
    match audit::validate_nodes(&root, key.as_ref(), spec.node.as_deref(), &options) {
        Ok(report) => {
            for line in &report.lines {
                println!("{}", for_terminal(line));
            }
            if report.valid { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(message) => validation_failure(message),
    }
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// With S3 storage in the spec (and its overrides), a copy of the bucket's trail in a scratch
/// directory; `None` when the trail is the data directory's (or no spec is there to say).
async fn bucket_copy(data_dir: &Path, args: &SpecArgs) -> Result<Option<Scratch>, String> {
    let path = args.spec.clone().unwrap_or_else(|| data_dir.join("datasandbox.toml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) if args.spec.is_none() && args.overrides.is_empty() => return Ok(None),
        Err(e) => return Err(format!("cannot read the spec `{}` to find the trail: {e}", path.display())),
    };
    let spec = model::spec::Spec::parse(&text, &args.all_overrides()).map_err(|e| format!("in `{}`: {e}", path.display()))?;
    let model::spec::StorageBackend::S3 { endpoint, bucket, region, allow_http } = &spec.storage else { return Ok(None) };
    let trail = audit::TrailBucket::s3(endpoint, bucket, region, *allow_http)?;
    let scratch = Scratch(std::env::temp_dir().join(format!("datasandbox-trail-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())));
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().mode(0o700).create(&scratch.0).map_err(|e| format!("cannot create `{}`: {e}", scratch.0.display()))?;
    }
    let copied = trail.download(&scratch.0).await?;
    if copied == 0 {
        return Err(format!("the bucket `{bucket}` at {endpoint} holds no trail (nothing under `trail/AWSLogs/`)"));
    }
    Ok(Some(scratch))
}

#[cfg(test)]
mod tests {
    use super::table;

    /// Attack: the code a user ran (or a file's name, a program's path) carried escape
    /// sequences that, printed raw by `audit trace`, erased the lines above on the operator's
    /// terminal or reversed what followed; and two resources, one holding a space, read as
    /// three. Each such character is shown as its code point, and such a resource is quoted.
    #[test]
    fn a_trace_shows_what_a_terminal_would_act_on_as_code_points() {
        let hostile = "x = 1  # \u{1b}[1A\u{1b}[2K\r\u{9b}2J\u{202e}gnp.txt\u{7}\nprint(2)";
        let columns = ["RESOURCES", "DETAIL"].map(str::to_owned);
        let rows = vec![vec![
            [super::resource("arn:aws:s3:::bucket/my file.csv"), super::resource("arn:aws:s3:::bucket/b")].join(" "),
            hostile.to_owned(),
        ]];
        let shown = table(&columns, &rows);
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "a control character printed raw: {shown:?}");
        assert!(!shown.contains('\u{202e}'), "a bidirectional override printed raw: {shown:?}");
        assert_eq!(shown.lines().count(), 3, "the cell's line break broke the row: {shown:?}");
        assert!(shown.contains(r"# \u{1b}[1A\u{1b}[2K\u{d}\u{9b}2J\u{202e}gnp.txt\u{7}⏎ print(2)"), "{shown}");
        assert!(shown.contains(r#""arn:aws:s3:::bucket/my file.csv" arn:aws:s3:::bucket/b"#), "{shown}");
    }

    /// The same in the JSON lines (`--json`, `lookup`, every call's answer): serde leaves DEL,
    /// the C1 controls and bidirectional overrides raw. They are written as `\u` escapes, and
    /// the line still reads back as the same value.
    #[test]
    fn json_for_a_terminal_escapes_what_serde_leaves_raw_and_keeps_its_value() {
        let value = serde_json::json!({ "detail": "a\u{7f}b\u{9b}2J\u{9d}52;c;x\u{7}\u{202e}gnp\u{2066}", "n": 1 });
        let line = crate::client::for_terminal(&value.to_string());
        assert!(!line.chars().any(|c| c.is_control() || matches!(c, '\u{202e}' | '\u{2066}')), "{line:?}");
        assert!(line.contains(r"\u009b2J"), "{line}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&line).expect("still JSON"), value);
    }
}
