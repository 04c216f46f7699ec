//! Eq. 1's adapter choice per scenario, computed once and kept until the scenario's members
//! change: keyed by the scenario's id and its stored `revision`, which every write that changes
//! the members (or a member's images) bumps in the same transaction.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::AdapterSelection;

/// At most this many scenarios' choices are kept; past it the map is cleared (cheap to refill:
/// one mean and one cosine argmax each).
const MAX_ENTRIES: usize = 4_096;

#[derive(Debug, Default)]
pub struct ScenarioAdapters {
    /// Scenario id → (revision, the choice; `None` when Eq. 1 gave none).
    entries: Mutex<HashMap<String, (u64, Option<AdapterSelection>)>>,
}

impl ScenarioAdapters {
    /// The cached choice for `scenario` at `revision`, or `compute`'s, stored. The bool is
    /// whether it came from the cache.
    pub fn get_or_compute(
        &self,
        scenario: &str,
        revision: u64,
        compute: impl FnOnce() -> Option<AdapterSelection>,
    ) -> (Option<AdapterSelection>, bool) {
        if let Some((cached_revision, choice)) = self.lock().get(scenario)
            && *cached_revision == revision
        {
            return (choice.clone(), true);
        }
        let choice = compute();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(scenario.to_owned(), (revision, choice.clone()));
        (choice, false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Option<AdapterSelection>)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_is_computed_once_per_revision() {
        let cache = ScenarioAdapters::default();
        let pick = |name: &str| AdapterSelection {
            name: name.into(),
            similarity: 0.5,
        };
        let (first, hit) = cache.get_or_compute("family", 1, || Some(pick("meta-1")));
        assert_eq!((first.unwrap().name.as_str(), hit), ("meta-1", false));
        let (again, hit) = cache.get_or_compute("family", 1, || panic!("recomputed"));
        assert_eq!((again.unwrap().name.as_str(), hit), ("meta-1", true));
        let (changed, hit) = cache.get_or_compute("family", 2, || Some(pick("meta-2")));
        assert_eq!((changed.unwrap().name.as_str(), hit), ("meta-2", false));
    }
}
