//! The agent's side of fencing: which incoming messages it obeys.

use crate::protocol::{Assignment, Fence};

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// From an older term, an older instance, or a manager that no longer holds us.
    Stale,
    /// A message id already seen (a redelivery).
    Duplicate,
}

/// What the agent has accepted so far.
#[derive(Debug, Default, Clone)]
pub struct Fencing {
    /// The highest assignment term accepted.
    pub term: u64,
    /// This process's instance, once a coordinator gave it one.
    pub instance: Option<u64>,
    pub assignment: Option<Assignment>,
    /// The coordinator (id, instance) and message id of the last assignment accepted.
    last_assignment: Option<(String, u64, u64)>,
    last_manager_msg: u64,
}

impl Fencing {
    /// Accepts an assignment that is newer than everything seen so far.
    pub fn assignment(&mut self, a: &Assignment) -> Result<(), Drop> {
        if a.term < self.term || self.instance.is_some_and(|i| a.instance < i) {
            return Err(Drop::Stale);
        }
        let repeated = self.last_assignment.as_ref().is_some_and(|(c, i, m)| {
            a.term == self.term && *c == a.coordinator && *i == a.coordinator_instance && a.msg_id <= *m
        });
        if repeated {
            return Err(Drop::Duplicate);
        }
        let same_manager = self
            .assignment
            .as_ref()
            .is_some_and(|old| old.manager == a.manager && old.manager_instance == a.manager_instance);
        if !same_manager {
            self.last_manager_msg = 0;
        }
        self.term = a.term;
        self.instance = Some(a.instance);
        self.last_assignment = Some((a.coordinator.clone(), a.coordinator_instance, a.msg_id));
        self.assignment = Some(a.clone());
        Ok(())
    }

    /// Accepts a message from the manager of the current assignment.
    pub fn from_manager(&mut self, f: &Fence) -> Result<(), Drop> {
        let Some(a) = &self.assignment else { return Err(Drop::Stale) };
        if f.manager != a.manager || f.manager_instance != a.manager_instance || f.term < a.term {
            return Err(Drop::Stale);
        }
        if Some(f.instance) != self.instance {
            return Err(Drop::Stale);
        }
        if f.msg_id <= self.last_manager_msg {
            return Err(Drop::Duplicate);
        }
        self.last_manager_msg = f.msg_id;
        Ok(())
    }

    /// Whether a shutdown is meant for this instance: a newer one exists.
    pub fn shutdown(&self, f: &Fence) -> bool {
        self.instance == Some(f.instance) && f.term >= self.term
    }

    /// The manager said it does not hold us: forget the assignment, keep the fencing state.
    pub fn unassign(&mut self) {
        self.assignment = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(term: u64, msg_id: u64, manager: &str) -> Assignment {
        Assignment {
            resource: "r".into(),
            instance: 5,
            manager: manager.into(),
            manager_instance: 1,
            manager_queue: format!("dmtree.manager.{manager}"),
            term,
            coordinator: "m1".into(),
            coordinator_instance: 1,
            msg_id,
            heartbeat_ms: 1000,
        }
    }

    fn fence(term: u64, msg_id: u64, manager: &str) -> Fence {
        Fence { resource: "r".into(), instance: 5, term, manager: manager.into(), manager_instance: 1, msg_id }
    }

    #[test]
    fn lower_terms_and_duplicates_are_dropped() {
        let mut f = Fencing::default();
        f.assignment(&assignment(3, 10, "m1")).unwrap();
        assert_eq!(f.assignment(&assignment(2, 99, "m2")), Err(Drop::Stale));
        assert_eq!(f.assignment(&assignment(3, 10, "m2")), Err(Drop::Duplicate));
        f.assignment(&assignment(3, 11, "m2")).unwrap();
        assert_eq!(f.from_manager(&fence(3, 1, "m1")), Err(Drop::Stale), "the old manager no longer speaks for us");
        f.from_manager(&fence(3, 1, "m2")).unwrap();
        assert_eq!(f.from_manager(&fence(3, 1, "m2")), Err(Drop::Duplicate));
        assert_eq!(f.from_manager(&fence(2, 2, "m2")), Err(Drop::Stale));
    }

    #[test]
    fn only_a_shutdown_for_this_instance_counts() {
        let mut f = Fencing::default();
        f.assignment(&assignment(3, 1, "m1")).unwrap();
        assert!(f.shutdown(&fence(3, 1, "m9")));
        assert!(!f.shutdown(&fence(2, 1, "m9")));
        assert!(!f.shutdown(&Fence { instance: 6, ..fence(3, 1, "m1") }));
    }
}
