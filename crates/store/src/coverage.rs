//! Coverage of imported history: which time range each imported file covers for each
//! mailbox. A search over imported records cannot tell "nothing happened" from "no file
//! covered that week"; coverage can, so gaps are shown instead of assumed away.

use mailaudit_model::Timestamp;
use serde::Serialize;

/// One imported file's span for one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageEntry {
    /// `import:<format>`.
    pub source: String,
    pub file: String,
    pub mailbox: String,
    /// The earliest and latest record time the file holds for the mailbox.
    pub first: Timestamp,
    pub last: Timestamp,
    /// Records the file holds for the mailbox (stored, already present, or not audited).
    pub records: u64,
    pub imported_at: Timestamp,
}

/// A merged span: overlapping files are one range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageRange {
    pub first: Timestamp,
    pub last: Timestamp,
    pub records: u64,
    pub files: u64,
}

/// The ranges of one source and mailbox, in time order; a gap lies between two ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageGroup {
    pub source: String,
    pub mailbox: String,
    pub ranges: Vec<CoverageRange>,
}

/// Groups entries by source and mailbox and merges overlapping spans.
pub fn coverage_ranges(entries: &[CoverageEntry]) -> Vec<CoverageGroup> {
    let mut sorted: Vec<&CoverageEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.mailbox, a.first).cmp(&(&b.source, &b.mailbox, b.first)));
    let mut groups: Vec<CoverageGroup> = Vec::new();
    for e in sorted {
        let same = groups
            .last()
            .is_some_and(|g| g.source == e.source && g.mailbox == e.mailbox);
        if !same {
            groups.push(CoverageGroup {
                source: e.source.clone(),
                mailbox: e.mailbox.clone(),
                ranges: Vec::new(),
            });
        }
        let Some(group) = groups.last_mut() else {
            continue;
        };
        match group.ranges.last_mut() {
            Some(r) if e.first <= r.last => {
                r.last = r.last.max(e.last);
                r.records += e.records;
                r.files += 1;
            }
            _ => group.ranges.push(CoverageRange {
                first: e.first,
                last: e.last,
                records: e.records,
                files: 1,
            }),
        }
    }
    groups
}
