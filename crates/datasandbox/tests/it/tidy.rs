//! Tidy: tests that read the workspace's own source and keep its shape (rust-analyzer's
//! `tidy.rs`). A layering written only in ARCHITECTURE.md drifts the first time someone is in a
//! hurry; written here, the drift fails CI with the file, line and path that caused it.
//!
//! The three properties, each its own test so a failure names the one that broke:
//! - no two files of a crate import each other, directly or around a longer cycle;
//! - a crate with a ```` ```layers ```` table in ARCHITECTURE.md names only lower layers;
//! - no file over 600 lines and no function over 80, except those listed under
//!   ```` ```size-exceptions ```` in ARCHITECTURE.md, and no entry there that is no longer needed.
//!
//! It reads source with a small tokenizer of its own (std only, no `syn`): comments, strings
//! and character literals are dropped, and what is left is enough to see `use` trees, paths,
//! `mod` blocks and function bodies. A file is a node; an edge is a path written in one file
//! that resolves into the module of another (`crate::a::b::Item` belongs to the longest prefix
//! that is a module file). Declaring `mod child;` is not an edge: the parent owns the child,
//! and it is the child naming the parent that would be upward.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FUNCTION_LINES: usize = 80;

#[test]
fn no_file_imports_in_a_cycle() {
    let workspace = Workspace::load();
    let problems: Vec<String> = workspace.crates.iter().flat_map(|krate| cycle_problems(krate, &krate.edges())).collect();
    fail_on(
        "Files that import each other in a cycle (each cycle below lists its files and, for each step, the paths that tie it).\n\
         Files in a cycle can be understood, tested and moved only together. Break each cycle: move the shared item down\n\
         into the lower file, or let the lower file own a trait that the higher one implements.",
        problems,
    );
}

#[test]
fn no_module_imports_upward() {
    let workspace = Workspace::load();
    let tables = match layer_tables(&workspace.architecture) {
        Ok(tables) => tables,
        Err(problems) => return fail_on("The layer tables in ARCHITECTURE.md cannot be read.", problems),
    };
    let mut problems = Vec::new();
    for table in &tables {
        match workspace.crates.iter().find(|krate| krate.name == table.crate_name) {
            Some(krate) => problems.extend(layer_problems(krate, table)),
            None => problems.push(format!(
                "ARCHITECTURE.md:{}: there is no crate `{}` under crates/: remove its line from the ```layers block or fix the name",
                table.line, table.crate_name
            )),
        }
    }
    fail_on(
        "Modules that name a module in their own or a higher layer (the ```layers tables in ARCHITECTURE.md, bottom first).\n\
         A module may name only modules in layers strictly below its own. Move the item down, let the lower module own a\n\
         trait the higher one implements, or, if the layering itself should change, change the table in ARCHITECTURE.md.",
        problems,
    );
}

#[test]
fn no_file_or_function_is_too_long() {
    let workspace = Workspace::load();
    let problems = match size_exceptions(&workspace.architecture) {
        Ok(exceptions) => size_problems(&workspace.sized_files(), &exceptions),
        Err(problems) => problems,
    };
    fail_on(
        &format!(
            "Files over {MAX_FILE_LINES} lines or functions over {MAX_FUNCTION_LINES} lines (from `fn` to its closing brace), and\n\
             stale entries of the ```size-exceptions block in ARCHITECTURE.md. Split what is too long; only a table-like file or\n\
             function belongs in the exceptions, one per line as `path/to/file.rs — reason` or `path/to/file.rs::function — reason`."
        ),
        problems,
    );
}

fn fail_on(title: &str, problems: Vec<String>) {
    if !problems.is_empty() {
        panic!("{title}\n\n{}\n\n{} problem(s)\n", problems.join("\n"), problems.len());
    }
}

// ---------------------------------------------------------------------------------------------
// The workspace on disk.

struct Workspace {
    root: PathBuf,
    crates: Vec<Crate>,
    architecture: String,
}

impl Workspace {
    fn load() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = root.canonicalize().unwrap_or(root);
        let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the repository root");
        let mut crates = Vec::new();
        for crate_directory in sorted_entries(&root.join("crates")) {
            let source = crate_directory.join("src");
            if !source.is_dir() {
                continue;
            }
            let name = file_name(&crate_directory);
            let files = rust_files(&source)
                .into_iter()
                .map(|path| {
                    let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                    (relative(&path, &source), text)
                })
                .collect();
            crates.push(Crate::new(&name, &format!("crates/{name}/src/"), files));
        }
        assert!(crates.len() >= 2, "found only {} crates under {}/crates: is the root right?", crates.len(), root.display());
        Workspace { root, crates, architecture }
    }

    /// Every file the size rule covers, with its path from the repository root.
    fn sized_files(&self) -> Vec<(String, String)> {
        let mut files = Vec::new();
        for crate_directory in sorted_entries(&self.root.join("crates")) {
            for folder in ["src", "benches"] {
                for path in rust_files(&crate_directory.join(folder)) {
                    let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                    files.push((relative(&path, &self.root), text));
                }
            }
        }
        files
    }
}

fn sorted_entries(directory: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(directory) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.map(|entry| entry.expect("a readable directory entry").path()).collect();
    paths.sort();
    paths
}

fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in sorted_entries(directory) {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("a path with a file name").to_string_lossy().into_owned()
}

