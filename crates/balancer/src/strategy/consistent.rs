//! Consistent hashing on a ring with virtual nodes (Karger et al., as in ketama).
//!
//! Each backend owns `virtual_nodes × weight` points on a 64-bit ring, at the hash of
//! `"<id>#<n>"`; a key belongs to the first point at or after its hash. Because the
//! points depend only on the backend's *id*, adding a backend takes over only the keys
//! between its points and their predecessors (about 1/(N+1) of them), and removing one
//! moves only its own keys (about 1/N): diners hashed to other backends stay where they
//! are. A rejected backend's keys walk on to the next point of another backend.
//!
//! [`ring_points`] and [`owned_arcs`] describe a ring from ids and weights alone, so the
//! admin API's plan (see [`plan`](crate::plan)) can compute exactly which keys a
//! hypothetical backend set would move, from the same points the live ring uses.

use super::{Pick, Selection, gcd, hash_bytes};
use crate::backend::Backend;
use std::collections::BTreeMap;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ConsistentHash {
    /// (point, backend index), sorted by point.
    ring: Box<[(u64, u32)]>,
    backends: usize,
}

impl ConsistentHash {
    pub(crate) fn new(backends: &[Backend], virtual_nodes: u32) -> ConsistentHash {
        let members: Vec<(&str, u32)> =
            backends.iter().map(|b| (b.id(), b.core.weight())).collect();
        ConsistentHash {
            ring: ring_points(&members, virtual_nodes).into_boxed_slice(),
            backends: backends.len(),
        }
    }
}

/// The ring of `members` (id, weight), as (point, member index) sorted by point: each
/// member has `virtual_nodes × weight / gcd` points, at the hash of `"<id>#<n>"`.
///
/// The gcd is over *all* members, whether they would be accepted or not, because that is
/// how the live ring is built: a draining backend's weight still decides how many points
/// the others get.
pub(crate) fn ring_points(members: &[(&str, u32)], virtual_nodes: u32) -> Vec<(u64, u32)> {
    // Weights are relative: divide by their gcd so 100/200 costs what 1/2 costs.
    let divisor = members
        .iter()
        .map(|&(_, weight)| weight.max(1))
        .fold(0, gcd)
        .max(1);
    let mut ring = Vec::new();
    for (i, &(id, weight)) in members.iter().enumerate() {
        let points = u64::from(virtual_nodes.max(1)) * u64::from(weight.max(1) / divisor);
        for n in 0..points {
            ring.push((hash_bytes(format!("{id}#{n}").as_bytes()), i as u32));
        }
    }
    // Ties (two equal points) sort by member index, and `select` takes the first point
    // at or after the key, so the lower index wins them; `owned_arcs` does the same.
    ring.sort_unstable();
    ring
}

/// A stretch of the key space and the member whose point owns it: the keys after the
/// previous arc's `end` (from 0 for the first arc) up to and including `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingArc {
    pub(crate) end: u64,
    pub(crate) owner: u32,
}

/// Who owns each key of the ring `points` (from [`ring_points`]) when only the members
/// `accepted` allows take keys: the arcs in key order, covering `0..=u64::MAX`, or none
/// when no member is accepted.
///
/// `select` walks past a rejected member's points to the next accepted one, which is
/// the same as leaving those points out, so this is exactly where `select` sends each
/// key with that `accept` filter. Adjacent arcs of one owner are merged.
pub(crate) fn owned_arcs(points: &[(u64, u32)], accepted: impl Fn(u32) -> bool) -> Vec<RingArc> {
    let mut arcs: Vec<RingArc> = Vec::new();
    for &(point, owner) in points.iter().filter(|&&(_, owner)| accepted(owner)) {
        match arcs.last_mut() {
            // An equal point later in the sorted ring never gets a key.
            Some(last) if last.end == point => {}
            Some(last) if last.owner == owner => last.end = point,
            _ => arcs.push(RingArc { end: point, owner }),
        }
    }
    // Keys after the last point wrap around to the first point's owner.
    let (Some(first), Some(last)) = (arcs.first().copied(), arcs.last_mut()) else {
        return arcs;
    };
    if last.end != u64::MAX {
        if last.owner == first.owner {
            last.end = u64::MAX;
        } else {
            arcs.push(RingArc {
                end: u64::MAX,
                owner: first.owner,
            });
        }
    }
    arcs
}

/// How many keys (out of 2^64) each member owns in `arcs`, for `members` members.
pub(crate) fn owned_keys(arcs: &[RingArc], members: usize) -> Vec<u128> {
    let mut owned = vec![0u128; members];
    let mut start = 0u128;
    for arc in arcs {
        let end = u128::from(arc.end) + 1;
        owned[arc.owner as usize] += end - start;
        start = end;
    }
    owned
}

