//! What the mount shows: a directory per dataset and the dataset's objects under it, built
//! whole from a listing the control plane sends. Inode `n` is entry `n - 1`; the root is 1.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use super::wire::Dataset;

pub(super) struct Tree {
    nodes: Vec<Node>,
}

pub(super) struct Node {
    pub parent: u64,
    pub kind: Kind,
}

pub(super) enum Kind {
    Dir(BTreeMap<OsString, u64>),
    File(FileEntry),
}

pub(super) struct FileEntry {
    pub dataset: String,
    pub key: String,
    pub size: u64,
    pub modified_ms: i64,
    pub passthrough: bool,
}

pub(super) const ROOT: u64 = 1;

impl Tree {
    pub fn empty() -> Tree {
        Tree { nodes: vec![Node { parent: ROOT, kind: Kind::Dir(BTreeMap::new()) }] }
    }

    /// The datasets as directories. A path with a component that is not plain, or one that
    /// would put a file where a directory is (or the other way round), is left out.
    pub fn of(datasets: &[Dataset]) -> Tree {
        let mut tree = Tree::empty();
        for dataset in datasets {
            let Some(top) = tree.dir(ROOT, OsStr::new(&dataset.name)) else { continue };
            for file in &dataset.files {
                let parts: Vec<&str> = file.path.split('/').collect();
                let plain = parts.iter().all(|p| !p.is_empty() && *p != "." && *p != "..");
                let Some((name, dirs)) = parts.split_last().filter(|_| plain) else { continue };
                let mut at = Some(top);
                for dir in dirs {
                    at = at.and_then(|parent| tree.dir(parent, OsStr::new(dir)));
                }
                let Some(parent) = at else { continue };
                let entry = FileEntry {
                    dataset: dataset.name.clone(),
                    key: file.key.clone(),
                    size: file.size,
                    modified_ms: file.modified_ms,
                    passthrough: dataset.passthrough,
                };
                tree.add(parent, OsStr::new(name), Kind::File(entry));
            }
        }
        tree
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        usize::try_from(ino).ok().and_then(|i| i.checked_sub(1)).and_then(|i| self.nodes.get(i))
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Option<u64> {
        match &self.get(parent)?.kind {
            Kind::Dir(children) => children.get(name).copied(),
            Kind::File(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The directory `name` under `parent`, made if missing; `None` if a file holds the name.
    fn dir(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        match self.lookup(parent, name) {
            Some(ino) => matches!(self.get(ino)?.kind, Kind::Dir(_)).then_some(ino),
            None => self.add(parent, name, Kind::Dir(BTreeMap::new())),
        }
    }

    /// Adds a child unless the name is taken; its inode.
    fn add(&mut self, parent: u64, name: &OsStr, kind: Kind) -> Option<u64> {
        let ino = self.nodes.len() as u64 + 1;
        let Kind::Dir(children) = &mut self.nodes.get_mut(usize::try_from(parent).ok()? - 1)?.kind else { return None };
        if children.contains_key(name) {
            return None;
        }
        children.insert(name.to_owned(), ino);
        self.nodes.push(Node { parent, kind });
        Some(ino)
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::DatasetFile;
    use super::*;

    fn file(key: &str, path: &str) -> DatasetFile {
        DatasetFile { key: key.into(), path: path.into(), size: 1, modified_ms: 0 }
    }

    #[test]
    fn datasets_become_directories_and_bad_paths_are_left_out() {
        let tree = Tree::of(&[Dataset {
            name: "trials".into(),
            passthrough: false,
            files: vec![
                file("p/a.csv", "a.csv"),
                file("p/sub/b.csv", "sub/b.csv"),
                file("p/../x", "../x"),
                file("p//y", "/y"),
                file("p/a.csv/z", "a.csv/z"),
                file("p/sub", "sub"),
            ],
        }]);
        let trials = tree.lookup(ROOT, OsStr::new("trials")).expect("the dataset");
        let a = tree.lookup(trials, OsStr::new("a.csv")).expect("a file");
        assert!(matches!(&tree.get(a).expect("node").kind, Kind::File(f) if f.key == "p/a.csv"));
        let sub = tree.lookup(trials, OsStr::new("sub")).expect("a directory");
        assert!(matches!(tree.get(sub).expect("node").kind, Kind::Dir(_)));
        assert!(tree.lookup(sub, OsStr::new("b.csv")).is_some());
        // Only the dataset directory, its two entries and sub's one: nothing else was made.
        assert_eq!(tree.len(), 5);
        assert!(tree.get(0).is_none() && tree.get(99).is_none());
    }
}
