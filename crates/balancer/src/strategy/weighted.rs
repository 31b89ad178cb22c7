//! Smooth weighted round robin, as nginx does it, precomputed.
//!
//! nginx's algorithm: every pick, each backend's `current` grows by its weight, the
//! largest `current` wins and is lowered by the total weight. Weights 5, 1, 1 give
//! `a a b a c a a` rather than `a a a a a b c`: shares follow the weights and a heavy
//! backend's turns are spread out. The sequence repeats every `sum(weights)` picks
//! (after dividing by their gcd), so it is computed once when the backend set or a
//! weight changes, and a pick is a per-worker cursor step. A rejected backend's turns are
//! skipped; the others keep their relative shares.

use super::{PerWorker, Pick, Selection, gcd};
use crate::backend::Backend;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct WeightedRoundRobin {
    sequence: Box<[u32]>,
    cursors: PerWorker,
}

impl WeightedRoundRobin {
    pub(crate) fn new(backends: &[Backend], workers: usize) -> WeightedRoundRobin {
        let weights: Vec<u32> = backends.iter().map(|b| b.core.weight()).collect();
        let sequence = smooth_sequence(&weights).into_boxed_slice();
        let len = sequence.len().max(1) as u64;
        // Workers start at different points of the sequence, spread over one period.
        let spread = len / workers.max(1) as u64;
        WeightedRoundRobin {
            sequence,
            cursors: PerWorker::new(workers, |i| i as u64 * spread),
        }
    }
}

/// One period of nginx's smooth weighted round robin over `weights` (indices).
pub(crate) fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence
}

impl Selection for WeightedRoundRobin {
    fn select(
        &self,
        backends: &[Backend],
        pick: Pick,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 || backends.is_empty() {
            return None;
        }
        // A rejected entry's turn is consumed, not handed to the next entry: over a
        // period every accepted backend still gets exactly its weight's share.
        (0..len)
            .map(|_| {
                self.sequence
                    [self.cursors.advance(pick.worker, |c| c.wrapping_add(1)) as usize % len]
                    as usize
            })
            .find(|&i| i < backends.len() && accept(&backends[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{backends, histogram};

    #[test]
    fn sequence_is_smooth_like_nginx() {
        assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(
            smooth_sequence(&[2, 2]),
            vec![0, 1],
            "weights are divided by their gcd"
        );
    }

    #[test]
    fn shares_follow_weights() {
        let b = backends(&[3, 1, 2]);
        assert_eq!(
            histogram(&WeightedRoundRobin::new(&b, 1), &b, 600),
            vec![300, 100, 200]
        );
    }

    #[test]
    fn rejected_backend_leaves_the_others_in_proportion() {
        let b = backends(&[3, 1, 2]);
        let s = WeightedRoundRobin::new(&b, 1);
        let mut counts = [0usize; 3];
        for _ in 0..600 {
            counts[s
                .select(&b, Pick::default(), &mut |x| x.id() != "w2")
                .unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert_eq!(counts, [360, 0, 240], "3:2 among the accepted");
    }
}
