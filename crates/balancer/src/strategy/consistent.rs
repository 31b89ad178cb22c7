//! Consistent hashing on a ring with virtual nodes (Karger et al., as in ketama).
//!
//! Each backend owns `virtual_nodes × weight` points on a 64-bit ring, at the hash of
//! `"<id>#<n>"`; a key belongs to the first point at or after its hash. Because the
//! points depend only on the backend's *id*, adding a backend takes over only the keys
//! between its points and their predecessors (about 1/(N+1) of them), and removing one
//! moves only its own keys (about 1/N): diners hashed to other backends stay where they
//! are. A rejected backend's keys walk on to the next point of another backend.

use super::{Pick, Selection, gcd, hash_bytes};
use crate::backend::Backend;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ConsistentHash {
    /// (point, backend index), sorted by point.
    ring: Box<[(u64, u32)]>,
    backends: usize,
}

impl ConsistentHash {
    pub(crate) fn new(backends: &[Backend], virtual_nodes: u32) -> ConsistentHash {
        // Weights are relative: divide by their gcd so 100/200 costs what 1/2 costs.
        let divisor = backends
            .iter()
            .map(|b| b.core.weight().max(1))
            .fold(0, gcd)
            .max(1);
        let mut ring = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let points =
                u64::from(virtual_nodes.max(1)) * u64::from(b.core.weight().max(1) / divisor);
            for n in 0..points {
                ring.push((hash_bytes(format!("{}#{n}", b.id()).as_bytes()), i as u32));
            }
        }
        ring.sort_unstable();
        ConsistentHash {
            ring: ring.into_boxed_slice(),
            backends: backends.len(),
        }
    }
}

impl Selection for ConsistentHash {
    fn select(
        &self,
        backends: &[Backend],
        pick: Pick,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<usize> {
        let len = self.ring.len();
        if len == 0 || backends.len() != self.backends {
            return None;
        }
        let start = self.ring.partition_point(|&(point, _)| point < pick.key);
        let mut rejected = Vec::new();
        let mut rejected_count = 0;
        for step in 0..len {
            let i = self.ring[(start + step) % len].1 as usize;
            if rejected.get(i).copied().unwrap_or(false) {
                continue;
            }
            if accept(&backends[i]) {
                return Some(i);
            }
            // Rare path (the owner is down): remember it so its other points are skipped.
            if rejected.is_empty() {
                rejected = vec![false; backends.len()];
            }
            rejected[i] = true;
            rejected_count += 1;
            if rejected_count == backends.len() {
                break;
            }
        }
        None
    }

    fn uses_key(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{backends, histogram};

    fn owner(ring: &ConsistentHash, b: &[Backend], key: u64) -> String {
        let i = ring
            .select(b, Pick { worker: 0, key }, &mut |_| true)
            .unwrap();
        b[i].id().to_string()
    }

    const KEYS: u64 = 50_000;
    const VNODES: u32 = 256;

    fn key(k: u64) -> u64 {
        hash_bytes(&k.to_le_bytes())
    }

    #[test]
    fn keys_spread_evenly_over_equal_backends() {
        let b = backends(&[1, 1, 1, 1]);
        for count in histogram(&ConsistentHash::new(&b, VNODES), &b, 40_000) {
            assert!((8_800..=11_200).contains(&count), "{count}");
        }
    }

    #[test]
    fn weight_scales_the_share() {
        let b = backends(&[1, 2, 1]);
        let counts = histogram(&ConsistentHash::new(&b, VNODES), &b, 40_000);
        let ratio = counts[1] as f64 / ((counts[0] + counts[2]) as f64 / 2.0);
        assert!((1.7..=2.3).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn adding_a_backend_moves_about_one_in_n_plus_one_keys_all_to_it() {
        let five = backends(&[1; 5]);
        let six = backends(&[1; 6]);
        let (r5, r6) = (
            ConsistentHash::new(&five, VNODES),
            ConsistentHash::new(&six, VNODES),
        );
        let mut moved = 0;
        for k in 0..KEYS {
            let (before, after) = (owner(&r5, &five, key(k)), owner(&r6, &six, key(k)));
            if before != after {
                assert_eq!(after, "w6", "a moved key goes to the new backend");
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        assert!(
            (1.0 / 6.0 - 0.04..=1.0 / 6.0 + 0.04).contains(&share),
            "moved {share}"
        );
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys_about_one_in_n() {
        let five = backends(&[1; 5]);
        let four: Vec<Backend> = five.iter().filter(|b| b.id() != "w3").cloned().collect();
        let (r5, r4) = (
            ConsistentHash::new(&five, VNODES),
            ConsistentHash::new(&four, VNODES),
        );
        let mut moved = 0;
        for k in 0..KEYS {
            let (before, after) = (owner(&r5, &five, key(k)), owner(&r4, &four, key(k)));
            if before != after {
                assert_eq!(before, "w3", "only the removed backend's keys move");
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        assert!((0.2 - 0.04..=0.2 + 0.04).contains(&share), "moved {share}");
    }

    #[test]
    fn a_rejected_backend_moves_only_its_keys() {
        let b = backends(&[1; 4]);
        let ring = ConsistentHash::new(&b, VNODES);
        for k in 0..5_000 {
            let usual = owner(&ring, &b, key(k));
            let i = ring
                .select(
                    &b,
                    Pick {
                        worker: 0,
                        key: key(k),
                    },
                    &mut |x| x.id() != "w2",
                )
                .unwrap();
            if usual != "w2" {
                assert_eq!(b[i].id(), usual);
            } else {
                assert_ne!(b[i].id(), "w2");
            }
        }
        assert_eq!(ring.select(&b, Pick::default(), &mut |_| false), None);
    }
}
