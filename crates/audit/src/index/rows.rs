//! Records as the index takes them, and their inserts through sqlx (PostgreSQL); the embedded
//! node's SQLite file takes the same rows in place (`in_place`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::AnyPool;

use super::statements::placeholders;

/// The columns of `events`, in the order `insert` binds them.
pub(super) const EVENT_COLUMNS: usize = 23;

pub(super) const INSERT_EVENTS: &str = "INSERT INTO events (node, sequence, event_time, event_source, event_name, user_type, user_name, principal_id, \
     user_arn, source_ip, user_agent, error_code, error_message, read_only, management_event, event_type, request_id, event_id, \
     correlation_id, session_id, request_parameters, response_elements, record)";
pub(super) const INSERT_RESOURCES: &str = "INSERT INTO event_resources (node, sequence, arn, type)";

/// A record as the index takes it: the fields it has columns for, the session it names and its
/// exact line, most of them borrowed from the line (serde copies a string with an escape in it,
/// and any optional one); the request's and response's JSON are the line's own text.
pub(super) struct Row<'a> {
    pub sequence: i64,
    pub fields: Fields<'a>,
    pub session_id: Option<Cow<'a, str>>,
    pub text: Cow<'a, str>,
}

/// The fields of a record (see `crate::record::Record`) that the index has columns for.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Fields<'a> {
    #[serde(borrow)]
    pub event_time: Cow<'a, str>,
    #[serde(borrow)]
    pub event_source: Cow<'a, str>,
    #[serde(borrow)]
    pub event_name: Cow<'a, str>,
    #[serde(borrow)]
    pub user_identity: Identity<'a>,
    #[serde(rename = "sourceIPAddress", borrow)]
    pub source_ip_address: Cow<'a, str>,
    #[serde(borrow)]
    pub user_agent: Cow<'a, str>,
    #[serde(default, borrow)]
    pub error_code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub error_message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub request_parameters: &'a RawValue,
    #[serde(borrow)]
    pub response_elements: &'a RawValue,
    #[serde(rename = "requestID", borrow)]
    pub request_id: Cow<'a, str>,
    #[serde(rename = "eventID", borrow)]
    pub event_id: Cow<'a, str>,
    pub read_only: bool,
    #[serde(borrow)]
    pub resources: Vec<Resource<'a>>,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    pub management_event: bool,
    #[serde(default, borrow)]
    pub correlation_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Identity<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub principal_id: Cow<'a, str>,
    #[serde(borrow)]
    pub arn: Cow<'a, str>,
    #[serde(default, borrow)]
    pub user_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Resource<'a> {
    #[serde(rename = "ARN", borrow)]
    pub arn: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
}

/// The members of a request or response that name a streaming session: each present or not,
/// whatever its value (a `null` one is present, as `Value::get` finds it).
#[derive(Deserialize, Default)]
struct SessionNames<'a> {
    #[serde(rename = "SessionId", borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(rename = "SessionID", borrow, default, deserialize_with = "present")]
    id_upper: Option<&'a RawValue>,
}

/// A member's value, `null` included (serde reads a `null` into an `Option` as `None`).
fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(deserializer).map(Some)
}

impl<'a> Row<'a> {
    /// The row of a record's line, if the line is a record.
    pub(super) fn of(sequence: i64, line: &'a [u8]) -> Option<Row<'a>> {
        let mut fields: Fields<'a> = serde_json::from_slice(line).ok()?;
        let mut session_id = session_named(&fields);
        fields.as_columns();
        session_id.iter_mut().for_each(as_column_in_place);
        Some(Row { sequence, fields, session_id, text: String::from_utf8_lossy(line) })
    }
}

impl Fields<'_> {
    /// Every column's text as a column holds it (see `as_column`).
    fn as_columns(&mut self) {
        let Fields { event_time, event_source, event_name, user_identity, source_ip_address, user_agent, .. } = self;
        let Identity { kind, principal_id, arn, user_name } = user_identity;
        let plain = [event_time, event_source, event_name, kind, principal_id, arn, source_ip_address, user_agent];
        let optional = [user_name, &mut self.error_code, &mut self.error_message, &mut self.correlation_id];
        plain
            .into_iter()
            .chain(optional.into_iter().flatten())
            .chain([&mut self.request_id, &mut self.event_id, &mut self.event_type])
            .for_each(as_column_in_place);
        for resource in &mut self.resources {
            as_column_in_place(&mut resource.arn);
            as_column_in_place(&mut resource.kind);
        }
    }
}

