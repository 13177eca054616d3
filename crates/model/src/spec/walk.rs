//! A walker over a parsed TOML table that validates as it reads and collects every problem,
//! so that one pass reports all of them, each with its path in the file.

use std::cell::RefCell;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::sync::LazyLock;

use super::problem::Problem;

static EMPTY: LazyLock<toml::Table> = LazyLock::new(toml::Table::new);

pub(super) type Problems = RefCell<Vec<Problem>>;

pub(super) struct Table<'a> {
    path: String,
    table: &'a toml::Table,
    seen: RefCell<Vec<&'static str>>,
    problems: &'a Problems,
}

impl<'a> Table<'a> {
    pub(super) fn root(table: &'a toml::Table, problems: &'a Problems) -> Table<'a> {
        Table { path: String::new(), table, seen: RefCell::new(Vec::new()), problems }
    }

    /// A table that the file does not have, read for its defaults at `path`.
    pub(super) fn absent(&self, path: &str) -> Table<'a> {
        Table { path: path.to_owned(), table: &EMPTY, seen: RefCell::new(Vec::new()), problems: self.problems }
    }

    pub(super) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    pub(super) fn problem(&self, key: &str, message: impl Display) {
        self.problems.borrow_mut().push(Problem { path: self.path_of(key), message: message.to_string() });
    }

    fn get(&self, key: &'static str) -> Option<&'a toml::Value> {
        self.seen.borrow_mut().push(key);
        self.table.get(key)
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &toml::Value) {
        self.problem(key, format!("expected {expected}, found {} `{found}`", found.type_str()));
    }

    pub(super) fn has(&self, key: &'static str) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn string(&self, key: &'static str, default: &str) -> String {
        self.opt_string(key).unwrap_or_else(|| default.to_owned())
    }

    pub(super) fn opt_string(&self, key: &'static str) -> Option<String> {
        match self.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    pub(super) fn boolean(&self, key: &'static str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong_type(key, "true or false", other);
                default
            }
        }
    }

    pub(super) fn integer(&self, key: &'static str, default: i64, range: RangeInclusive<i64>) -> i64 {
        match self.get(key) {
            None => default,
            Some(toml::Value::Integer(i)) if range.contains(i) => *i,
            Some(toml::Value::Integer(i)) => {
                self.problem(key, format!("{i} is outside {}..={}", range.start(), range.end()));
                default
            }
            Some(other) => {
                self.wrong_type(key, "an integer", other);
                default
            }
        }
    }

    /// One of a fixed set of strings; the message lists the allowed values.
    pub(super) fn choice(&self, key: &'static str, default: &'static str, allowed: &[&'static str]) -> &'static str {
        let Some(value) = self.opt_string(key) else { return default };
        match allowed.iter().find(|a| **a == value) {
            Some(found) => found,
            None => {
                self.problem(key, format!("`{value}` is not one of {}", allowed.join(", ")));
                default
            }
        }
    }

    /// A string turned into `T` by `parse`, whose error message is reported at this key.
    pub(super) fn parsed<T>(&self, key: &'static str, default: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = self.string(key, default);
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.problem(key, message);
                None
            }
        }
    }

    pub(super) fn table(&self, key: &'static str) -> Table<'a> {
        let table = match self.get(key) {
            None => &*EMPTY,
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                self.wrong_type(key, "a table", other);
                &*EMPTY
            }
        };
        Table { path: self.path_of(key), table, seen: RefCell::new(Vec::new()), problems: self.problems }
    }

    /// `[[key]]` entries, or `None` when the key is absent (so the caller can apply defaults).
    pub(super) fn array_of_tables(&self, key: &'static str) -> Option<Vec<Table<'a>>> {
        let items = match self.get(key)? {
            toml::Value::Array(items) => items,
            other => {
                self.wrong_type(key, "an array of tables", other);
                return Some(Vec::new());
            }
        };
        let mut tables = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item {
                toml::Value::Table(table) => tables.push(Table {
                    path: format!("{}[{index}]", self.path_of(key)),
                    table,
                    seen: RefCell::new(Vec::new()),
                    problems: self.problems,
                }),
                other => self.wrong_type(&format!("{key}[{index}]"), "a table", other),
            }
        }
        Some(tables)
    }

    /// `[key.<name>]` tables, in file order, or `None` when the key is absent.
    pub(super) fn named_tables(&self, key: &'static str) -> Option<Vec<(String, Table<'a>)>> {
        let outer = self.table(key);
        if !self.table.contains_key(key) {
            return None;
        }
        let mut named = Vec::new();
        for (name, value) in outer.table {
            match value {
                toml::Value::Table(table) => named.push((
                    name.clone(),
                    Table { path: outer.path_of(name), table, seen: RefCell::new(Vec::new()), problems: self.problems },
                )),
                other => outer.wrong_type(name, "a table", other),
            }
        }
        Some(named)
    }

    /// A list of strings.
    pub(super) fn strings(&self, key: &'static str, default: &[&str]) -> Vec<String> {
        match self.get(key) {
            None => default.iter().map(|s| (*s).to_owned()).collect(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| match item {
                    toml::Value::String(s) => Some(s.clone()),
                    other => {
                        self.wrong_type(&format!("{key}[{index}]"), "a string", other);
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.wrong_type(key, "an array of strings", other);
                Vec::new()
            }
        }
    }

    /// Reports every key this walk did not read, with the nearest known key as a suggestion.
    /// Named sub-tables (`named_tables`) are opened by the caller and finished there.
    pub(super) fn finish(&self) {
        let seen = self.seen.borrow();
        for key in self.table.keys() {
            if seen.contains(&key.as_str()) {
                continue;
            }
            let nearest = seen
                .iter()
                .map(|known| (strsim::jaro_winkler(key, known), *known))
                .filter(|(score, _)| *score > 0.7)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match nearest {
                Some((_, known)) => self.problem(key, format!("unknown key; did you mean `{known}`?")),
                None => {
                    let mut known: Vec<&str> = seen.clone();
                    known.sort_unstable();
                    known.dedup();
                    self.problem(key, format!("unknown key; known keys here are {}", known.join(", ")))
                }
            }
        }
    }
}
