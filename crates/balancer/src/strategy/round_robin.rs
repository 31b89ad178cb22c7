//! Round robin: each backend in turn, weights ignored.

use super::{PerWorker, Pick, Selection};
use crate::backend::Backend;

/// Each backend in turn. Each worker keeps its own cursor, starting at a different
/// offset, so the workers interleave instead of marching in step.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    cursors: PerWorker,
}

impl RoundRobin {
    pub(crate) fn new(workers: usize) -> RoundRobin {
        RoundRobin {
            cursors: PerWorker::new(workers, |i| i as u64),
        }
    }
}

impl Selection for RoundRobin {
    fn select(
        &self,
        backends: &[Backend],
        pick: Pick,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        // Rejected turns are consumed, so the backend after a rejected one does not get a
        // double share.
        (0..n)
            .map(|_| self.cursors.advance(pick.worker, |c| c.wrapping_add(1)) as usize % n)
            .find(|&i| accept(&backends[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{backends, histogram};

    #[test]
    fn spreads_evenly_and_ignores_weights() {
        let b = backends(&[1, 5, 1]);
        assert_eq!(histogram(&RoundRobin::new(1), &b, 300), vec![100, 100, 100]);
    }

    #[test]
    fn rejected_backends_pass_their_turn_to_the_next() {
        let b = backends(&[1, 1, 1]);
        let rr = RoundRobin::new(1);
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            let i = rr
                .select(&b, Pick::default(), &mut |x| x.id() != "w2")
                .unwrap();
            counts[i] += 1;
        }
        assert_eq!(counts, [150, 0, 150]);
    }

    #[test]
    fn none_when_all_are_rejected_or_there_are_none() {
        let b = backends(&[1, 1]);
        assert_eq!(
            RoundRobin::new(1).select(&b, Pick::default(), &mut |_| false),
            None
        );
        assert_eq!(
            RoundRobin::new(1).select(&[], Pick::default(), &mut |_| true),
            None
        );
    }
}