/// `text` made what a column holds (see `as_column`), copied only if that differs.
fn as_column_in_place(text: &mut Cow<'_, str>) {
    if let Cow::Owned(column) = as_column(text) {
        *text = Cow::Owned(column);
    }
}

/// The longest text a column holds, before the note of what was cut. PostgreSQL's B-tree
/// entries hold at most 2,704 bytes, and a record's strings may have 2,048 and the note of
/// their own cut (three times that once their NULs are replaced): one longer row failed its
/// whole batch, at every retry. A string without a NUL is never cut here.
const MAX_COLUMN_BYTES: usize = 2400;

/// `text` as a column holds it, and as a lookup's value is matched: each NUL character replaced
/// by U+FFFD, then cut to [`MAX_COLUMN_BYTES`] (only a string with NULs grows past it).
/// PostgreSQL's text cannot hold a NUL, and a caller's input can come back in a record's strings
/// (a refusal's message, a resource's ARN, a session id): one such row failed its whole batch,
/// at every retry, and the index took nothing after it. The record's line (a JSON text, NUL
/// escaped) is stored whole, so LookupEvents answers with the exact record. SQLite's rows are
/// the same, so that both backends find the same records.
pub(super) fn as_column(text: &str) -> Cow<'_, str> {
    if !text.contains('\0') {
        return crate::bound::cut(text, MAX_COLUMN_BYTES);
    }
    Cow::Owned(crate::bound::cut(&text.replace('\0', "\u{fffd}"), MAX_COLUMN_BYTES).into_owned())
}

/// The streaming session a record names: `SessionId`, then `SessionID`, in its request, then
/// its response; a string, or none.
fn session_named<'a>(fields: &Fields<'a>) -> Option<Cow<'a, str>> {
    // Only an object's members (serde would read an array's items as the struct's fields).
    let names = |raw: &'a RawValue| {
        let text = raw.get();
        if text.starts_with('{') { serde_json::from_str::<SessionNames<'a>>(text).unwrap_or_default() } else { SessionNames::default() }
    };
    let (request, response) = (names(fields.request_parameters), names(fields.response_elements));
    let named = request.id.or(response.id).or(request.id_upper).or(response.id_upper)?.get();
    match serde_json::from_str::<&'a str>(named) {
        Ok(plain) => Some(Cow::Borrowed(plain)),
        Err(_) => serde_json::from_str::<String>(named).ok().map(Cow::Owned),
    }
}

/// The rows of `lines` the index does not hold yet (past `already`; a line that is not a
/// record is left out, with a warning), and the newest sequence number among all of `lines`.
pub(super) fn rows_of<'a>(lines: impl ExactSizeIterator<Item = (u64, &'a [u8])>, already: u64) -> (Vec<Row<'a>>, u64) {
    let mut rows = Vec::with_capacity(lines.len());
    let mut newest = 0;
    for (sequence, line) in lines {
        newest = newest.max(sequence);
        if sequence <= already {
            continue;
        }
        match Row::of(sequence as i64, line) {
            Some(row) => rows.push(row),
            None => tracing::warn!(sequence, "an audit record does not parse; it is left out of the index"),
        }
    }
    (rows, newest)
}

