//! Placeholder: this crate's content arrives with its issue.
