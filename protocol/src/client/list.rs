//! The session list: summaries merged by `version`, so an older summary never
//! overwrites a newer one, and a deletion is never undone by a late update.

use crate::ids::{ProjectId, SessionId};
use crate::model::SessionSummary;
use crate::socket::ServerEvent;
use std::collections::HashMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionList {
    sessions: HashMap<SessionId, SessionSummary>,
    /// Deleted ids and the version of their deletion.
    deleted: HashMap<SessionId, u64>,
}

impl SessionList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a socket event; returns true when the list changed.
    pub fn apply(&mut self, event: &ServerEvent) -> bool {
        match event {
            ServerEvent::SessionCreated { session } | ServerEvent::SessionUpdated { session } => {
                self.upsert(session.clone())
            }
            ServerEvent::Subscribed { session, .. } => self.upsert(session.clone()),
            ServerEvent::SessionDeleted {
                session_id,
                version,
            } => self.remove(session_id, *version),
            _ => false,
        }
    }

    /// Keeps `s` unless the list holds the same or a newer version of it, or
    /// the session was deleted at a version at least as new.
    pub fn upsert(&mut self, s: SessionSummary) -> bool {
        if self.deleted.get(&s.id).is_some_and(|v| *v >= s.version) {
            return false;
        }
        match self.sessions.get(&s.id) {
            Some(have) if have.version >= s.version => false,
            _ => {
                self.deleted.remove(&s.id);
                self.sessions.insert(s.id.clone(), s);
                true
            }
        }
    }

    /// Removes a session; remembers the deletion so late updates stay out.
    pub fn remove(&mut self, id: &SessionId, version: u64) -> bool {
        let prev = self.deleted.entry(id.clone()).or_insert(version);
        *prev = (*prev).max(version);
        match self.sessions.get(id) {
            Some(have) if have.version <= version => {
                self.sessions.remove(id);
                true
            }
            _ => false,
        }
    }

    /// Merges a page fetched over REST.
    pub fn merge_page(&mut self, page: impl IntoIterator<Item = SessionSummary>) -> bool {
        let mut changed = false;
        for s in page {
            changed |= self.upsert(s);
        }
        changed
    }

    pub fn get(&self, id: &str) -> Option<&SessionSummary> {
        self.sessions.get(id)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Newest activity first (as the server lists them), ties by id.
    pub fn sorted(&self) -> Vec<&SessionSummary> {
        let mut v: Vec<&SessionSummary> = self.sessions.values().collect();
        v.sort_by(|a, b| {
            b.last_message_at
                .cmp(&a.last_message_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        v
    }

    /// Sessions grouped by project, each group newest first, groups ordered
    /// by their newest session.
    pub fn by_project(&self) -> Vec<(ProjectId, Vec<&SessionSummary>)> {
        let mut groups: Vec<(ProjectId, Vec<&SessionSummary>)> = Vec::new();
        for s in self.sorted() {
            match groups.iter_mut().find(|(p, _)| *p == s.project_id) {
                Some((_, v)) => v.push(s),
                None => groups.push((s.project_id.clone(), vec![s])),
            }
        }
        groups
    }

    /// The list after a refetch: the fetched page, plus what arrived while
    /// it was on its way (newer versions of its sessions, and sessions newer
    /// than anything in it). Sessions the page lacks that are older than it
    /// were deleted while away, or are past the first page: they leave.
    pub fn refreshed(&self, page: Vec<SessionSummary>) -> SessionList {
        let newest = page.iter().map(|s| s.last_message_at).max();
        let mut fresh = SessionList::new();
        fresh.merge_page(page);
        let kept: Vec<_> = self
            .sorted()
            .into_iter()
            .filter(|s| match fresh.get(&s.id) {
                Some(f) => f.version < s.version,
                None => newest.is_none_or(|n| s.last_message_at > n),
            })
            .cloned()
            .collect();
        fresh.merge_page(kept);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::time::Timestamp;
    use proptest::prelude::*;

    fn summary(id: u8, version: u64, activity: i64, title: &str) -> SessionSummary {
        SessionSummary {
            id: format!("00000000-0000-7000-8000-0000000000{id:02x}")
                .parse()
                .unwrap(),
            project_id: if id.is_multiple_of(2) {
                "default"
            } else {
                "other"
            }
            .parse()
            .unwrap(),
            title: title.into(),
            status: if version.is_multiple_of(2) {
                SessionStatus::Idle
            } else {
                SessionStatus::Running
            },
            permission_mode: PermissionMode::Default,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(activity),
            last_message_at: Timestamp::from_millis(activity),
            message_count: version,
            usage: Usage::default(),
            first_message_preview: "hi".into(),
            last_turn: None,
            agent_session_id: None,
            version,
        }
    }

    #[test]
    fn a_refetch_keeps_what_arrived_meanwhile_and_drops_what_went() {
        let mut old = SessionList::new();
        old.upsert(summary(1, 2, 2, "deleted while away"));
        old.upsert(summary(2, 5, 5, "kept"));
        old.upsert(summary(3, 9, 9, "created meanwhile"));
        let page = vec![
            summary(2, 4, 4, "kept"),
            summary(4, 3, 3, "new from the page"),
        ];
        let fresh = old.refreshed(page);
        let id = |n: u8| summary(n, 0, 0, "").id;
        assert!(fresh.get(&id(1)).is_none());
        assert_eq!(
            fresh.get(&id(2)).unwrap().version,
            5,
            "the newer version stays"
        );
        assert!(fresh.get(&id(3)).is_some());
        assert!(fresh.get(&id(4)).is_some());
    }

    #[test]
    fn older_summary_never_overwrites_newer() {
        let mut l = SessionList::new();
        assert!(l.upsert(summary(1, 3, 30, "new")));
        assert!(!l.upsert(summary(1, 2, 20, "old")));
        assert_eq!(l.get(&summary(1, 0, 0, "").id).unwrap().title, "new");
    }

    #[test]
    fn late_update_does_not_resurrect_deleted() {
        let mut l = SessionList::new();
        l.upsert(summary(1, 2, 20, "a"));
        let id = summary(1, 0, 0, "").id;
        assert!(l.remove(&id, 3));
        assert!(!l.upsert(summary(1, 2, 20, "a")));
        assert!(l.is_empty());
    }

    #[test]
    fn sorted_newest_activity_first_and_grouped() {
        let mut l = SessionList::new();
        l.upsert(summary(1, 1, 10, "a"));
        l.upsert(summary(2, 1, 30, "b"));
        l.upsert(summary(3, 1, 20, "c"));
        let titles: Vec<_> = l.sorted().iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["b", "c", "a"]);
        let groups = l.by_project();
        assert_eq!(groups[0].0, "default");
        assert_eq!(groups[1].1.len(), 2);
    }

    proptest! {
        /// Whatever order the events of several sessions arrive in, duplicated
        /// or not, the list ends as if they had arrived in order.
        #[test]
        fn any_order_reaches_the_same_list(
            perm in Just((0..24usize).collect::<Vec<_>>()).prop_shuffle(),
            dups in proptest::collection::vec(0..24usize, 0..10),
        ) {
            // Three sessions, eight versions each; session 2 is deleted at version 8.
            let mut events = Vec::new();
            for id in 0..3u8 {
                for v in 1..=8u64 {
                    if id == 2 && v == 8 {
                        events.push(ServerEvent::SessionDeleted { session_id: summary(id, 0, 0, "").id, version: 8 });
                    } else if v == 1 {
                        events.push(ServerEvent::SessionCreated { session: summary(id, v, v as i64, &format!("t{v}")) });
                    } else {
                        events.push(ServerEvent::SessionUpdated { session: summary(id, v, v as i64, &format!("t{v}")) });
                    }
                }
            }
            let mut in_order = SessionList::new();
            for e in &events { in_order.apply(e); }
            let mut shuffled = SessionList::new();
            for i in perm.iter().chain(dups.iter()) { shuffled.apply(&events[*i]); }
            prop_assert_eq!(in_order.sorted(), shuffled.sorted());
            prop_assert_eq!(shuffled.len(), 2);
        }
    }
}