/// How many keys each (owner in `before`, owner in `after`) pair shares, found by merging
/// the two rings' arcs into the elementary intervals where neither owner changes.
/// Owners index each ring's own members; pairs of the same backend are included (the
/// caller knows which indices name the same id). Empty when either ring has no arcs.
pub(crate) fn overlap(before: &[RingArc], after: &[RingArc]) -> BTreeMap<(u32, u32), u128> {
    let mut pairs = BTreeMap::new();
    let (mut i, mut j, mut start) = (0, 0, 0u128);
    while i < before.len() && j < after.len() {
        let (b, a) = (before[i], after[j]);
        let end = b.end.min(a.end);
        *pairs.entry((b.owner, a.owner)).or_insert(0) += u128::from(end) + 1 - start;
        start = u128::from(end) + 1;
        // Both lists end at u64::MAX, so they run out together.
        if b.end == end {
            i += 1;
        }
        if a.end == end {
            j += 1;
        }
    }
    pairs
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

    fn members(b: &[Backend]) -> Vec<(&str, u32)> {
        b.iter().map(|b| (b.id(), b.core.weight())).collect()
    }

    /// The owner of `key` in `arcs`, found the way `select` finds a point.
    fn arc_owner(arcs: &[RingArc], key: u64) -> u32 {
        arcs[arcs.partition_point(|a| a.end < key)].owner
    }

    #[test]
    fn arcs_own_exactly_the_keys_select_sends_there() {
        let b = backends(&[1, 2, 1, 3]);
        let ring = ConsistentHash::new(&b, 16);
        let points = ring_points(&members(&b), 16);
        assert_eq!(&*ring.ring, points.as_slice(), "one point hashing for both");
        // With every backend, and with w2 rejected (draining or down).
        for rejected in [None, Some(1u32)] {
            let arcs = owned_arcs(&points, |i| Some(i) != rejected);
            // Every point, its neighbours and the ends of the key space, plus random keys.
            let mut keys = vec![0, 1, u64::MAX - 1, u64::MAX];
            for &(p, _) in &points {
                keys.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
            }
            keys.extend((0..5_000).map(key));
            for k in keys {
                let i = ring
                    .select(&b, Pick { worker: 0, key: k }, &mut |x| {
                        rejected.is_none_or(|r| x.id() != b[r as usize].id())
                    })
                    .unwrap();
                assert_eq!(arc_owner(&arcs, k), i as u32, "key {k:#x}");
            }
        }
    }

    #[test]
    fn arcs_cover_the_whole_key_space() {
        let b = backends(&[1, 1, 1]);
        let points = ring_points(&members(&b), VNODES);
        let arcs = owned_arcs(&points, |_| true);
        assert_eq!(arcs.last().unwrap().end, u64::MAX);
        assert!(
            arcs.windows(2)
                .all(|w| w[0].end < w[1].end && w[0].owner != w[1].owner)
        );
        let owned = owned_keys(&arcs, 3);
        assert_eq!(owned.iter().sum::<u128>(), 1u128 << 64);
        for o in owned {
            let share = o as f64 / 2f64.powi(64);
            assert!((0.28..0.39).contains(&share), "{share}");
        }
        assert!(owned_arcs(&points, |_| false).is_empty());
        let only_w3 = owned_arcs(&points, |i| i == 2);
        assert_eq!(
            only_w3,
            vec![RingArc {
                end: u64::MAX,
                owner: 2
            }]
        );
    }

    #[test]
    fn overlap_counts_every_key_once() {
        let four = backends(&[1; 4]);
        let three: Vec<Backend> = four.iter().filter(|b| b.id() != "w3").cloned().collect();
        let before = owned_arcs(&ring_points(&members(&four), VNODES), |_| true);
        let after = owned_arcs(&ring_points(&members(&three), VNODES), |_| true);
        let pairs = overlap(&before, &after);
        assert_eq!(pairs.values().sum::<u128>(), 1u128 << 64);
        // Before-index 2 is w3; after-indices 0, 1, 2 are w1, w2, w4.
        let same = |from: u32, to: u32| four[from as usize].id() == three[to as usize].id();
        for &(from, to) in pairs.keys() {
            assert!(
                same(from, to) || from == 2,
                "only w3's keys move: {from}->{to}"
            );
        }
        let moved: u128 = pairs
            .iter()
            .filter(|&(&(from, to), _)| !same(from, to))
            .map(|(_, &n)| n)
            .sum();
        assert_eq!(moved, owned_keys(&before, 4)[2], "w3's keys, all of them");
        assert!(overlap(&before, &[]).is_empty());
    }
}
