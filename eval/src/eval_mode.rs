//! The columns of a run: the paper's four modes (Table 5) and the ablations beyond it.
//!
//! `full_recheck` is mode `full` with `recheck_mentioned: true`: a concept the question names
//! but the small model reported absent gets one more yes/no question to the large model. It
//! sits next to the paper's modes so a report shows what the second look buys.

use serde::{Deserialize, Serialize};
use shared_types::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMode {
    Full,
    NoReflection,
    NoDetector,
    Pure,
    /// `full` with the second look at mentioned misses.
    FullRecheck,
}

impl EvalMode {
    /// The mode sent in `/v1/ask`.
    pub fn wire_mode(self) -> Mode {
        match self {
            EvalMode::Full | EvalMode::FullRecheck => Mode::Full,
            EvalMode::NoReflection => Mode::NoReflection,
            EvalMode::NoDetector => Mode::NoDetector,
            EvalMode::Pure => Mode::Pure,
        }
    }

    /// Whether `/v1/ask` gets `recheck_mentioned: true`.
    pub fn rechecks_mentioned(self) -> bool {
        self == EvalMode::FullRecheck
    }
}

impl From<Mode> for EvalMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Full => EvalMode::Full,
            Mode::NoReflection => EvalMode::NoReflection,
            Mode::NoDetector => EvalMode::NoDetector,
            Mode::Pure => EvalMode::Pure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_modes_keep_their_names_and_the_ablation_asks_full() {
        for mode in [Mode::Full, Mode::NoReflection, Mode::NoDetector, Mode::Pure] {
            assert_eq!(
                serde_json::to_value(EvalMode::from(mode)).unwrap(),
                serde_json::to_value(mode).unwrap()
            );
            assert_eq!(EvalMode::from(mode).wire_mode(), mode);
            assert!(!EvalMode::from(mode).rechecks_mentioned());
        }
        assert_eq!(
            serde_json::to_value(EvalMode::FullRecheck).unwrap(),
            "full_recheck"
        );
        assert_eq!(EvalMode::FullRecheck.wire_mode(), Mode::Full);
        assert!(EvalMode::FullRecheck.rechecks_mentioned());
    }
}