/// Inserts `rows` of `node`'s chain through sqlx, many rows per statement (PostgreSQL).
pub(super) async fn through_pool(writer: &AnyPool, node: &str, rows: &[Row<'_>], sqlite: bool) -> Result<(), sqlx::Error> {
    let mut tx = writer.begin().await?;
    // Many rows per statement: one round trip per chunk, not per row. The placeholders are
    // written out (`$n` for PostgreSQL, `?` for SQLite): sqlx's builder writes `?` for `Any`.
    for chunk in rows.chunks(40) {
        let statement = format!(
            "{INSERT_EVENTS} VALUES {} ON CONFLICT (node, sequence) DO NOTHING RETURNING sequence",
            placeholders(chunk.len(), EVENT_COLUMNS, sqlite)
        );
        let mut insert = sqlx::query_scalar::<_, i64>(&statement);
        for row in chunk {
            let (record, identity) = (&row.fields, &row.fields.user_identity);
            let owned = |text: &Option<Cow<'_, str>>| text.as_deref().map(str::to_owned);
            insert = insert
                .bind(node.to_owned())
                .bind(row.sequence)
                .bind(record.event_time.to_string())
                .bind(record.event_source.to_string())
                .bind(record.event_name.to_string())
                .bind(identity.kind.to_string())
                .bind(owned(&identity.user_name))
                .bind(identity.principal_id.to_string())
                .bind(identity.arn.to_string())
                .bind(record.source_ip_address.to_string())
                .bind(record.user_agent.to_string())
                .bind(owned(&record.error_code))
                .bind(owned(&record.error_message))
                .bind(i64::from(record.read_only))
                .bind(i64::from(record.management_event))
                .bind(record.event_type.to_string())
                .bind(record.request_id.to_string())
                .bind(record.event_id.to_string())
                .bind(owned(&record.correlation_id))
                .bind(owned(&row.session_id))
                .bind(record.request_parameters.get().to_owned())
                .bind(record.response_elements.get().to_owned())
                .bind(row.text.to_string());
        }
        // A record already indexed (by another handle on this node's records: a reindex beside
        // the server) has its resources.
        let added = insert.fetch_all(&mut *tx).await?;
        let resources: Vec<(i64, &Resource<'_>)> = chunk
            .iter()
            .filter(|row| added.contains(&row.sequence))
            .flat_map(|row| row.fields.resources.iter().map(move |r| (row.sequence, r)))
            .collect();
        for resources in resources.chunks(300) {
            let statement = format!("{INSERT_RESOURCES} VALUES {}", placeholders(resources.len(), 4, sqlite));
            let mut insert = sqlx::query(&statement);
            for (sequence, resource) in resources {
                insert = insert.bind(node.to_owned()).bind(*sequence).bind(resource.arn.to_string()).bind(resource.kind.to_string());
            }
            insert.execute(&mut *tx).await?;
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::record;
    use serde_json::json;

    /// A row read from a line holds what the whole record parsed from it holds, escapes and
    /// all; the request's and response's text is the JSON the record's values print.
    #[test]
    fn a_rows_fields_are_its_records() {
        let mut escaped = record("a", 1);
        escaped.user_identity.user_name = Some("ana \"the\" analyst\n\u{e9}".into());
        escaped.error_code = Some("AccessDenied".into());
        escaped.error_message = Some("no \\ way".into());
        escaped.correlation_id = Some("c-1".into());
        escaped.user_agent = "agent \u{1}".into();
        escaped.read_only = true;
        escaped.event_type = "AwsApiCall".into();
        escaped.request_parameters = json!({
            "Key": "a\tb \u{2028} \u{1F600}", "Nested": { "SessionId": "not this one" },
            "N": 1.5, "Big": u64::MAX, "Negative": i64::MIN, "Tiny": 1e-300, "Third": 1.0 / 3.0,
        });
        escaped.response_elements = serde_json::Value::Null;
        let mut management = record("a", 2);
        management.management_event = true;
        for original in [record("a", 0), escaped, management] {
            let line = serde_json::to_vec(&original).expect("serializes");
            let row = Row::of(7, &line).expect("a record's line is a row");
            let (fields, identity) = (&row.fields, &row.fields.user_identity);
            assert_eq!(row.sequence, 7);
            assert_eq!(row.text, String::from_utf8_lossy(&line));
            assert_eq!(fields.event_time, original.event_time);
            assert_eq!(
                (fields.event_source.as_ref(), fields.event_name.as_ref()),
                (original.event_source.as_str(), original.event_name.as_str())
            );
            assert_eq!(identity.kind, original.user_identity.kind);
            assert_eq!(identity.user_name.as_deref(), original.user_identity.user_name.as_deref());
            assert_eq!(
                (identity.principal_id.as_ref(), identity.arn.as_ref()),
                (original.user_identity.principal_id.as_str(), original.user_identity.arn.as_str())
            );
            assert_eq!(
                (fields.source_ip_address.as_ref(), fields.user_agent.as_ref()),
                (original.source_ip_address.as_str(), original.user_agent.as_str())
            );
            assert_eq!((fields.read_only, fields.management_event), (original.read_only, original.management_event));
            assert_eq!(fields.event_type, original.event_type);
            assert_eq!(fields.error_code.as_deref(), original.error_code.as_deref());
            assert_eq!(fields.error_message.as_deref(), original.error_message.as_deref());
            assert_eq!(fields.request_parameters.get(), original.request_parameters.to_string());
            assert_eq!(fields.response_elements.get(), original.response_elements.to_string());
            assert_eq!((fields.request_id.as_ref(), fields.event_id.as_ref()), (original.request_id.as_str(), original.event_id.as_str()));
            assert_eq!(fields.correlation_id.as_deref(), original.correlation_id.as_deref());
            let resources: Vec<(&str, &str)> = fields.resources.iter().map(|r| (r.arn.as_ref(), r.kind.as_ref())).collect();
            let expected: Vec<(&str, &str)> = original.resources.iter().map(|r| (r.arn.as_str(), r.kind.as_str())).collect();
            assert_eq!(resources, expected);
            assert_eq!(row.session_id, None, "only a top-level member names a session");
        }
        assert!(Row::of(1, b"{\"not\":\"a record\"}").is_none());
    }

    /// No column holds a NUL (PostgreSQL's text cannot), whichever field a caller's input
    /// reached; the line keeps it, escaped.
    #[test]
    fn no_column_holds_a_nul() {
        let mut named = record("a\0", 1);
        named.event_name = "Get\0Thing".into();
        named.user_identity.user_name = Some("ana\0".into());
        named.user_identity.arn = "arn:user/ana\0".into();
        named.error_code = Some("Code\0".into());
        named.error_message = Some("key `k\0` denied".into());
        named.correlation_id = Some("c\0".into());
        named.user_agent = "agent\0".into();
        named.resources = vec![crate::record::RecordResource { arn: "arn:key/k\0".into(), account_id: "0".into(), kind: "Key\0".into() }];
        named.request_parameters = json!({ "SessionId": "s\0" });
        let line = serde_json::to_vec(&named).expect("serializes");
        let row = Row::of(1, &line).expect("a row");
        let (fields, identity) = (&row.fields, &row.fields.user_identity);
        let mut columns = vec![&fields.event_time, &fields.event_source, &fields.event_name, &identity.kind, &identity.principal_id];
        columns.extend([
            &identity.arn,
            &fields.source_ip_address,
            &fields.user_agent,
            &fields.request_id,
            &fields.event_id,
            &fields.event_type,
        ]);
        columns.extend(
            [&identity.user_name, &fields.error_code, &fields.error_message, &fields.correlation_id, &row.session_id].into_iter().flatten(),
        );
        columns.extend(fields.resources.iter().flat_map(|r| [&r.arn, &r.kind]));
        assert_eq!(columns.len(), 18);
        for column in columns {
            assert!(!column.contains('\0'), "{column:?}");
        }
        assert_eq!(fields.error_message.as_deref(), Some("key `k\u{fffd}` denied"));
        assert_eq!(row.session_id.as_deref(), Some("s\u{fffd}"));
        assert_eq!(row.text, String::from_utf8_lossy(&line), "the line is kept as it is");
        assert!(row.text.contains(r"k\u0000"), "{}", row.text);
        // A string as long as a record keeps, all NULs, fits a B-tree entry once replaced.
        let mut long = record("a", 2);
        long.resources[0].arn = "\0".repeat(crate::bound::MAX_STRING_BYTES);
        long.request_parameters = json!({ "SessionId": "\0".repeat(crate::bound::MAX_STRING_BYTES) });
        let line = serde_json::to_vec(&long).expect("serializes");
        let row = Row::of(2, &line).expect("a row");
        for column in [&row.fields.resources[0].arn, row.session_id.as_ref().expect("a session")] {
            assert!(column.len() <= MAX_COLUMN_BYTES + 64 && column.starts_with('\u{fffd}'), "{} bytes", column.len());
            assert_eq!(as_column(&"\0".repeat(crate::bound::MAX_STRING_BYTES)), *column, "a lookup's value is matched as stored");
        }
    }

    /// `SessionId`, then `SessionID`; the request's before the response's; only a string.
    #[test]
    fn the_session_a_record_names() {
        let named = |request: serde_json::Value, response: serde_json::Value| {
            let mut named = record("a", 0);
            (named.request_parameters, named.response_elements) = (request, response);
            let line = serde_json::to_vec(&named).expect("serializes");
            Row::of(1, &line).expect("a row").session_id.map(Cow::into_owned)
        };
        assert_eq!(named(json!({ "SessionId": "s-1" }), json!({ "SessionId": "s-2" })).as_deref(), Some("s-1"));
        assert_eq!(named(json!({ "Bucket": "b" }), json!({ "SessionId": "s-2" })).as_deref(), Some("s-2"));
        assert_eq!(named(json!({ "SessionID": "s-3" }), json!({})).as_deref(), Some("s-3"));
        assert_eq!(named(json!({ "SessionId": "s-\"4\"" }), json!(null)).as_deref(), Some("s-\"4\""));
        assert_eq!(named(json!({ "SessionId": 5 }), json!({ "SessionId": "s-6" })), None);
        assert_eq!(named(json!({ "SessionID": "s-7" }), json!({ "SessionId": "s-8" })).as_deref(), Some("s-8"), "SessionId first");
        assert_eq!(named(json!({ "SessionId": null, "SessionID": "s-9" }), json!({})), None, "a null SessionId is present");
        assert_eq!(named(json!(null), json!({ "SessionId": null, "SessionID": "s-10" })), None);
        assert_eq!(named(json!("SessionId"), json!(["SessionId"])), None);
    }
}
