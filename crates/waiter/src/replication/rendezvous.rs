//! Which peer keeps a session's copy: rendezvous (highest random weight) hashing.
//!
//! Every waiter computes, for a session and each candidate peer, a score from a hash of
//! both, and picks the highest. The choice needs no coordination, spreads sessions
//! evenly over peers, and when a peer leaves only the sessions it held move (each to
//! the peer that scored second for it), which is what keeps re-replication after a
//! death proportional to what died.

use bistro_store::SessionId;
use sha2::{Digest, Sha256};

/// A session's score for `peer`.
fn score(session: SessionId, peer: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(session.as_bytes())
        .chain_update(peer.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The candidate (an index and a peer id) that scores highest for `session`.
pub fn choose<'a>(
    session: SessionId,
    candidates: impl IntoIterator<Item = (usize, &'a str)>,
) -> Option<usize> {
    candidates
        .into_iter()
        .max_by_key(|(_, peer)| (score(session, peer), *peer))
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEERS: [&str; 4] = ["w1", "w2", "w3", "w4"];

    fn all() -> impl Iterator<Item = (usize, &'static str)> {
        PEERS.iter().copied().enumerate()
    }

    #[test]
    fn the_choice_is_stable_and_spread() {
        let mut counts = [0u32; 4];
        for _ in 0..4_000 {
            let s = SessionId::generate();
            let first = choose(s, all()).unwrap();
            assert_eq!(choose(s, all()), Some(first), "same inputs, same choice");
            counts[first] += 1;
        }
        for c in counts {
            assert!((800..1_200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn only_the_departed_peers_sessions_move() {
        for _ in 0..1_000 {
            let s = SessionId::generate();
            let before = choose(s, all()).unwrap();
            let without_w3 = choose(s, all().filter(|(_, p)| *p != "w3")).unwrap();
            if PEERS[before] != "w3" {
                assert_eq!(before, without_w3);
            } else {
                assert_ne!(PEERS[without_w3], "w3");
            }
        }
    }

    #[test]
    fn no_candidate_no_choice() {
        assert_eq!(choose(SessionId::generate(), std::iter::empty()), None);
    }
}
