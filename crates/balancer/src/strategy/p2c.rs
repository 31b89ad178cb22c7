//! Power of two choices: two distinct random backends, the less loaded wins.
//!
//! Nearly as good as least connections at avoiding hot spots, without scanning every
//! backend, and without least connections' herd behaviour (every balancer choosing the
//! same momentarily idle backend). The randomness is SplitMix64 seeded from the config,
//! one state per worker, so a run is repeatable and the workers do not contend.

use super::hash::fmix64;
use super::{PerWorker, Pick, Selection, less_loaded};
use crate::backend::Backend;

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Tries before falling back to a scan when `accept` keeps rejecting the sampled pair.
const TRIES: usize = 4;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct PowerOfTwoChoices {
    rng: PerWorker,
}

impl PowerOfTwoChoices {
    pub(crate) fn new(seed: u64, workers: usize) -> PowerOfTwoChoices {
        PowerOfTwoChoices {
            rng: PerWorker::new(workers, |i| seed ^ fmix64(i as u64 + 1)),
        }
    }

    fn next(&self, worker: usize) -> u64 {
        let state = self
            .rng
            .advance(worker, |s| s.wrapping_add(GAMMA))
            .wrapping_add(GAMMA);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn load(b: &Backend, worker: usize) -> (u64, u32) {
    (b.load(worker), b.core.weight())
}

impl Selection for PowerOfTwoChoices {
    fn select(
        &self,
        backends: &[Backend],
        pick: Pick,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        match n {
            0 => return None,
            1 => return accept(&backends[0]).then_some(0),
            _ => {}
        }
        for _ in 0..TRIES {
            let r = self.next(pick.worker);
            let a = (r % n as u64) as usize;
            let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
            match (accept(&backends[a]), accept(&backends[b])) {
                (true, true) => {
                    let ((la, wa), (lb, wb)) = (
                        load(&backends[a], pick.worker),
                        load(&backends[b], pick.worker),
                    );
                    return Some(if less_loaded(lb, wb, la, wa) { b } else { a });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        // Most backends are rejected: take the least loaded of those accepted.
        let mut best: Option<(usize, u64, u32)> = None;
        for (i, b) in backends.iter().enumerate() {
            let (l, w) = load(b, pick.worker);
            if best.is_none_or(|(_, bl, bw)| less_loaded(l, w, bl, bw)) && accept(b) {
                best = Some((i, l, w));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{backends, histogram};
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn equal_loads_spread_evenly() {
        let b = backends(&[1, 1, 1, 1]);
        for count in histogram(&PowerOfTwoChoices::new(7, 1), &b, 40_000) {
            assert!((9_000..=11_000).contains(&count), "{count}");
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let b = backends(&[1, 1, 1, 1, 1]);
        let run = |seed| histogram(&PowerOfTwoChoices::new(seed, 1), &b, 50);
        let picks = |seed| {
            let s = PowerOfTwoChoices::new(seed, 1);
            (0..50)
                .map(|_| s.select(&b, Pick::default(), &mut |_| true).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_eq!(picks(42), picks(42));
        assert_ne!(picks(42), picks(43));
    }

    #[test]
    fn the_most_loaded_backend_is_never_chosen() {
        let b = backends(&[1, 1, 1]);
        b[2].local(0).stats.active.store(10, Relaxed);
        let counts = histogram(&PowerOfTwoChoices::new(1, 1), &b, 3_000);
        assert_eq!(counts[2], 0, "{counts:?}");
    }

    #[test]
    fn falls_back_to_a_scan_when_most_are_rejected() {
        let b = backends(&[1; 10]);
        let s = PowerOfTwoChoices::new(3, 1);
        for _ in 0..100 {
            assert_eq!(
                s.select(&b, Pick::default(), &mut |x| x.id() == "w7"),
                Some(6)
            );
        }
        assert_eq!(s.select(&b, Pick::default(), &mut |_| false), None);
    }
}