fn relative(path: &Path, base: &Path) -> String {
    let relative = path.strip_prefix(base).expect("a path under its base");
    relative.components().map(|component| component.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

// ---------------------------------------------------------------------------------------------
// A crate: its files, their module paths and what they name.

struct Crate {
    name: String,
    /// `lib` or `main`: the name the crate root goes by in a layer table.
    root_name: String,
    files: Vec<ModuleFile>,
}

struct ModuleFile {
    /// The path from the repository root, as messages print it.
    display_path: String,
    /// The path under the crate's `src/`, as cycles print it.
    short_path: String,
    /// The module path inside the crate; empty for the crate root.
    module_path: Vec<String>,
    syntax: FileSyntax,
}

/// A path written in one file that resolves into another, with where it was written.
#[derive(Clone, Debug)]
struct Name {
    line: usize,
    text: String,
}

type Edges = BTreeMap<(usize, usize), Vec<Name>>;

impl Crate {
    /// `files` are paths relative to the crate's `src/` (`lib.rs`, `a/b.rs`) with their text.
    fn new(name: &str, display_prefix: &str, files: Vec<(String, String)>) -> Crate {
        let has_lib = files.iter().any(|(path, _)| path == "lib.rs");
        let has_main = files.iter().any(|(path, _)| path == "main.rs");
        assert!(!(has_lib && has_main), "crate `{name}` has both lib.rs and main.rs, which the tidy test does not yet tell apart");
        let root_name = if has_main { "main" } else { "lib" }.to_string();
        let files = files
            .into_iter()
            .map(|(path, text)| ModuleFile {
                display_path: format!("{display_prefix}{path}"),
                short_path: path.clone(),
                module_path: module_path_of(&path),
                syntax: parse(&lex(&text)),
            })
            .collect();
        Crate { name: name.to_string(), root_name, files }
    }

    fn top_level_name(&self, file: usize) -> &str {
        self.files[file].module_path.first().map_or(self.root_name.as_str(), String::as_str)
    }

    fn top_level_names(&self) -> BTreeSet<String> {
        (0..self.files.len()).map(|file| self.top_level_name(file).to_string()).collect()
    }

    /// Every file-to-file edge, with the names that make it, in the order they were written.
    fn edges(&self) -> Edges {
        let resolver = Resolver::new(self);
        let mut edges = Edges::new();
        for (from, file) in self.files.iter().enumerate() {
            for written in &file.syntax.paths {
                let scope = [file.module_path.as_slice(), written.scope.as_slice()].concat();
                let Some(target) = resolver.resolve(&scope, &written.segments, 0) else { continue };
                let to = resolver.owning_file(&target);
                // `Trail::open` after `use crate::writer::Trail` says nothing the `use` did not.
                let through_use =
                    !written.in_use && resolver.alias(&scope, &written.segments[0]).is_some_and(|alias| resolver.owning_file(&alias) == to);
                if to != from && !through_use {
                    edges.entry((from, to)).or_default().push(Name { line: written.line, text: written.text.clone() });
                }
            }
        }
        edges
    }
}

fn module_path_of(path: &str) -> Vec<String> {
    let mut segments: Vec<String> = path.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if segments.len() == 1 && (segments[0] == "lib" || segments[0] == "main") || segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

/// Resolves written paths to module paths the way rustc's 2018+ paths do, as far as modules go:
/// `crate`, `self`, `super`, a child module of the current scope, or a name a `use` brought in
/// (also through a glob). Anything else (an external crate, a type, a local) is not ours.
struct Resolver {
    files: HashMap<Vec<String>, usize>,
    modules: HashSet<Vec<String>>,
    aliases: HashMap<Vec<String>, Vec<(String, Vec<String>)>>,
    globs: HashMap<Vec<String>, Vec<Vec<String>>>,
}

const RESOLUTION_DEPTH: usize = 6;

impl Resolver {
    fn new(krate: &Crate) -> Resolver {
        let mut resolver = Resolver { files: HashMap::new(), modules: HashSet::new(), aliases: HashMap::new(), globs: HashMap::new() };
        for (index, file) in krate.files.iter().enumerate() {
            resolver.files.insert(file.module_path.clone(), index);
            resolver.modules.insert(file.module_path.clone());
            let absolute = |scope: &[String]| [file.module_path.as_slice(), scope].concat();
            for inline in &file.syntax.inline_modules {
                resolver.modules.insert(absolute(inline));
            }
            for alias in &file.syntax.aliases {
                resolver.aliases.entry(absolute(&alias.scope)).or_default().push((alias.name.clone(), alias.segments.clone()));
            }
            for glob in &file.syntax.globs {
                resolver.globs.entry(absolute(&glob.scope)).or_default().push(glob.segments.clone());
            }
        }
        resolver
    }

    fn resolve(&self, scope: &[String], segments: &[String], depth: usize) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        let base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => scope.to_vec(),
            "super" => {
                let supers = segments.iter().take_while(|segment| *segment == "super").count();
                let base = scope.get(..scope.len().checked_sub(supers)?)?.to_vec();
                return Some([base.as_slice(), &segments[supers..]].concat());
            }
            name => self.lookup(scope, name, depth)?,
        };
        Some([base.as_slice(), rest].concat())
    }

    /// The module path a bare first segment names in `scope`, if it names something of ours.
    fn lookup(&self, scope: &[String], name: &str, depth: usize) -> Option<Vec<String>> {
        if depth > RESOLUTION_DEPTH {
            return None;
        }
        let child = [scope, &[name.to_string()]].concat();
        if self.modules.contains(&child) {
            return Some(child);
        }
        let aliases = self.aliases.get(scope).into_iter().flatten();
        if let Some((_, segments)) = aliases.into_iter().find(|(alias, _)| alias == name) {
            return self.resolve(scope, segments, depth + 1);
        }
        for glob in self.globs.get(scope).into_iter().flatten() {
            let Some(base) = self.resolve(scope, glob, depth + 1) else { continue };
            if let Some(found) = self.lookup(&base, name, depth + 1) {
                return Some(found);
            }
        }
        None
    }

    /// The path a name brought in by a `use` of `scope` stands for.
    fn alias(&self, scope: &[String], name: &str) -> Option<Vec<String>> {
        let (_, segments) = self.aliases.get(scope)?.iter().find(|(alias, _)| alias == name)?;
        self.resolve(scope, segments, 1)
    }

    /// The file whose module holds `path`: the longest prefix that is a module file.
    fn owning_file(&self, path: &[String]) -> usize {
        (0..=path.len()).rev().find_map(|length| self.files.get(&path[..length]).copied()).expect("every crate has a root file")
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens: what is left of a file once comments, strings and character literals are gone.

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Identifier(String),
    Punctuation(char),
    PathSeparator,
    /// A string, character or number literal: present so that it separates what is around it.
    Literal,
    Lifetime,
}

#[derive(Clone, Debug)]
struct Lexeme {
    token: Token,
    line: usize,
}

fn lex(text: &str) -> Vec<Lexeme> {
    let mut lexer = Lexer { characters: text.chars().collect(), position: 0, line: 1, lexemes: Vec::new() };
    while let Some(character) = lexer.peek(0) {
        let line = lexer.line;
        let token = match character {
            _ if character.is_whitespace() => {
                lexer.bump();
                continue;
            }
            '/' if lexer.peek(1) == Some('/') => {
                lexer.skip_line_comment();
                continue;
            }
            '/' if lexer.peek(1) == Some('*') => {
                lexer.skip_block_comment();
                continue;
            }
            '"' => lexer.string(),
            'r' if lexer.raw_string_starts(1) => lexer.raw_string(1),
            'b' | 'c' if lexer.peek(1) == Some('"') => {
                lexer.bump();
                lexer.string()
            }
            'b' | 'c' if lexer.peek(1) == Some('r') && lexer.raw_string_starts(2) => lexer.raw_string(2),
            'b' if lexer.peek(1) == Some('\'') => {
                lexer.bump();
                lexer.quote()
            }
            'r' if lexer.peek(1) == Some('#') && lexer.peek(2).is_some_and(is_identifier_start) => {
                lexer.bump();
                lexer.bump();
                Token::Identifier(lexer.identifier())
            }
            '\'' => lexer.quote(),
            ':' if lexer.peek(1) == Some(':') => {
                lexer.bump();
                lexer.bump();
                Token::PathSeparator
            }
            _ if is_identifier_start(character) => Token::Identifier(lexer.identifier()),
            _ if character.is_ascii_digit() => {
                lexer.identifier();
                Token::Literal
            }
            _ => {
                lexer.bump();
                Token::Punctuation(character)
            }
        };
        lexer.lexemes.push(Lexeme { token, line });
    }
    lexer.lexemes
}

fn is_identifier_start(character: char) -> bool {
    character.is_alphabetic() || character == '_'
}

struct Lexer {
    characters: Vec<char>,
    position: usize,
    line: usize,
    lexemes: Vec<Lexeme>,
}

impl Lexer {
    fn peek(&self, offset: usize) -> Option<char> {
        self.characters.get(self.position + offset).copied()
    }

    fn bump(&mut self) {
        if self.peek(0) == Some('\n') {
            self.line += 1;
        }
        self.position += 1;
    }

    fn skip_line_comment(&mut self) {
        while self.peek(0).is_some_and(|character| character != '\n') {
            self.bump();
        }
    }

    /// Block comments nest in Rust: `/* /* */ still a comment */`.
    fn skip_block_comment(&mut self) {
        let mut depth = 0;
        while let Some(character) = self.peek(0) {
            if character == '/' && self.peek(1) == Some('*') {
                depth += 1;
                self.bump();
            } else if character == '*' && self.peek(1) == Some('/') {
                depth -= 1;
                self.bump();
                if depth == 0 {
                    self.bump();
                    return;
                }
            }
            self.bump();
        }
    }

    fn string(&mut self) -> Token {
        self.bump();
        while let Some(character) = self.peek(0) {
            self.bump();
            match character {
                '\\' => self.bump(),
                '"' => break,
                _ => {}
            }
        }
        Token::Literal
    }

    /// Whether `r`, `r#`, `r##`… followed by `"` starts at `offset`, the `r` being just before it.
    fn raw_string_starts(&self, offset: usize) -> bool {
        let hashes = (offset..).take_while(|&index| self.peek(index) == Some('#')).count();
        self.peek(offset + hashes) == Some('"')
    }

    /// A raw string `r#"…"#`, whose `prefix` characters (`r`, or `br`/`cr`) come first.
    fn raw_string(&mut self, prefix: usize) -> Token {
        for _ in 0..prefix {
            self.bump();
        }
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            hashes += 1;
            self.bump();
        }
        self.bump();
        while let Some(character) = self.peek(0) {
            self.bump();
            if character == '"' && (0..hashes).all(|index| self.peek(index) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                break;
            }
        }
        Token::Literal
    }

    /// A `'` starts a character literal (`'x'`, `'\n'`, `'{'`) or a lifetime or label (`'a`).
    fn quote(&mut self) -> Token {
        self.bump();
        if self.peek(0) == Some('\\') {
            self.bump();
            self.bump();
            while self.peek(0).is_some_and(|character| character != '\'') {
                self.bump();
            }
            self.bump();
            Token::Literal
        } else if self.peek(1) == Some('\'') {
            self.bump();
            self.bump();
            Token::Literal
        } else {
            self.identifier();
            Token::Lifetime
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.position;
        while self.peek(0).is_some_and(|character| character.is_alphanumeric() || character == '_') {
            self.bump();
        }
        self.characters[start..self.position].iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// What a file says about modules: paths it writes, `use` names, inline modules, functions.

#[derive(Debug, Default)]
struct FileSyntax {
    paths: Vec<WrittenPath>,
    aliases: Vec<Alias>,
    globs: Vec<Glob>,
    /// Inline modules (`mod tests { … }`), as paths relative to the file's module.
    inline_modules: Vec<Vec<String>>,
    /// Outermost functions only: a function nested in another counts as part of it.
    functions: Vec<FunctionSpan>,
}

/// A path of two or more segments, or a `use` leaf, in the inline-module scope it was written in.
#[derive(Debug)]
struct WrittenPath {
    scope: Vec<String>,
    segments: Vec<String>,
    line: usize,
    text: String,
    /// Written in a `use` tree rather than in code.
    in_use: bool,
}

/// A name a `use` brought into `scope`, for the path it stands for.
#[derive(Debug)]
struct Alias {
    scope: Vec<String>,
    name: String,
    segments: Vec<String>,
}

#[derive(Debug)]
struct Glob {
    scope: Vec<String>,
    segments: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
struct FunctionSpan {
    name: String,
    first_line: usize,
    last_line: usize,
}

impl FunctionSpan {
    fn lines(&self) -> usize {
        self.last_line - self.first_line + 1
    }
}

enum Frame {
    Module(String),
    Function { name: String, first_line: usize },
    Block,
}

enum Pending {
    Nothing,
    Module(String),
    Function { name: String, first_line: usize, depth: usize },
}

struct Parser<'t> {
    lexemes: &'t [Lexeme],
    position: usize,
    frames: Vec<Frame>,
    pending: Pending,
    /// How many `(` and `[` are open: a function's body is the first `{` at its signature's depth.
    depth: usize,
    syntax: FileSyntax,
}

fn parse(lexemes: &[Lexeme]) -> FileSyntax {
    let mut parser =
        Parser { lexemes, position: 0, frames: Vec::new(), pending: Pending::Nothing, depth: 0, syntax: FileSyntax::default() };
    while parser.position < lexemes.len() {
        parser.step();
    }
    parser.syntax
}

impl Parser<'_> {
    fn token(&self, offset: usize) -> Option<&Token> {
        self.lexemes.get(self.position + offset).map(|lexeme| &lexeme.token)
    }

    fn identifier(&self, offset: usize) -> Option<&str> {
        match self.token(offset) {
            Some(Token::Identifier(name)) => Some(name),
            _ => None,
        }
    }

    fn line(&self) -> usize {
        self.lexemes.get(self.position).or(self.lexemes.last()).map_or(1, |lexeme| lexeme.line)
    }

    fn scope(&self) -> Vec<String> {
        self.frames.iter().filter_map(|frame| if let Frame::Module(name) = frame { Some(name.clone()) } else { None }).collect()
    }

    /// Reads one token, or one construct starting at it. An identifier right after a `::` that
    /// reaches here is not the start of a path of ours: it follows `>` (`<T as X>::f`) or a
    /// leading `::` (`::std::f`), which name nothing in this crate.
    fn step(&mut self) {
        let after_separator = self.position > 0 && self.lexemes[self.position - 1].token == Token::PathSeparator;
        match self.token(0).cloned() {
            Some(Token::Identifier(_)) if after_separator => self.position += 1,
            Some(Token::Identifier(word)) => self.word(&word),
            Some(Token::Punctuation(character)) => {
                self.punctuation(character);
                self.position += 1;
            }
            _ => self.position += 1,
        }
    }

    fn word(&mut self, word: &str) {
        let next = self.token(1).cloned();
        match (word, &next) {
            ("macro_rules", Some(Token::Punctuation('!'))) => {
                self.position += 3;
                self.skip_group();
            }
            ("use", Some(token)) if *token != Token::Punctuation('<') => {
                self.position += 1;
                self.use_declaration();
            }
            ("mod", Some(Token::Identifier(name))) => {
                if self.token(2) == Some(&Token::Punctuation('{')) {
                    self.pending = Pending::Module(name.clone());
                }
                self.position += 2;
            }
            ("fn", Some(Token::Identifier(name))) => {
                if !self.frames.iter().any(|frame| matches!(frame, Frame::Function { .. })) {
                    self.pending = Pending::Function { name: name.clone(), first_line: self.line(), depth: self.depth };
                }
                self.position += 2;
            }
            ("pub", Some(Token::Punctuation('('))) if self.identifier(2) == Some("in") => {
                // `pub(in crate::a)` names where an item is visible, not something it uses.
                while self.token(0).is_some_and(|token| *token != Token::Punctuation(')')) {
                    self.position += 1;
                }
            }
            (_, Some(Token::PathSeparator)) => self.path(),
            _ => self.position += 1,
        }
    }

    fn punctuation(&mut self, character: char) {
        match character {
            '(' | '[' => self.depth += 1,
            ')' | ']' => self.depth = self.depth.saturating_sub(1),
            ';' => {
                if matches!(self.pending, Pending::Function { depth, .. } if depth == self.depth) {
                    self.pending = Pending::Nothing;
                }
            }
            '{' => {
                let frame = match std::mem::replace(&mut self.pending, Pending::Nothing) {
                    Pending::Module(name) => Frame::Module(name),
                    Pending::Function { name, first_line, depth } if depth == self.depth => Frame::Function { name, first_line },
                    pending => {
                        self.pending = pending;
                        Frame::Block
                    }
                };
                if let Frame::Module(name) = &frame {
                    self.syntax.inline_modules.push([self.scope(), vec![name.clone()]].concat());
                }
                self.frames.push(frame);
            }
            '}' => {
                if let Some(Frame::Function { name, first_line }) = self.frames.pop() {
                    self.syntax.functions.push(FunctionSpan { name, first_line, last_line: self.line() });
                }
            }
            _ => {}
        }
    }

    /// Skips a delimited group starting at the current token (a macro_rules body).
    fn skip_group(&mut self) {
        let mut depth = 0usize;
        while let Some(token) = self.token(0) {
            match token {
                Token::Punctuation('(' | '[' | '{') => depth += 1,
                Token::Punctuation(')' | ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.position += 1;
            if depth == 0 {
                return;
            }
        }
    }

    /// A path in code: `a::b::c`, ending where a segment is not an identifier (`::<`, `::{`).
    fn path(&mut self) {
        let line = self.line();
        let mut segments = Vec::new();
        while let Some(segment) = self.identifier(0) {
            segments.push(segment.to_string());
            self.position += 1;
            if self.token(0) != Some(&Token::PathSeparator) || self.identifier(1).is_none() {
                break;
            }
            self.position += 1;
        }
        let text = segments.join("::");
        self.syntax.paths.push(WrittenPath { scope: self.scope(), segments, line, text, in_use: false });
    }

    /// The tree after `use`, up to its `;`. A leading `::` names an external crate: not ours.
    fn use_declaration(&mut self) {
        let external = self.token(0) == Some(&Token::PathSeparator);
        let mut leaves = Vec::new();
        self.use_tree(Vec::new(), &mut leaves);
        while self.token(0).is_some_and(|token| *token != Token::Punctuation(';')) {
            self.position += 1;
        }
        if external {
            return;
        }
        let scope = self.scope();
        for leaf in leaves {
            let mut text = leaf.segments.join("::");
            match &leaf.binding {
                Binding::Glob => {
                    text.push_str("::*");
                    self.syntax.globs.push(Glob { scope: scope.clone(), segments: leaf.segments.clone() });
                }
                Binding::Name(name) => {
                    if leaf.segments.last() != Some(name) {
                        let _ = write!(text, " as {name}");
                    }
                    self.syntax.aliases.push(Alias { scope: scope.clone(), name: name.clone(), segments: leaf.segments.clone() });
                }
                Binding::Underscore => text.push_str(" as _"),
            }
            self.syntax.paths.push(WrittenPath { scope: scope.clone(), segments: leaf.segments, line: leaf.line, text, in_use: true });
        }
    }

    fn use_tree(&mut self, mut segments: Vec<String>, leaves: &mut Vec<UseLeaf>) {
        if self.token(0) == Some(&Token::PathSeparator) {
            self.position += 1;
        }
        loop {
            let line = self.line();
            match self.token(0).cloned() {
                Some(Token::Punctuation('{')) => {
                    self.position += 1;
                    while let Some(token) = self.token(0).cloned() {
                        match token {
                            Token::Punctuation('}') => break,
                            Token::Punctuation(',') => self.position += 1,
                            Token::Punctuation(';') => return,
                            _ => {
                                let before = self.position;
                                self.use_tree(segments.clone(), leaves);
                                if self.position == before {
                                    self.position += 1;
                                }
                            }
                        }
                    }
                    self.position += 1;
                    return;
                }
                Some(Token::Punctuation('*')) => {
                    self.position += 1;
                    leaves.push(UseLeaf { segments, binding: Binding::Glob, line });
                    return;
                }
                Some(Token::Identifier(segment)) => {
                    segments.push(segment);
                    self.position += 1;
                    if self.token(0) == Some(&Token::PathSeparator) {
                        self.position += 1;
                        continue;
                    }
                    if segments.last().is_some_and(|last| last == "self") && segments.len() > 1 {
                        segments.pop();
                    }
                    let mut binding = Binding::Name(segments.last().cloned().unwrap_or_default());
                    if self.identifier(0) == Some("as") {
                        binding = match self.identifier(1) {
                            Some("_") | None => Binding::Underscore,
                            Some(alias) => Binding::Name(alias.to_string()),
                        };
                        self.position += 2;
                    }
                    leaves.push(UseLeaf { segments, binding, line });
                    return;
                }
                _ => return,
            }
        }
    }
}

struct UseLeaf {
    segments: Vec<String>,
    binding: Binding,
    line: usize,
}

enum Binding {
    Name(String),
    Glob,
    Underscore,
}

// ---------------------------------------------------------------------------------------------
// Cycles.

/// One problem per strongly connected set of files, listing a set of cycles that together use
/// every edge inside the set (shortest first), so that each edge to break appears at least once.
fn cycle_problems(krate: &Crate, edges: &Edges) -> Vec<String> {
    let successors = successors(krate.files.len(), edges);
    let mut problems = Vec::new();
    for component in strongly_connected(&successors).into_iter().filter(|component| component.len() > 1) {
        let members: BTreeSet<usize> = component.iter().copied().collect();
        let mut cycles: Vec<Vec<usize>> = edges
            .keys()
            .filter(|(from, to)| members.contains(from) && members.contains(to))
            .filter_map(|&(from, to)| {
                // The path back ends at `from`, which the cycle already starts with.
                let back = shortest_path(&successors, &members, to, from)?;
                Some([&[from], &back[..back.len() - 1]].concat())
            })
            .collect();
        cycles.sort_by_key(|cycle| cycle.len());
        let mut covered = BTreeSet::new();
        let mut chosen = Vec::new();
        for cycle in cycles {
            let steps: Vec<(usize, usize)> = (0..cycle.len()).map(|index| (cycle[index], cycle[(index + 1) % cycle.len()])).collect();
            if steps.iter().any(|step| !covered.contains(step)) {
                covered.extend(steps);
                chosen.push(cycle);
            }
        }
        let mut names: Vec<&str> = members.iter().map(|&file| krate.files[file].display_path.as_str()).collect();
        names.sort_unstable();
        let mut problem = format!(
            "crate `{}`: {} files import each other ({} cycle(s) cover every edge among them): {}",
            krate.name,
            members.len(),
            chosen.len(),
            names.join(", ")
        );
        for (number, cycle) in chosen.iter().enumerate() {
            problem.push_str(&describe_cycle(krate, edges, number + 1, cycle));
        }
        problems.push(problem);
    }
    problems
}

fn describe_cycle(krate: &Crate, edges: &Edges, number: usize, cycle: &[usize]) -> String {
    let short = |file: usize| krate.files[file].short_path.as_str();
    let chain: Vec<&str> = cycle.iter().chain(cycle.first()).map(|&file| short(file)).collect();
    let mut text = format!("\n  cycle {number}: {}", chain.join(" → "));
    for (index, &from) in cycle.iter().enumerate() {
        let to = cycle[(index + 1) % cycle.len()];
        let _ = write!(
            text,
            "\n      {} → {}: {}",
            short(from),
            short(to),
            describe_names(&krate.files[from].display_path, &edges[&(from, to)])
        );
    }
    text
}

/// `path:line `name`, `name`; :line `name``: the names of one file that make one edge, by line,
/// the first few lines of them.
fn describe_names(path: &str, names: &[Name]) -> String {
    const SHOWN_LINES: usize = 4;
    let mut by_line: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for name in names {
        let texts = by_line.entry(name.line).or_default();
        if !texts.contains(&name.text.as_str()) {
            texts.push(&name.text);
        }
    }
    let mut parts = Vec::new();
    for (index, (line, texts)) in by_line.iter().take(SHOWN_LINES).enumerate() {
        let texts: Vec<String> = texts.iter().map(|text| format!("`{text}`")).collect();
        let place = if index == 0 { format!("{path}:{line}") } else { format!(":{line}") };
        parts.push(format!("{place} {}", texts.join(", ")));
    }
    if by_line.len() > SHOWN_LINES {
        parts.push(format!("and {} more lines", by_line.len() - SHOWN_LINES));
    }
    parts.join("; ")
}

fn successors(nodes: usize, edges: &Edges) -> Vec<Vec<usize>> {
    let mut successors = vec![Vec::new(); nodes];
    for &(from, to) in edges.keys() {
        successors[from].push(to);
    }
    successors
}

/// Tarjan's algorithm, iteratively (no recursion depth to worry about).
fn strongly_connected(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let count = successors.len();
    let (mut index, mut lowlink, mut on_stack) = (vec![usize::MAX; count], vec![0; count], vec![false; count]);
    let (mut next_index, mut stack, mut components) = (0, Vec::new(), Vec::new());
    for start in 0..count {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0)];
        while let Some(&mut (node, ref mut child)) = work.last_mut() {
            if *child == 0 && index[node] == usize::MAX {
                index[node] = next_index;
                lowlink[node] = next_index;
                next_index += 1;
                stack.push(node);
                on_stack[node] = true;
            }
            if let Some(&next) = successors[node].get(*child) {
                *child += 1;
                if index[next] == usize::MAX {
                    work.push((next, 0));
                } else if on_stack[next] {
                    lowlink[node] = lowlink[node].min(index[next]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                lowlink[parent] = lowlink[parent].min(lowlink[node]);
            }
            if lowlink[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// The shortest path from `from` to `to` inside `members`, both ends included.
fn shortest_path(successors: &[Vec<usize>], members: &BTreeSet<usize>, from: usize, to: usize) -> Option<Vec<usize>> {
    let mut previous = HashMap::from([(from, from)]);
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let (mut path, mut node) = (vec![to], to);
            while node != from {
                node = previous[&node];
                path.push(node);
            }
            path.reverse();
            return Some(path);
        }
        for &next in &successors[node] {
            if members.contains(&next) && !previous.contains_key(&next) {
                previous.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Layers.

#[derive(Debug, PartialEq)]
struct LayerTable {
    crate_name: String,
    /// Bottom first.
    groups: Vec<Vec<String>>,
    /// The line of ARCHITECTURE.md it was written on.
    line: usize,
}

/// The lines of every fenced block whose info string is exactly `info`, with their line numbers.
fn fenced_blocks(markdown: &str, info: &str) -> Vec<Vec<(usize, String)>> {
    enum State {
        Prose,
        Ours(Vec<(usize, String)>),
        Other,
    }
    let (mut blocks, mut state) = (Vec::new(), State::Prose);
    for (index, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```").map(|rest| rest.trim_start_matches('`').trim());
        state = match (state, fence) {
            (State::Prose, Some(found)) if found == info => State::Ours(Vec::new()),
            (State::Prose, Some(_)) => State::Other,
            (State::Ours(lines), Some(_)) => {
                blocks.push(lines);
                State::Prose
            }
            (State::Other, Some(_)) => State::Prose,
            (State::Ours(mut lines), None) => {
                lines.push((index + 1, line.to_string()));
                State::Ours(lines)
            }
            (state, None) => state,
        };
    }
    blocks
}

fn layer_tables(markdown: &str) -> Result<Vec<LayerTable>, Vec<String>> {
    let blocks = fenced_blocks(markdown, "layers");
    if blocks.is_empty() {
        return Err(vec![
            "ARCHITECTURE.md has no ```layers block: add one with a line `crate: bottom < middle < top` per layered crate".into(),
        ]);
    }
    let (mut tables, mut problems) = (Vec::<LayerTable>::new(), Vec::new());
    for (line, text) in blocks.into_iter().flatten() {
        if text.trim().is_empty() {
            continue;
        }
        let Some((crate_name, groups)) = text.split_once(':') else {
            problems.push(format!("ARCHITECTURE.md:{line}: `{}` is not `crate: bottom < … < top`", text.trim()));
            continue;
        };
        let groups: Vec<Vec<String>> = groups.split('<').map(|group| group.split_whitespace().map(str::to_string).collect()).collect();
        if groups.iter().any(Vec::is_empty) {
            problems.push(format!("ARCHITECTURE.md:{line}: an empty layer between two `<`: remove the extra `<`"));
            continue;
        }
        let crate_name = crate_name.trim().to_string();
        if let Some(earlier) = tables.iter().find(|table| table.crate_name == crate_name) {
            problems
                .push(format!("ARCHITECTURE.md:{line}: a second line for `{crate_name}` (the first is line {}): merge them", earlier.line));
            continue;
        }
        tables.push(LayerTable { crate_name, groups, line });
    }
    if problems.is_empty() { Ok(tables) } else { Err(problems) }
}

fn layer_problems(krate: &Crate, table: &LayerTable) -> Vec<String> {
    let mut problems = Vec::new();
    let mut layer_of = HashMap::new();
    for (layer, group) in table.groups.iter().enumerate() {
        for module in group {
            if layer_of.insert(module.as_str(), layer).is_some() {
                problems.push(format!(
                    "ARCHITECTURE.md:{}: `{}` lists `{module}` more than once: keep it in one layer",
                    table.line, krate.name
                ));
            }
        }
    }
    let modules = krate.top_level_names();
    for listed in layer_of.keys().filter(|listed| !modules.contains(**listed)) {
        problems.push(format!(
            "ARCHITECTURE.md:{}: `{}` lists `{listed}`, but crates/{}/src has no {listed}.rs: remove it from the table",
            table.line, krate.name, krate.name
        ));
    }
    for module in modules.iter().filter(|module| !layer_of.contains_key(module.as_str())) {
        let file = if *module == krate.root_name { format!("{module}.rs, the crate root") } else { format!("{module}.rs") };
        problems.push(format!(
            "ARCHITECTURE.md:{}: `{}` does not list its top-level module `{module}` ({file}): add it to the layer it belongs in",
            table.line, krate.name
        ));
    }
    problems.sort();
    let mut upward: BTreeMap<(String, String, String), Vec<Name>> = BTreeMap::new();
    for ((from, to), names) in krate.edges() {
        let (user, used) = (krate.top_level_name(from), krate.top_level_name(to));
        let (Some(&user_layer), Some(&used_layer)) = (layer_of.get(user), layer_of.get(used)) else { continue };
        if user != used && used_layer >= user_layer {
            let key = (krate.files[from].display_path.clone(), user.to_string(), used.to_string());
            upward.entry(key).or_default().extend(names);
        }
    }
    for ((path, user, used), names) in upward {
        let (user_layer, used_layer) = (layer_of[user.as_str()] + 1, layer_of[used.as_str()] + 1);
        let relation = if user_layer == used_layer { "the same layer".to_string() } else { format!("layer {used_layer}, above") };
        problems.push(format!(
            "crate `{}`: `{user}` (layer {user_layer}) names `{used}` ({relation}): {}",
            krate.name,
            describe_names(&path, &names)
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Sizes.

#[derive(Debug, PartialEq)]
struct SizeException {
    path: String,
    function: Option<String>,
    line: usize,
}

fn size_exceptions(markdown: &str) -> Result<Vec<SizeException>, Vec<String>> {
    let (mut exceptions, mut problems) = (Vec::<SizeException>::new(), Vec::new());
    for (line, text) in fenced_blocks(markdown, "size-exceptions").into_iter().flatten() {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let separated = [" — ", " -- ", " - "].iter().find_map(|separator| text.split_once(separator));
        let Some((entry, _reason)) = separated.filter(|(_, reason)| !reason.trim().is_empty()) else {
            problems.push(format!("ARCHITECTURE.md:{line}: `{text}` gives no reason: write `path — why it may be long`"));
            continue;
        };
        let entry = entry.trim().trim_matches('`');
        let (path, function) = match entry.split_once("::") {
            Some((path, function)) => (path.to_string(), Some(function.to_string())),
            None => (entry.to_string(), None),
        };
        let exception = SizeException { path, function, line };
        if let Some(earlier) = exceptions.iter().find(|earlier| earlier.path == exception.path && earlier.function == exception.function) {
            problems.push(format!("ARCHITECTURE.md:{line}: `{entry}` is already listed on line {}: remove one", earlier.line));
            continue;
        }
        exceptions.push(exception);
    }
    if problems.is_empty() { Ok(exceptions) } else { Err(problems) }
}

/// `files` are (path from the repository root, text).
fn size_problems(files: &[(String, String)], exceptions: &[SizeException]) -> Vec<String> {
    let excepted = |path: &str, function: Option<&str>| {
        exceptions.iter().any(|exception| exception.path == path && exception.function.as_deref() == function)
    };
    let mut problems = Vec::new();
    for (path, text) in files {
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES && !excepted(path, None) {
            problems.push(format!("{path}: {lines} lines (limit {MAX_FILE_LINES})"));
        }
        for function in parse(&lex(text)).functions {
            let lines = function.lines();
            if lines > MAX_FUNCTION_LINES && !excepted(path, Some(&function.name)) {
                problems.push(format!("{path}:{} fn {}: {lines} lines (limit {MAX_FUNCTION_LINES})", function.first_line, function.name));
            }
        }
    }
    problems.extend(stale_exceptions(files, exceptions));
    problems
}

fn stale_exceptions(files: &[(String, String)], exceptions: &[SizeException]) -> Vec<String> {
    let mut problems = Vec::new();
    for exception in exceptions {
        let Some((_, text)) = files.iter().find(|(path, _)| *path == exception.path) else {
            problems.push(format!(
                "ARCHITECTURE.md:{}: `{}` is not a file under crates/*/src or crates/*/benches: remove the exception",
                exception.line, exception.path
            ));
            continue;
        };
        match &exception.function {
            None => {
                let lines = text.lines().count();
                if lines <= MAX_FILE_LINES {
                    problems.push(format!(
                        "ARCHITECTURE.md:{}: `{}` is {lines} lines now, within the limit of {MAX_FILE_LINES}: remove the exception",
                        exception.line, exception.path
                    ));
                }
            }
            Some(function) => {
                let spans: Vec<FunctionSpan> = parse(&lex(text)).functions.into_iter().filter(|span| span.name == *function).collect();
                let longest = spans.iter().map(FunctionSpan::lines).max();
                match longest {
                    None => problems.push(format!(
                        "ARCHITECTURE.md:{}: `{}` has no function `{function}`: remove the exception",
                        exception.line, exception.path
                    )),
                    Some(lines) if lines <= MAX_FUNCTION_LINES => problems.push(format!(
                        "ARCHITECTURE.md:{}: `{}::{function}` is {lines} lines now, within the limit of {MAX_FUNCTION_LINES}: remove the exception",
                        exception.line, exception.path
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The reader itself, on snippets.

mod tests {
    use super::*;

    /// A crate of `files` (path under src/, text), answering which files `file` names.
    fn named_by(files: &[(&str, &str)], file: &str) -> Vec<String> {
        let krate = Crate::new("example", "", files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect());
        let mut named: Vec<String> = krate
            .edges()
            .keys()
            .filter(|(from, _)| krate.files[*from].display_path == file)
            .map(|(_, to)| krate.files[*to].display_path.clone())
            .collect();
        named.sort();
        named
    }

    const SKELETON: [(&str, &str); 6] = [
        ("lib.rs", "mod a; mod b; mod c;"),
        ("a.rs", "mod inner; mod other;"),
        ("a/inner.rs", ""),
        ("a/other.rs", ""),
        ("b.rs", ""),
        ("c.rs", ""),
    ];

    #[test]
    fn edges_of_snippets() {
        let cases: &[(&str, &str, &[&str])] = &[
            // Paths from the crate root belong to the longest prefix that is a module file.
            ("c.rs", "use crate::a::inner::Item;", &["a/inner.rs"]),
            ("c.rs", "use crate::a::Item;", &["a.rs"]),
            ("c.rs", "fn f() { crate::Item::new() }", &["lib.rs"]),
            ("c.rs", "use crate::{a::X, b::{self, Y}};", &["a.rs", "b.rs"]),
            ("c.rs", "use crate::a as outer; fn f() { outer::inner::g(); }", &["a.rs", "a/inner.rs"]),
            ("c.rs", "use crate::b; fn f() { b::g() }", &["b.rs"]),
            ("c.rs", "pub(crate) use crate::a::X; pub(in crate::b) fn f() {}", &["a.rs"]),
            // `super`: a sibling's file when it names a sibling, else the parent's own file.
            ("a/inner.rs", "use super::*;", &["a.rs"]),
            ("a/inner.rs", "fn f() { super::Thing::new() }", &["a.rs"]),
            ("a/inner.rs", "use super::other::X;", &["a/other.rs"]),
            ("a/inner.rs", "fn f() { super::super::b::g() }", &["b.rs"]),
            // Bare paths: only a child module of the file (or a name a `use` brought in) is ours.
            ("a.rs", "mod inner; fn f() { inner::g() }", &["a/inner.rs"]),
            ("c.rs", "fn f() { inner::g(); std::fmt::Error; ::a::X; }", &[]),
            ("c.rs", "use b::X; use ::a::Y;", &[]),
            ("lib.rs", "mod a; pub use a::inner::Item; pub use b::X;", &["a/inner.rs", "b.rs"]),
            // Declaring a child module is not an edge.
            ("lib.rs", "mod a; mod b; #[cfg(test)] mod c;", &[]),
            // A unit test module counts like its file, and sees the file's names through `use super::*`.
            ("a.rs", "#[cfg(test)] mod tests { use super::*; use crate::b::X; fn t() { inner::g(); } }", &["a/inner.rs", "b.rs"]),
            ("c.rs", "mod local { pub fn g() {} } fn f() { self::local::g(); local::g() }", &[]),
            // Comments, strings and character literals are not code.
            ("c.rs", "// crate::a::X\n/// crate::a::X\n/* crate::a /* nested */ crate::b */", &[]),
            ("c.rs", r##"const S: &str = "crate::a::X \" crate::b"; const R: &str = r#"crate::a "x" crate::b"#;"##, &[]),
            ("c.rs", r##"const B: &[u8] = br#"crate::a"#; const T: &[u8] = b"crate::a"; const U: &CStr = c"crate::b";"##, &[]),
            ("c.rs", "const Q: char = '\"'; fn f() { crate::b::g() } const O: char = '{';", &["b.rs"]),
            ("c.rs", "const E: char = '\\''; const X: u8 = b'\\''; fn f() { crate::b::g() }", &["b.rs"]),
            // A lifetime is not the start of a character literal.
            (
                "c.rs",
                "fn f<'a>(x: &'a str) -> &'a str { crate::b::g(x) } fn h() { 'outer: loop { crate::a::k(); break 'outer; } }",
                &["a.rs", "b.rs"],
            ),
            // Macros: an invocation names its path; a macro_rules body is skipped.
            ("c.rs", "fn f() { crate::a::mac!(); crate::log!(\"x\"); format!(\"{}\", crate::b::X) }", &["a.rs", "b.rs", "lib.rs"]),
            ("c.rs", "macro_rules! m { () => { crate::a::X } }", &[]),
            // `use<…>` (precise capturing) is not a `use` declaration; raw identifiers are identifiers.
            ("c.rs", "fn f<'a>() -> impl Sized + use<'a> { crate::b::r#match() }", &["b.rs"]),
        ];
        for (file, source, expected) in cases {
            let files: Vec<(&str, &str)> =
                SKELETON.iter().map(|&(path, text)| if path == *file { (path, *source) } else { (path, text) }).collect();
            assert_eq!(named_by(&files, file), *expected, "{file}: {source}");
        }
    }

    #[test]
    fn function_spans_of_a_snippet() {
        let source = "fn short() {}\n\
                      trait T {\n\
                          fn declared(&self);\n\
                          fn provided(&self) {\n\
                              let s = \"}\";\n\
                          }\n\
                      }\n\
                      fn outer() {\n\
                          fn inner() {\n\
                          }\n\
                          let c = '}';\n\
                      }\n\
                      macro_rules! m { () => { fn hidden() {} } }\n\
                      fn pointer(f: fn(u8) -> u8) -> [u8; { 2 }] where u8: Copy {\n\
                          [f(1), 2]\n\
                      }\n";
        let spans: Vec<(String, usize, usize)> =
            parse(&lex(source)).functions.into_iter().map(|span| (span.name, span.first_line, span.last_line)).collect();
        let expected = [("short", 1, 1), ("provided", 4, 6), ("outer", 8, 12), ("pointer", 14, 16)];
        assert_eq!(spans, expected.map(|(name, first, last)| (name.to_string(), first, last)));
    }

    #[test]
    fn cycles_are_reported_with_the_names_that_tie_them() {
        let files = [
            ("lib.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use crate::b::Low;"),
            ("b.rs", "fn f() { crate::a::High::new() }\nfn g() { crate::c::x() }"),
            ("c.rs", "use crate::a::High;"),
        ];
        let krate = Crate::new("example", "src/", files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect());
        let problems = cycle_problems(&krate, &krate.edges());
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let expected = "crate `example`: 3 files import each other (2 cycle(s) cover every edge among them): src/a.rs, src/b.rs, src/c.rs\n  \
            cycle 1: a.rs → b.rs → a.rs\n      \
            a.rs → b.rs: src/a.rs:1 `crate::b::Low`\n      \
            b.rs → a.rs: src/b.rs:1 `crate::a::High::new`\n  \
            cycle 2: b.rs → c.rs → a.rs → b.rs\n      \
            b.rs → c.rs: src/b.rs:2 `crate::c::x`\n      \
            c.rs → a.rs: src/c.rs:1 `crate::a::High`\n      \
            a.rs → b.rs: src/a.rs:1 `crate::b::Low`";
        assert_eq!(problems[0], expected);
    }

    #[test]
    fn layer_tables_are_read_and_checked() {
        let markdown = "# Doc\n```rust\nexample: not < a < table\n```\n\n```layers\nexample: low < middle other < lib\n```\n";
        let tables = layer_tables(markdown).expect("a readable table");
        assert_eq!(
            tables,
            [LayerTable {
                crate_name: "example".into(),
                groups: vec![vec!["low".into()], vec!["middle".into(), "other".into()], vec!["lib".into()]],
                line: 7
            }]
        );
        let files = [
            ("lib.rs", "mod low; mod middle; mod other; mod extra; pub use middle::X;"),
            ("low.rs", "use crate::middle::Up;"),
            ("middle.rs", "use crate::low::Down; use crate::other::Beside;"),
            ("other.rs", "fn f() { crate::low::g() }"),
            ("extra.rs", ""),
        ];
        let krate = Crate::new("example", "src/", files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect());
        let mut table = tables.into_iter().next().expect("one table");
        table.groups[1].push("ghost".into());
        let problems = layer_problems(&krate, &table);
        assert_eq!(
            problems,
            [
                "ARCHITECTURE.md:7: `example` does not list its top-level module `extra` (extra.rs): add it to the layer it belongs in",
                "ARCHITECTURE.md:7: `example` lists `ghost`, but crates/example/src has no ghost.rs: remove it from the table",
                "crate `example`: `low` (layer 1) names `middle` (layer 2, above): src/low.rs:1 `crate::middle::Up`",
                "crate `example`: `middle` (layer 2) names `other` (the same layer): src/middle.rs:1 `crate::other::Beside`",
            ]
        );
        assert!(layer_tables("no table here").is_err());
        assert!(layer_tables("```layers\nexample low < lib\n```").is_err());
    }

    #[test]
    fn sizes_and_their_exceptions() {
        let long_function = format!("fn long() {{\n{}}}\n", "    step();\n".repeat(MAX_FUNCTION_LINES - 1));
        let long_file = "// line\n".repeat(MAX_FILE_LINES + 1);
        let files = [
            ("crates/x/src/a.rs".to_string(), long_function.clone()),
            ("crates/x/src/b.rs".to_string(), long_file),
            ("crates/x/src/c.rs".to_string(), long_function),
            ("crates/x/src/d.rs".to_string(), "fn short() {}\n".to_string()),
        ];
        let markdown = "```size-exceptions\n\
                        crates/x/src/b.rs — a table of cases\n\
                        `crates/x/src/c.rs::long` — one match over every action\n\
                        crates/x/src/d.rs — no longer long\n\
                        crates/x/src/d.rs::short — never long\n\
                        crates/x/src/d.rs::gone — renamed since\n\
                        crates/x/src/e.rs — deleted since\n\
                        ```\n";
        let exceptions = size_exceptions(markdown).expect("readable exceptions");
        assert_eq!(
            size_problems(&files, &exceptions),
            [
                format!("crates/x/src/a.rs:1 fn long: {} lines (limit {MAX_FUNCTION_LINES})", MAX_FUNCTION_LINES + 1),
                format!(
                    "ARCHITECTURE.md:4: `crates/x/src/d.rs` is 1 lines now, within the limit of {MAX_FILE_LINES}: remove the exception"
                ),
                format!(
                    "ARCHITECTURE.md:5: `crates/x/src/d.rs::short` is 1 lines now, within the limit of {MAX_FUNCTION_LINES}: remove the exception"
                ),
                "ARCHITECTURE.md:6: `crates/x/src/d.rs` has no function `gone`: remove the exception".to_string(),
                "ARCHITECTURE.md:7: `crates/x/src/e.rs` is not a file under crates/*/src or crates/*/benches: remove the exception"
                    .to_string(),
            ]
        );
        let unreasoned =
            size_exceptions("```size-exceptions\ncrates/x/src/b.rs\ncrates/x/src/b.rs — twice\ncrates/x/src/b.rs — twice\n```");
        assert_eq!(unreasoned.expect_err("two problems").len(), 2);
    }
}
