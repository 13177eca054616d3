//! What a path under a notebook is, as the proxy judges it (fully decoded): a read that may go
//! to Jupyter while its record is written, a kernel's channels, a terminal's input.

use axum::http::Method;

/// Whether a request is a read of one of Jupyter's own routes that change nothing (its API's
/// listings and contents, files, its pages and their assets): only those go to Jupyter while
/// their record is written. A server extension's route (a proxy, a refresh that fetches) is
/// recorded first, as every write is; so is a contents read for which Jupyter writes (see
/// `contents_read_that_writes`; review findings).
pub(super) fn read_only(method: &Method, rest: &str, query: &str) -> bool {
    if contents_read_that_writes(rest, query) {
        return false;
    }
    const READS: [&str; 14] = [
        "api/status",
        "api/contents",
        "api/kernels",
        "api/kernelspecs",
        "api/sessions",
        "api/me",
        "files/",
        "static/",
        "kernelspecs/",
        "lab/api/settings",
        "lab/api/translations",
        "lab/api/workspaces",
        "lab/static/",
        "lab/extensions/",
    ];
    let page = rest == "lab" || rest == "lab/" || rest.starts_with("lab/tree/") || rest.starts_with("lab/workspaces/");
    (*method == Method::GET || *method == Method::HEAD) && (page || READS.iter().any(|r| rest.starts_with(r)))
}

/// Whether Jupyter may write while it answers a contents-API read: when it reads a path as a
/// notebook, which renames files when the notebook does not parse and a `.~` copy of it is
/// there (any `type` other than `file` or `directory`, as Tornado reads a query, `query` as
/// the browser sent it: the key exactly, the value with `+` and control characters as spaces,
/// then trimmed; or none on a path that names an `.ipynb`, in any case), or lists a path's
/// checkpoints (it makes their directory).
fn contents_read_that_writes(rest: &str, query: &str) -> bool {
    if !rest.starts_with("api/contents") {
        return false;
    }
    if rest.trim_end_matches('/').ends_with("/checkpoints") {
        return true;
    }
    let types: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "type")
        .map(|(_, value)| value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned())
        .collect();
    if types.is_empty() { rest.to_ascii_lowercase().contains(".ipynb") } else { types.iter().any(|t| t != "file" && t != "directory") }
}

/// The kernel whose channels `rest` (the path, fully decoded) opens, if it opens any.
pub(super) fn kernel_of(rest: &str) -> Option<&str> {
    let kernel = rest.strip_prefix("api/kernels/")?.strip_suffix("/channels")?;
    (!kernel.is_empty() && !kernel.contains('/')).then_some(kernel)
}

/// The terminal whose input `rest` (the path, fully decoded) opens, if it opens one.
pub(super) fn terminal_of(rest: &str) -> Option<&str> {
    let terminal = rest.strip_prefix("terminals/websocket/")?.trim_end_matches('/');
    (!terminal.is_empty() && !terminal.contains('/')).then_some(terminal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding: `GET api/contents/<p>?type=notebook` of a file that does not parse as a
    /// notebook, beside a `.~<p>` (a kernel can make one), has Jupyter rename both: a change
    /// that reached Jupyter before its record was durable. Such a read is recorded first.
    #[test]
    fn a_contents_read_as_a_notebook_is_recorded_before_it_reaches_jupyter() {
        for (path, query) in [
            ("api/contents/data.csv", "type=file&content=1"),
            ("api/contents/data.csv", ""),
            ("api/contents/", "content=1"),
            ("api/contents/d", "type=directory"),
        ] {
            assert!(read_only(&Method::GET, path, query), "{path}?{query}");
        }
        // Tornado's reading of the query: `+` a space, control characters spaces, trimmed; a
        // path of a notebook without a type is read as one (review of the first mend).
        for (path, query) in [
            ("api/contents/data.csv", "type=notebook"),
            ("api/contents/data.csv", "content=1&type=notebook"),
            ("api/contents/data.csv", "type=file&type=notebook"),
            ("api/contents/data.csv", "type=notebook+"),
            ("api/contents/data.csv", "type=%20notebook"),
            ("api/contents/data.csv", "type=notebook%01"),
            ("api/contents/data.csv", "type=Notebook"),
            ("api/contents/x.ipynb", ""),
            ("api/contents/x.IPYNB", "content=1"),
            // Tornado does not trim a key: ` type` is no type, and x.ipynb a notebook's path.
            ("api/contents/x.ipynb", "+type=file"),
            ("api/contents/x.ipynb", "type%09=file"),
            // Listing checkpoints makes their directory.
            ("api/contents/d/data.csv/checkpoints", ""),
        ] {
            assert!(!read_only(&Method::GET, path, query), "{path}?{query}");
        }
        assert!(!read_only(&Method::POST, "api/contents/data.csv", ""));
    }
}
