//! Incidents open only once a finding repeats: the same root cause on the same instance in a
//! number of consecutive windows. Most findings on healthy windows are one-window blips (a
//! burst of slow exchanges, a single refused connect); requiring a repeat removes them at the
//! cost of reporting a real fault one window later.

use std::collections::HashMap;
use std::hash::Hash;

pub use netdx_api::DEFAULT_CONFIRM_WINDOWS;

/// How long a finding has shown without a break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streak {
    /// Consecutive windows, this one included.
    pub windows: u32,
    /// The caller's mark of the streak's first window (its start time or index).
    pub since: u64,
}

/// Streaks of findings (by key) over successive windows.
#[derive(Clone, Debug)]
pub struct Confirmation<K> {
    need: u32,
    streaks: HashMap<K, Streak>,
}

impl<K: Eq + Hash + Clone> Confirmation<K> {
    /// Confirms findings seen in `need` consecutive windows (at least 1: 1 reports at once).
    pub fn new(need: u32) -> Self {
        Confirmation {
            need: need.max(1),
            streaks: HashMap::new(),
        }
    }

    /// Windows a finding must show in.
    pub fn need(&self) -> u32 {
        self.need
    }

    /// Changes the windows required (a policy edit); streaks already running are kept.
    pub fn set_need(&mut self, need: u32) {
        self.need = need.max(1);
    }

    /// Feeds the keys found in the next window (`mark`: its start time or index). A key absent
    /// from it loses its streak. Returns every key of this window with its streak and whether
    /// it is confirmed, in the order given.
    pub fn observe(
        &mut self,
        keys: impl IntoIterator<Item = K>,
        mark: u64,
    ) -> Vec<(K, Streak, bool)> {
        let mut next: HashMap<K, Streak> = HashMap::with_capacity(self.streaks.len());
        let mut out = Vec::new();
        for k in keys {
            if let Some(s) = next.get(&k) {
                // The same key twice in one window counts once.
                out.push((k, *s, s.windows >= self.need));
                continue;
            }
            let s = match self.streaks.get(&k) {
                Some(s) => Streak {
                    windows: s.windows.saturating_add(1),
                    since: s.since,
                },
                None => Streak {
                    windows: 1,
                    since: mark,
                },
            };
            next.insert(k.clone(), s);
            out.push((k, s, s.windows >= self.need));
        }
        self.streaks = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_is_confirmed_only_after_repeating_without_a_break() {
        let mut c = Confirmation::new(2);
        fn confirmed(out: Vec<(&'static str, Streak, bool)>) -> Vec<(&'static str, u32, u64)> {
            out.into_iter()
                .filter(|(_, _, ok)| *ok)
                .map(|(k, s, _)| (k, s.windows, s.since))
                .collect()
        }
        assert_eq!(confirmed(c.observe(["a", "b"], 10)), vec![]);
        assert_eq!(confirmed(c.observe(["a"], 20)), vec![("a", 2, 10)]);
        // b broke its streak at 20: seen again it starts over.
        assert_eq!(
            confirmed(c.observe(["a", "b", "b"], 30)),
            vec![("a", 3, 10)]
        );
        assert_eq!(confirmed(c.observe(["b"], 40)), vec![("b", 2, 30)]);
        assert_eq!(confirmed(c.observe([], 50)), vec![]);
        assert_eq!(confirmed(c.observe(["b"], 60)), vec![]);
    }

    #[test]
    fn one_window_confirms_at_once_and_zero_means_one() {
        let mut c = Confirmation::new(0);
        assert_eq!(c.need(), 1);
        assert!(c.observe(["a"], 1)[0].2);
        c.set_need(3);
        assert!(!c.observe(["a"], 2)[0].2, "2 windows of the 3 now needed");
        assert!(c.observe(["a"], 3)[0].2);
    }
}
