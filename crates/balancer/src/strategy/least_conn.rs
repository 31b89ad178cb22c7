//! Least connections: the backend with the fewest in-flight requests per unit of weight.
//!
//! The load is the selecting worker's own in-flight count (see
//! [`Backend::load`](crate::backend::Backend::load)): a scan over the backends reads only
//! this core's counters. Ties rotate, so equally idle backends share the traffic instead
//! of the first one taking it all.

use super::{PerWorker, Pick, Selection, less_loaded};
use crate::backend::Backend;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct LeastConnections {
    ties: PerWorker,
}

impl LeastConnections {
    pub(crate) fn new(workers: usize) -> LeastConnections {
        LeastConnections {
            ties: PerWorker::new(workers, |i| i as u64),
        }
    }
}

impl Selection for LeastConnections {
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
        let start = self.ties.advance(pick.worker, |c| c.wrapping_add(1)) as usize;
        let mut best: Option<(usize, u64, u32)> = None;
        for step in 0..n {
            let i = start.wrapping_add(step) % n;
            let b = &backends[i];
            let (load, weight) = (b.load(pick.worker), b.core.weight());
            let better = best.is_none_or(|(_, best_load, best_weight)| {
                less_loaded(load, weight, best_load, best_weight)
            });
            if better && accept(b) {
                best = Some((i, load, weight));
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
    fn picks_the_least_loaded() {
        let b = backends(&[1, 1, 1]);
        b[0].local(0).stats.active.store(5, Relaxed);
        b[1].local(0).stats.active.store(1, Relaxed);
        b[2].local(0).stats.active.store(3, Relaxed);
        let s = LeastConnections::new(1);
        for _ in 0..10 {
            assert_eq!(s.select(&b, Pick::default(), &mut |_| true), Some(1));
        }
        assert_eq!(
            s.select(&b, Pick::default(), &mut |x| x.id() != "w2"),
            Some(2)
        );
    }

    #[test]
    fn load_is_divided_by_weight() {
        let b = backends(&[1, 4]);
        b[0].local(0).stats.active.store(2, Relaxed);
        b[1].local(0).stats.active.store(4, Relaxed);
        assert_eq!(
            LeastConnections::new(1).select(&b, Pick::default(), &mut |_| true),
            Some(1)
        );
    }

    #[test]
    fn ties_rotate() {
        let b = backends(&[1, 1, 1]);
        assert_eq!(
            histogram(&LeastConnections::new(1), &b, 300),
            vec![100, 100, 100]
        );
    }

    #[test]
    fn long_requests_shift_traffic_to_free_backends() {
        // w1 is slow: every request it gets stays in flight. The others answer at once.
        let b = backends(&[1, 1, 1]);
        let s = LeastConnections::new(1);
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            let i = s.select(&b, Pick::default(), &mut |_| true).unwrap();
            counts[i] += 1;
            if i == 0 {
                b[0].local(0).stats.active.fetch_add(1, Relaxed);
            }
        }
        assert_eq!(counts[0], 1, "{counts:?}");
    }
}
