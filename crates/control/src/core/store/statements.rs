//! The statements of a queued write (`Store::transact`), in one form for both stores: SQL with
//! `$n` parameters, values bound from `Arg`s, rows read by column. On PostgreSQL they go through
//! sqlx; on SQLite they run in place on the group-committing writer's own connection, with no
//! round trip to a worker thread per statement (which cost more than the statements did).

use std::future::{Future, ready};
use std::pin::Pin;

use futures::FutureExt;
use sqlx::{AnyConnection, Row as _};

/// A write's statements, given its transaction. They must wait for nothing but the store:
/// every queued write waits for them.
pub type Work<T, E> = Box<dyn for<'c> FnOnce(&'c mut dyn Statements) -> BoxFuture<'c, Result<T, E>> + Send>;
pub type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// A value bound to a statement's `$n` parameter (the n-th of its arguments).
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
    /// A text column's `NULL`.
    NoText,
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(value: &'a [u8]) -> Self {
        Arg::Bytes(value)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(Arg::NoText, Arg::Text)
    }
}

/// A row a statement returned.
pub enum Row {
    Any(sqlx::any::AnyRow),
    Sqlite(Vec<rusqlite::types::Value>),
}

impl Row {
    pub fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        match self {
            Row::Any(row) => row.try_get(column),
            Row::Sqlite(values) => match values.get(column) {
                Some(rusqlite::types::Value::Integer(value)) => Ok(*value),
                _ => Err(mismatch(column, "an integer")),
            },
        }
    }

    pub fn text(&self, column: usize) -> Result<String, sqlx::Error> {
        match self {
            Row::Any(row) => row.try_get(column),
            Row::Sqlite(values) => match values.get(column) {
                Some(rusqlite::types::Value::Text(value)) => Ok(value.clone()),
                _ => Err(mismatch(column, "text")),
            },
        }
    }
}

fn mismatch(column: usize, wanted: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_string(), source: format!("the column is not {wanted}").into() }
}

/// The transaction a queued write runs in.
pub trait Statements: Send {
    /// Runs a statement; returns how many rows it changed.
    fn execute<'a>(&'a mut self, sql: &'static str, args: &'a [Arg<'a>]) -> BoxFuture<'a, Result<u64, sqlx::Error>>;
    /// Runs a query; returns its first row, if any.
    fn fetch_optional<'a>(&'a mut self, sql: &'static str, args: &'a [Arg<'a>]) -> BoxFuture<'a, Result<Option<Row>, sqlx::Error>>;
}

/// Statements through sqlx (PostgreSQL, or a SQLite store the writer thread cannot open).
pub(super) struct Through<'c>(pub &'c mut AnyConnection);

fn query<'a>(sql: &'a str, args: &'a [Arg<'a>]) -> sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>> {
    args.iter().fold(sqlx::query(sql), |query, arg| match *arg {
        Arg::Int(value) => query.bind(value),
        Arg::Text(value) => query.bind(value),
        Arg::Bytes(value) => query.bind(value),
        Arg::NoText => query.bind(None::<&str>),
    })
}

impl Statements for Through<'_> {
    fn execute<'a>(&'a mut self, sql: &'static str, args: &'a [Arg<'a>]) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        query(sql, args).execute(&mut *self.0).map(|done| done.map(|done| done.rows_affected())).boxed()
    }

    fn fetch_optional<'a>(&'a mut self, sql: &'static str, args: &'a [Arg<'a>]) -> BoxFuture<'a, Result<Option<Row>, sqlx::Error>> {
        query(sql, args).fetch_optional(&mut *self.0).map(|row| row.map(|row| row.map(Row::Any))).boxed()
    }
}

/// Statements run in place on a SQLite connection (the writer thread's).
pub(super) struct InPlace<'c>(pub &'c mut rusqlite::Connection);

impl InPlace<'_> {
    fn prepare(&self, sql: &str, args: &[Arg<'_>]) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
        let mut statement = self.0.prepare_cached(sql)?;
        for (n, arg) in args.iter().enumerate() {
            // `$n` is a named parameter to SQLite: found by its name, absent if unused.
            let Some(index) = statement.parameter_index(&format!("${}", n + 1))? else { continue };
            match *arg {
                Arg::Int(value) => statement.raw_bind_parameter(index, value)?,
                Arg::Text(value) => statement.raw_bind_parameter(index, value)?,
                Arg::Bytes(value) => statement.raw_bind_parameter(index, value)?,
                Arg::NoText => statement.raw_bind_parameter(index, rusqlite::types::Null)?,
            }
        }
        Ok(statement)
    }
}

impl Statements for InPlace<'_> {
    fn execute<'a>(&'a mut self, sql: &'static str, args: &'a [Arg<'a>]) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        let changed = self.prepare(sql, args).and_then(|mut statement| statement.raw_execute()).map(|n| n as u64);
        ready(changed.map_err(from_sqlite)).boxed()
    }

    fn fetch_optional<'a>(&'a mut self, sql: &'static str, args: &'a [Arg<'a>]) -> BoxFuture<'a, Result<Option<Row>, sqlx::Error>> {
        let row = self.prepare(sql, args).and_then(|mut statement| {
            let columns = statement.column_count();
            let mut rows = statement.raw_query();
            let Some(row) = rows.next()? else { return Ok(None) };
            let values = (0..columns).map(|column| row.get::<_, rusqlite::types::Value>(column)).collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Row::Sqlite(values)))
        });
        ready(row.map_err(from_sqlite)).boxed()
    }
}

/// SQLite's errors as sqlx's, kept apart as the callers tell them: the store busy past its
/// timeout is a temporary refusal; anything else is a fault.
pub(super) fn from_sqlite(err: rusqlite::Error) -> sqlx::Error {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => sqlx::Error::PoolTimedOut,
        Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::DiskFull) => {
            sqlx::Error::Io(std::io::Error::other(err.to_string()))
        }
        _ => sqlx::Error::Protocol(format!("metadata store (SQLite): {err}")),
    }
}
