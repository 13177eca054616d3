//! `datasandbox diff / deploy / destroy`: the spec against the running environment, through
//! the control socket, with the deployment's stack events printed as they happen.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::cli::{EndpointArgs, SpecArgs};
use crate::client::{self, CallError, for_terminal};

const LOCAL: EndpointArgs = EndpointArgs::LOCAL;

fn spec_input(data_dir: &Path, args: &SpecArgs) -> Result<Value, CallError> {
    let path = args.spec.clone().unwrap_or_else(|| data_dir.join("datasandbox.toml"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CallError::local(
            "ValidationException",
            format!("cannot read the spec `{}`: {e}; pass --spec or run `datasandbox up` once", path.display()),
        )
    })?;
    Ok(json!({ "Spec": text, "Overrides": args.overrides }))
}

async fn call(data_dir: &Path, action: &str, input: &Value) -> Result<Value, CallError> {
    client::call(data_dir, &LOCAL, action, Bytes::from(input.to_string())).await
}

pub async fn diff(data_dir: &Path, args: &SpecArgs) -> ExitCode {
    let result = match spec_input(data_dir, args) {
        Ok(input) => call(data_dir, "deploy:Diff", &input).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(answer) => {
            print_changes(&answer["Changes"]);
            print_restart(&answer["RestartRequired"]);
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

pub async fn deploy(data_dir: &Path, args: &SpecArgs) -> ExitCode {
    let mut input = match spec_input(data_dir, args) {
        Ok(input) => input,
        Err(err) => return fail(err),
    };
    let token = uuid::Uuid::new_v4().to_string();
    input["ClientRequestToken"] = json!(token);
    let answer = follow(data_dir, "deploy:Deploy", &input, &token).await;
    match answer {
        Ok(answer) => {
            if answer["Changes"].as_array().is_none_or(Vec::is_empty) {
                println!("no changes: the environment already matches the spec");
            } else {
                print_changes(&answer["Changes"]);
            }
            print_retained(&answer["Retained"]);
            print_restart(&answer["RestartRequired"]);
            println!("deployed ({})", answer["DeploymentId"].as_str().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

pub async fn destroy(data_dir: &Path, confirmed: bool) -> ExitCode {
    if !confirmed {
        eprintln!(
            "error: destroy deletes the environment's fleets (ending their sessions), stacks, notebooks and empty buckets; run again with --yes to proceed"
        );
        return ExitCode::from(1);
    }
    let token = uuid::Uuid::new_v4().to_string();
    match follow(data_dir, "deploy:Destroy", &json!({ "ClientRequestToken": token }), &token).await {
        Ok(answer) => {
            println!("deleted {} resource(s)", answer["Deleted"].as_array().map_or(0, Vec::len));
            print_retained(&answer["Retained"]);
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

/// Runs `action` while printing its stack events as they are written.
async fn follow(data_dir: &Path, action: &str, input: &Value, token: &str) -> Result<Value, CallError> {
    let running = call(data_dir, action, input);
    tokio::pin!(running);
    let mut after = 0;
    loop {
        tokio::select! {
            answer = &mut running => {
                print_events(data_dir, token, &mut after).await;
                return answer;
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => print_events(data_dir, token, &mut after).await,
        }
    }
}

async fn print_events(data_dir: &Path, token: &str, after: &mut i64) {
    let Ok(page) = call(data_dir, "deploy:DescribeStackEvents", &json!({ "ClientRequestToken": token, "After": *after })).await else {
        return;
    };
    for event in page["StackEvents"].as_array().into_iter().flatten() {
        let reason = event["ResourceStatusReason"].as_str().map(|r| format!("  {r}")).unwrap_or_default();
        eprintln!(
            "{}  {:<14} {:<44} {}{reason}",
            event["Timestamp"].as_str().unwrap_or_default(),
            event["StackName"].as_str().unwrap_or_default(),
            event["LogicalResourceId"].as_str().unwrap_or_default(),
            event["ResourceStatus"].as_str().unwrap_or_default(),
        );
    }
    *after = page["Next"].as_i64().unwrap_or(*after);
}

fn print_changes(changes: &Value) {
    let changes = changes.as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("no changes");
        return;
    }
    let mut stack = "";
    for change in &changes {
        let this = change["Stack"].as_str().unwrap_or_default();
        if this != stack {
            println!("Stack {this}");
            stack = this;
        }
        let (mark, word) = match change["Action"].as_str().unwrap_or_default() {
            "Create" => ("[+]", "create"),
            "Update" => ("[~]", "update"),
            "Replace" => ("[-/+]", "replace"),
            _ => ("[-]", "delete"),
        };
        println!("  {mark} {} {word}", for_terminal(change["LogicalResourceId"].as_str().unwrap_or_default()));
        for detail in change["Details"].as_array().into_iter().flatten() {
            let replaces = if detail["RequiresReplacement"].as_bool().unwrap_or(false) { "  (requires replacement)" } else { "" };
            let (name, before, after) =
                (detail["Name"].as_str().unwrap_or_default(), detail["Before"].to_string(), detail["After"].to_string());
            println!("      {} → {}{replaces}", for_terminal(&format!("{name}: {before}")), for_terminal(&after));
        }
    }
}

/// One line per reason: "retained Policy:a, Policy:b: policies stay in force …".
fn print_retained(retained: &Value) {
    let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
    for kept in retained.as_array().into_iter().flatten() {
        let (id, reason) = (kept["LogicalResourceId"].as_str().unwrap_or_default(), kept["Reason"].as_str().unwrap_or_default());
        match by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, ids)) => ids.push(id),
            None => by_reason.push((reason, vec![id])),
        }
    }
    for (reason, ids) in by_reason {
        println!("retained {}: {reason}", ids.join(", "));
    }
}

fn print_restart(fields: &Value) {
    let fields: Vec<&str> = fields.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !fields.is_empty() {
        println!("note: platform settings ({}) differ from the running server's; they take effect when it restarts", fields.join(", "));
    }
}

fn fail(err: CallError) -> ExitCode {
    // The deploy's message says what failed and what was rolled back; print it readably.
    match err.document["Message"].as_str() {
        Some(message) => eprintln!("error: {}: {}", for_terminal(err.document["Code"].as_str().unwrap_or("Error")), for_terminal(message)),
        None => eprintln!("{}", for_terminal(&err.document.to_string())),
    }
    ExitCode::from(err.exit)
}
