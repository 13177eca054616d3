//! A request's states and the only moves between them, and where its files are kept.

/// The bucket the airlock keeps its copies in: reachable only through the airlock's actions.
pub(super) const AIRLOCK_BUCKET: &str = "datasandbox-airlock";

/// Where a request's id goes when it changes state, for the pages open on other nodes.
pub(super) const CHANGES_CHANNEL: &str = "datasandbox_airlock";

/// Whether `path` is a plain relative path a file may have in a request (or an archive): 1 to
/// 255 printable ASCII characters (no invisible or direction-changing character can make a
/// name look like another), no `.`, `..` or empty segment, no `\`, no spaces around a segment.
pub(super) fn is_plain_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 255
        && !path.starts_with('/')
        && path.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != ".." && segment.trim() == segment)
        && path.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
}

crate::core::codec::stored_as_text! {
    /// Where a request is; the text is what the table keeps and the API shows.
    pub(super) enum RequestState {
        Draft = "draft",
        Submitted = "submitted",
        Scanning = "scanning",
        Checked = "checked",
        Blocked = "blocked",
        InReview = "in_review",
        ChangesRequested = "changes_requested",
        Approved = "approved",
        Rejected = "rejected",
        Released = "released",
        Withdrawn = "withdrawn",
        Revoked = "revoked",
        Expired = "expired",
    }
}

impl RequestState {
    /// The only transitions there are; every other is refused (409) and changes nothing.
    pub(super) fn may_become(self, to: RequestState) -> bool {
        use RequestState as S;
        matches!(
            (self, to),
            (S::Draft, S::Submitted | S::Withdrawn)
                | (S::Submitted, S::Scanning)
                | (S::Scanning, S::Checked | S::Blocked)
                | (S::Checked, S::InReview)
                | (S::InReview, S::ChangesRequested | S::Approved | S::Rejected)
                | (S::ChangesRequested, S::Submitted | S::Withdrawn)
                | (S::Approved, S::Released)
                | (S::Released, S::Revoked | S::Expired)
        )
    }

    /// Whether the researcher may still change the request's files.
    pub(super) fn is_editable(self) -> bool {
        matches!(self, RequestState::Draft | RequestState::ChangesRequested)
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

crate::core::codec::stored_as_text! {
    /// Which way a request moves files.
    pub(super) enum Direction {
        Export = "EXPORT",
        Import = "IMPORT",
    }
}

crate::core::codec::stored_as_text! {
    /// A reviewer's vote.
    pub(super) enum Decision {
        Approve = "APPROVE",
        RequestChanges = "REQUEST_CHANGES",
        Reject = "REJECT",
    }
}

#[cfg(test)]
mod tests {
    use super::RequestState as S;

    const ALL: [S; 13] = [
        S::Draft,
        S::Submitted,
        S::Scanning,
        S::Checked,
        S::Blocked,
        S::InReview,
        S::ChangesRequested,
        S::Approved,
        S::Rejected,
        S::Released,
        S::Withdrawn,
        S::Revoked,
        S::Expired,
    ];

    #[test]
    fn exactly_the_issue_s_transitions_are_allowed() {
        let allowed: Vec<(&str, &str)> =
            ALL.iter().flat_map(|from| ALL.iter().filter(|to| from.may_become(**to)).map(|to| (from.as_str(), to.as_str()))).collect();
        assert_eq!(
            allowed,
            [
                ("draft", "submitted"),
                ("draft", "withdrawn"),
                ("submitted", "scanning"),
                ("scanning", "checked"),
                ("scanning", "blocked"),
                ("checked", "in_review"),
                ("in_review", "changes_requested"),
                ("in_review", "approved"),
                ("in_review", "rejected"),
                ("changes_requested", "submitted"),
                ("changes_requested", "withdrawn"),
                ("approved", "released"),
                ("released", "revoked"),
                ("released", "expired"),
            ]
        );
        for terminal in [S::Blocked, S::Rejected, S::Withdrawn, S::Revoked, S::Expired] {
            assert!(ALL.iter().all(|to| !terminal.may_become(*to)), "{terminal} is terminal");
        }
        for state in ALL {
            assert_eq!(S::parse(state.as_str()), Some(state));
        }
    }
}
