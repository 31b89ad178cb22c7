//! `GET /plan`: what would move if backends were removed, added or re-weighted, computed
//! without changing anything.
//!
//! The query names the changes, each repeatable and combinable:
//! `remove=ID`, `add=ID=HOST:PORT` (weight 1; follow it with `weight=ID:N` for another),
//! `weight=ID:N`. They apply in that order (removals, additions, weights), as the admin
//! calls would one after another. The answer compares the backend set now ("before")
//! with the set after the changes ("after"):
//!
//! - `backends`: every backend of either set with its weight and *share* before and
//!   after (`null` where it is absent), and the sessions it holds now.
//! - `sessions`: the sessions that would move. Only a removal moves pinned sessions:
//!   stickiness keeps a diner on its backend through weight changes and additions. A
//!   removed backend's diners are placed again by the strategy, so they are spread over
//!   the after-set in proportion to the after-shares (whole sessions, largest remainder,
//!   summing exactly to `moving`).
//! - `new_keys`: how the strategy's choice for *new* sessions changes: `moved_share` is
//!   the fraction of them that would land elsewhere, with flows per (from, to) pair.
//!
//! A share is the fraction of new sessions the strategy gives a backend among the
//! eligible ones: not draining and available now (a backend down at the moment of the
//! plan takes nothing, exactly as the strategy's `accept` filter sees it; an added one
//! is assumed available, as a fresh backend starts). Per strategy:
//!
//! | strategy | share | `new_keys` |
//! |---|---|---|
//! | round robin | equal | total variation distance, `exact: false` |
//! | weighted round robin | weight / total weight | likewise |
//! | least connections, power of two choices | weight / total weight, in steady state only: they follow load, and load follows weight when backends are alike | likewise |
//! | consistent hash | the exact fraction of the 2^64 key space its ring points own | exact: `exact: true` |
//!
//! Only the consistent hash maps a key to a backend, so only there does "this key moved"
//! mean something: the before- and after-rings (the live ring's points, without the
//! ineligible backends' ones, which is where `select` sends keys) are merged into
//! elementary intervals, and those whose owner changes are summed exactly. The other
//! strategies have no key: a request goes wherever the turn or the load says, and the
//! least that must change is the difference of the shares, their total variation
//! distance (the sum of the positive differences); its flows go from the backends that
//! lose share to those that gain it, in proportion.
//!
//! A custom strategy ([`BalancingConfig::custom`]) is code the plan cannot see into: it
//! is refused rather than guessed.
//!
//! When no backend is eligible on one side there is nothing to compare on that side:
//! `moved_share` is 0 and the session flows are empty (the sessions are still counted
//! in `moving`).

use crate::admin::{invalid, json};
use crate::body::ResponseBody;
use crate::config::{BalancingConfig, StrategyKind};
use crate::spec::{validate_id, validate_weight};
use crate::state::Shared;
use crate::strategy::{RingArc, overlap, owned_arcs, owned_keys, ring_points};
use crate::table::Table;
use http::{Response, StatusCode};
use serde::{Serialize, Serializer};

/// The size of the consistent hash's key space, 2^64.
const KEY_SPACE: u128 = 1 << 64;

/// Answers `GET /plan?…`.
pub(crate) fn respond(shared: &Shared, query: Option<&str>) -> Response<ResponseBody> {
    // A waiter being drained has said how many sessions it holds; elsewhere the
    // affinity cookies the balancer issued stand in.
    answer(shared, query, &|id| shared.drains.sessions_left(id))
}

/// Answers `GET /plan?…` with the sessions each backend holds taken from `held` (by id),
/// or, where it knows nothing, from the affinity cookies the balancer issued.
fn answer(
    shared: &Shared,
    query: Option<&str>,
    held: &dyn Fn(&str) -> Option<u64>,
) -> Response<ResponseBody> {
    let changes = match parse(query) {
        Ok(changes) => changes,
        Err(detail) => return invalid(detail),
    };
    let table = shared.registry.snapshot();
    let before = members(&table, shared.clock.now_ms(), held);
    match plan(&shared.config.balancing, &before, &changes) {
        Ok(plan) => json(StatusCode::OK, &plan),
        Err(detail) => invalid(detail),
    }
}

/// One proposed change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Remove(String),
    /// The address is only echoed: where a backend listens decides nothing about its
    /// share, so a plan neither resolves nor connects to it.
    Add {
        id: String,
        address: String,
    },
    Weight {
        id: String,
        weight: u32,
    },
}

impl Change {
    fn describe(&self) -> String {
        match self {
            Change::Remove(id) => format!("remove {id}"),
            Change::Add { id, address } => format!("add {id}={address}"),
            Change::Weight { id, weight } => format!("weight {id}:{weight}"),
        }
    }
}

const USAGE: &str = "use remove=ID, add=ID=HOST:PORT and weight=ID:N (each repeatable)";

/// Reads the query into changes, in the order they apply: removals, additions, weights.
fn parse(query: Option<&str>) -> Result<Vec<Change>, String> {
    let (mut removes, mut adds, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value; {USAGE}"))?;
        let (key, value) = (decode(key)?, decode(value)?);
        match key.as_str() {
            "remove" => removes.push(Change::Remove(value)),
            "add" => {
                let (id, address) = value
                    .split_once('=')
                    .ok_or_else(|| format!("add={value:?}: expected add=ID=HOST:PORT"))?;
                validate_id(id).map_err(|e| format!("add={value:?}: {e}"))?;
                check_address(address).map_err(|why| format!("add={value:?}: {why}"))?;
                adds.push(Change::Add {
                    id: id.to_string(),
                    address: address.to_string(),
                });
            }
            "weight" => {
                let (id, n) = value
                    .rsplit_once(':')
                    .ok_or_else(|| format!("weight={value:?}: expected weight=ID:N"))?;
                let weight: u32 = n
                    .parse()
                    .map_err(|_| format!("weight={value:?}: {n:?} is not a whole number"))?;
                validate_weight(weight).map_err(|e| format!("weight={value:?}: {e}"))?;
                weights.push(Change::Weight {
                    id: id.to_string(),
                    weight,
                });
            }
            other => return Err(format!("unknown parameter {other:?}; {USAGE}")),
        }
    }
    let changes: Vec<Change> = removes.into_iter().chain(adds).chain(weights).collect();
    if changes.is_empty() {
        return Err(format!("no change given; {USAGE}"));
    }
    Ok(changes)
}

/// Decodes `%XX` escapes (a client may escape the `=` and `:` inside a value).
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("{s:?} has a malformed %-escape"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// Checks `HOST:PORT` by its form only (see [`Change::Add`]).
fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not HOST:PORT"))?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(format!("{address:?} is not HOST:PORT"));
    }
    Ok(())
}

/// A backend as a plan sees it: what decides its share, and the sessions it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    id: String,
    weight: u32,
    /// Takes new sessions: not draining and available now.
    eligible: bool,
    sessions: u64,
}

/// The table's backends, in table order (which the ring's tie-breaking depends on).
fn members(table: &Table, now_ms: u64, held: &dyn Fn(&str) -> Option<u64>) -> Vec<Member> {
    table
        .backends()
        .iter()
        .map(|b| Member {
            id: b.id().to_string(),
            weight: b.core.weight(),
            eligible: !b.core.is_draining() && b.core.health.is_available(now_ms),
            sessions: held(b.id()).unwrap_or_else(|| b.core.pinned().max(0) as u64),
        })
        .collect()
}

/// The members after `changes`, in the order the table would hold them (removed ones
/// gone, added ones at the end).
fn apply(before: &[Member], changes: &[Change]) -> Result<Vec<Member>, String> {
    let mut after = before.to_vec();
    let mut reweighted: Vec<&str> = Vec::new();
    let known = |id: &str| before.iter().any(|m| m.id == id);
    for change in changes {
        match change {
            Change::Remove(id) => {
                let i = after.iter().position(|m| m.id == *id).ok_or_else(|| {
                    if known(id) {
                        format!("remove={id} is given twice")
                    } else {
                        format!("remove={id}: no backend has id {id:?}")
                    }
                })?;
                after.remove(i);
            }
            Change::Add { id, .. } => {
                if known(id) {
                    return Err(format!(
                        "add={id}: backend {id:?} already exists (a plan cannot remove and add one id)"
                    ));
                }
                if after.iter().any(|m| m.id == *id) {
                    return Err(format!("add={id} is given twice"));
                }
                after.push(Member {
                    id: id.clone(),
                    weight: 1,
                    eligible: true,
                    sessions: 0,
                });
            }
            Change::Weight { id, weight } => {
                if reweighted.contains(&id.as_str()) {
                    return Err(format!("weight={id}:… is given twice"));
                }
                reweighted.push(id);
                let member = after.iter_mut().find(|m| m.id == *id).ok_or_else(|| {
                    if known(id) {
                        format!("weight={id}:{weight}: {id} is removed by this plan")
                    } else {
                        format!("weight={id}:{weight}: no backend has id {id:?}")
                    }
                })?;
                member.weight = *weight;
            }
        }
    }
    Ok(after)
}

/// How one side (before or after) spreads new sessions: each member's `mass` out of
/// `total` (all integers, so sessions can be apportioned exactly), and for the
/// consistent hash the ring's arcs.
#[derive(Debug)]
struct Spread {
    mass: Vec<u128>,
    total: u128,
    arcs: Option<Vec<RingArc>>,
}

impl Spread {
    fn new(balancing: &BalancingConfig, members: &[Member]) -> Spread {
        let eligible = |m: &Member| m.eligible;
        let (mass, arcs): (Vec<u128>, _) = match balancing.strategy {
            StrategyKind::RoundRobin => (
                members.iter().map(|m| u128::from(eligible(m))).collect(),
                None,
            ),
            StrategyKind::WeightedRoundRobin
            | StrategyKind::LeastConnections
            | StrategyKind::PowerOfTwoChoices => (
                members
                    .iter()
                    .map(|m| if eligible(m) { u128::from(m.weight) } else { 0 })
                    .collect(),
                None,
            ),
            StrategyKind::ConsistentHash => {
                // All members' points (the gcd of the weights is over all of them, as in
                // the live ring), the ineligible ones' left out of the arcs.
                let ids: Vec<(&str, u32)> =
                    members.iter().map(|m| (m.id.as_str(), m.weight)).collect();
                let points = ring_points(&ids, balancing.virtual_nodes);
                let arcs = owned_arcs(&points, |i| members[i as usize].eligible);
                (owned_keys(&arcs, members.len()), Some(arcs))
            }
        };
        let total = mass.iter().sum();
        Spread { mass, total, arcs }
    }

    fn share(&self, i: usize) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.mass[i] as f64 / self.total as f64
        }
    }
}

/// The answer.
#[derive(Debug, Serialize)]
struct Plan {
    strategy: &'static str,
    changes: Vec<String>,
    backends: Vec<Row>,
    sessions: Sessions,
    new_keys: NewKeys,
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    before: Option<Side>,
    after: Option<Side>,
    /// Sessions it holds now (0 for an added backend).
    sessions: u64,
}

#[derive(Debug, Serialize)]
struct Side {
    weight: u32,
    #[serde(serialize_with = "rounded")]
    share: f64,
}

#[derive(Debug, Serialize)]
struct Sessions {
    moving: u64,
    flows: Vec<SessionFlow>,
}

#[derive(Debug, Serialize)]
struct SessionFlow {
    from: String,
    to: String,
    sessions: u64,
}

#[derive(Debug, Serialize)]
struct NewKeys {
    #[serde(serialize_with = "rounded")]
    moved_share: f64,
    exact: bool,
    flows: Vec<KeyFlow>,
}

#[derive(Debug, Serialize)]
struct KeyFlow {
    from: String,
    to: String,
    #[serde(serialize_with = "rounded")]
    share: f64,
}

/// Shares go out with 6 decimals: finer is noise to an operator, and a CLI can print
/// them as they come.
fn rounded<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((value * 1e6).round() / 1e6)
}

fn strategy_name(kind: StrategyKind) -> &'static str {
    // As the `--strategy` flag spells them.
    match kind {
        StrategyKind::RoundRobin => "round-robin",
        StrategyKind::WeightedRoundRobin => "weighted-round-robin",
        StrategyKind::LeastConnections => "least-connections",
        StrategyKind::PowerOfTwoChoices => "power-of-two-choices",
        StrategyKind::ConsistentHash => "consistent-hash",
    }
}

/// Plans `changes` to the backends `before` (see the module docs).
fn plan(
    balancing: &BalancingConfig,
    before: &[Member],
    changes: &[Change],
) -> Result<Plan, String> {
    if let Some(custom) = &balancing.custom {
        // Its shares are whatever its code does: guessing them would mislead.
        return Err(format!(
            "this balancer uses the custom strategy {:?}; plans are computed only for the built-in strategies",
            custom.name()
        ));
    }
    let after = apply(before, changes)?;
    let (old, new) = (
        Spread::new(balancing, before),
        Spread::new(balancing, &after),
    );
    // Every backend of either side: the table's, then the added ones.
    let mut union: Vec<(&str, Option<usize>, Option<usize>)> = before
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                m.id.as_str(),
                Some(i),
                after.iter().position(|a| a.id == m.id),
            )
        })
        .collect();
    union.extend(
        after
            .iter()
            .enumerate()
            .filter(|(_, a)| !before.iter().any(|m| m.id == a.id))
            .map(|(j, a)| (a.id.as_str(), None, Some(j))),
    );
    let backends = union
        .iter()
        .map(|&(id, b, a)| Row {
            id: id.to_string(),
            before: b.map(|i| Side {
                weight: before[i].weight,
                share: old.share(i),
            }),
            after: a.map(|j| Side {
                weight: after[j].weight,
                share: new.share(j),
            }),
            sessions: b.map_or(0, |i| before[i].sessions),
        })
        .collect();
    let new_keys = match (&old.arcs, &new.arcs) {
        (Some(old_arcs), Some(new_arcs)) => ring_moves(before, old_arcs, &after, new_arcs),
        _ => share_moves(&union, &old, &new),
    };
    Ok(Plan {
        strategy: strategy_name(balancing.strategy),
        changes: changes.iter().map(Change::describe).collect(),
        backends,
        sessions: session_moves(&union, before, &after, &new),
        new_keys,
    })
}

/// The consistent hash: the keys whose owner differs between the two rings, exactly.
fn ring_moves(
    before: &[Member],
    old_arcs: &[RingArc],
    after: &[Member],
    new_arcs: &[RingArc],
) -> NewKeys {
    let mut moved = 0u128;
    let mut flows = Vec::new();
    // In (before index, after index) order: deterministic, grouped by where keys leave.
    for ((from, to), keys) in overlap(old_arcs, new_arcs) {
        let (from, to) = (&before[from as usize].id, &after[to as usize].id);
        if from != to {
            moved += keys;
            flows.push(KeyFlow {
                from: from.clone(),
                to: to.clone(),
                share: keys as f64 / KEY_SPACE as f64,
            });
        }
    }
    NewKeys {
        moved_share: moved as f64 / KEY_SPACE as f64,
        exact: true,
        flows,
    }
}

/// The other strategies: the total variation distance between the shares, flowing from
/// the backends that lose share to those that gain it, in proportion to the gains.
fn share_moves(
    union: &[(&str, Option<usize>, Option<usize>)],
    old: &Spread,
    new: &Spread,
) -> NewKeys {
    let nothing = NewKeys {
        moved_share: 0.0,
        exact: false,
        flows: Vec::new(),
    };
    if old.total == 0 || new.total == 0 {
        return nothing;
    }
    let delta: Vec<f64> = union
        .iter()
        .map(|&(_, b, a)| a.map_or(0.0, |j| new.share(j)) - b.map_or(0.0, |i| old.share(i)))
        .collect();
    let gained: f64 = delta.iter().filter(|d| **d > 0.0).sum();
    if gained <= 0.0 {
        return nothing;
    }
    let mut flows = Vec::new();
    for (l, &loss) in delta.iter().enumerate().filter(|(_, d)| **d < 0.0) {
        for (g, &gain) in delta.iter().enumerate().filter(|(_, d)| **d > 0.0) {
            flows.push(KeyFlow {
                from: union[l].0.to_string(),
                to: union[g].0.to_string(),
                share: -loss * gain / gained,
            });
        }
    }
    NewKeys {
        moved_share: gained,
        exact: false,
        flows,
    }
}

/// The removed backends' sessions, each backend's spread over the after-set in
/// proportion to the after-shares.
fn session_moves(
    union: &[(&str, Option<usize>, Option<usize>)],
    before: &[Member],
    after: &[Member],
    new: &Spread,
) -> Sessions {
    let mut moving = 0;
    let mut flows = Vec::new();
    for &(id, b, a) in union {
        let (Some(i), None) = (b, a) else { continue };
        let sessions = before[i].sessions;
        moving += sessions;
        for (j, n) in apportion(sessions, &new.mass).into_iter().enumerate() {
            if n > 0 {
                flows.push(SessionFlow {
                    from: id.to_string(),
                    to: after[j].id.clone(),
                    sessions: n,
                });
            }
        }
    }
    Sessions { moving, flows }
}

/// Splits `total` into whole parts in proportion to `mass`, by largest remainder: each
/// part gets the floor of its quota, then the parts with the largest fractions (the
/// earliest first among equal ones) get one more until the parts sum to `total`. All
/// zeros when `mass` is.
fn apportion(total: u64, mass: &[u128]) -> Vec<u64> {
    let sum: u128 = mass.iter().sum();
    if sum == 0 {
        return vec![0; mass.len()];
    }
    // total < 2^64 and each mass ≤ 2^64 (the key space), so the product fits in a u128.
    let quotas: Vec<(u128, u128)> = mass
        .iter()
        .map(|&m| {
            let q = u128::from(total) * m;
            (q / sum, q % sum)
        })
        .collect();
    let mut parts: Vec<u64> = quotas.iter().map(|&(whole, _)| whole as u64).collect();
    let short = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..mass.len()).collect();
    order.sort_by(|&x, &y| quotas[y].1.cmp(&quotas[x].1).then(x.cmp(&y)));
    for &i in order.iter().take(short as usize) {
        parts[i] += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::backends;
    use crate::strategy::{ConsistentHash, Pick, Selection, hash_bytes};

    fn member(id: &str, weight: u32, sessions: u64) -> Member {
        Member {
            id: id.into(),
            weight,
            eligible: true,
            sessions,
        }
    }

    fn three() -> Vec<Member> {
        vec![
            member("w1", 1, 10),
            member("w2", 1, 101),
            member("w3", 1, 7),
        ]
    }

    fn config(strategy: StrategyKind) -> BalancingConfig {
        BalancingConfig {
            strategy,
            ..BalancingConfig::default()
        }
    }

    fn run(strategy: StrategyKind, before: &[Member], query: &str) -> Plan {
        plan(&config(strategy), before, &parse(Some(query)).unwrap()).unwrap()
    }

    #[test]
    fn a_custom_strategy_is_refused_not_guessed() {
        let mut balancing = config(StrategyKind::RoundRobin);
        balancing.custom = Some(crate::CustomStrategy::new("mine", |_, workers| {
            Box::new(crate::strategy::RoundRobin::new(workers))
        }));
        let err = plan(&balancing, &three(), &parse(Some("remove=w2")).unwrap()).unwrap_err();
        assert!(err.contains("custom strategy \"mine\""), "{err}");
    }

    fn row<'a>(plan: &'a Plan, id: &str) -> &'a Row {
        plan.backends.iter().find(|r| r.id == id).unwrap()
    }

    fn flows_sum(keys: &NewKeys) -> f64 {
        keys.flows.iter().map(|f| f.share).sum()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ring_removal_moves_exactly_the_removed_share() {
        let plan = run(StrategyKind::ConsistentHash, &three(), "remove=w2");
        let w2 = row(&plan, "w2");
        assert!(w2.after.is_none());
        let share = w2.before.as_ref().unwrap().share;
        assert!((0.28..0.39).contains(&share), "{share}");
        assert!(plan.new_keys.exact);
        assert!(
            close(plan.new_keys.moved_share, share),
            "only w2's keys move"
        );
        assert!(close(flows_sum(&plan.new_keys), plan.new_keys.moved_share));
        assert_eq!(plan.new_keys.flows.len(), 2);
        for flow in &plan.new_keys.flows {
            assert_eq!(flow.from, "w2", "{flow:?}");
            // What a survivor gains is what its share grows by.
            let r = row(&plan, &flow.to);
            let growth = r.after.as_ref().unwrap().share - r.before.as_ref().unwrap().share;
            assert!(close(flow.share, growth), "{flow:?} vs {growth}");
        }
    }

    #[test]
    fn ring_addition_takes_about_one_in_n_plus_one_all_to_the_new_backend() {
        let plan = run(
            StrategyKind::ConsistentHash,
            &three(),
            "add=w4%3D127.0.0.1%3A7004",
        );
        assert_eq!(plan.changes, ["add w4=127.0.0.1:7004"]);
        let w4 = row(&plan, "w4");
        assert!(w4.before.is_none());
        assert_eq!(w4.sessions, 0);
        let share = w4.after.as_ref().unwrap().share;
        assert!((0.2..0.3).contains(&share), "{share}");
        assert!(close(plan.new_keys.moved_share, share));
        assert!(plan.new_keys.flows.iter().all(|f| f.to == "w4"));
        assert!(close(flows_sum(&plan.new_keys), plan.new_keys.moved_share));
        assert_eq!(plan.sessions.moving, 0, "additions move no pinned session");
        assert!(plan.sessions.flows.is_empty());
    }

    #[test]
    fn ring_weight_change_moves_keys_only_to_the_heavier_backend() {
        let plan = run(StrategyKind::ConsistentHash, &three(), "weight=w1:3");
        let w1 = row(&plan, "w1");
        assert_eq!(w1.before.as_ref().unwrap().weight, 1);
        assert_eq!(w1.after.as_ref().unwrap().weight, 3);
        let gain = w1.after.as_ref().unwrap().share - w1.before.as_ref().unwrap().share;
        assert!(gain > 0.2, "{gain}");
        assert!(close(plan.new_keys.moved_share, gain));
        assert!(plan.new_keys.flows.iter().all(|f| f.to == "w1"));
        assert_eq!(plan.sessions.moving, 0, "weights move no pinned session");
    }

    /// Where the live ring sends `n` keys, by backend id.
    fn owners(b: &[crate::backend::Backend], n: u64) -> Vec<String> {
        let ring = ConsistentHash::new(b, 256);
        (0..n)
            .map(|k| {
                let key = hash_bytes(format!("diner-{k}").as_bytes());
                let i = ring
                    .select(b, Pick { worker: 0, key }, &mut |x| !x.core.is_draining())
                    .unwrap();
                b[i].id().to_string()
            })
            .collect()
    }

    #[test]
    fn ring_plan_matches_the_live_ring_even_when_the_gcd_changes() {
        // Weights 2, 2, 2 to 3, 2, 2: the gcd falls from 2 to 1, so every backend's
        // points change, not only w1's; keys move between the others too.
        let before: Vec<Member> = ["w1", "w2", "w3"].map(|id| member(id, 2, 0)).into();
        let plan = run(StrategyKind::ConsistentHash, &before, "weight=w1:3");
        let (old, new) = (backends(&[2, 2, 2]), backends(&[3, 2, 2]));
        let n = 20_000;
        let (a, b) = (owners(&old, n), owners(&new, n));
        let measured = a.iter().zip(&b).filter(|(x, y)| x != y).count() as f64 / n as f64;
        let predicted = plan.new_keys.moved_share;
        assert!(
            (measured - predicted).abs() < 0.015,
            "{measured} vs {predicted}"
        );
        assert!(plan.new_keys.flows.iter().any(|f| f.to != "w1"));
    }

    #[test]
    fn ineligible_backends_take_no_share_and_their_keys_stay_moved() {
        // w2 draining: the ring sends its keys on already, so removing it moves nothing
        // new, but its pinned sessions do move.
        let mut before = three();
        before[1].eligible = false;
        let plan = run(StrategyKind::ConsistentHash, &before, "remove=w2");
        assert_eq!(row(&plan, "w2").before.as_ref().unwrap().share, 0.0);
        assert!(close(plan.new_keys.moved_share, 0.0));
        assert_eq!(plan.sessions.moving, 101);
        // And the plan agrees with the live ring skipping a draining backend.
        let b = backends(&[1, 1, 1]);
        b[1].core.set_draining(true);
        let survivors: Vec<_> = b.iter().filter(|x| x.id() != "w2").cloned().collect();
        assert_eq!(owners(&b, 5_000), owners(&survivors, 5_000));
    }

    #[test]
    fn round_robin_moves_the_total_variation_distance() {
        let plan = run(StrategyKind::RoundRobin, &three(), "remove=w2");
        assert!(!plan.new_keys.exact);
        assert!(close(plan.new_keys.moved_share, 1.0 / 3.0));
        assert!(close(flows_sum(&plan.new_keys), plan.new_keys.moved_share));
        for flow in &plan.new_keys.flows {
            assert_eq!(flow.from, "w2");
            assert!(close(flow.share, 1.0 / 6.0), "{flow:?}");
        }
        // Round robin ignores weights: re-weighting moves nothing.
        let plan = run(StrategyKind::RoundRobin, &three(), "weight=w1:5");
        assert!(close(plan.new_keys.moved_share, 0.0));
        assert!(plan.new_keys.flows.is_empty());
    }

    #[test]
    fn weighted_strategies_move_from_losers_to_gainers_in_proportion() {
        for kind in [
            StrategyKind::WeightedRoundRobin,
            StrategyKind::LeastConnections,
            StrategyKind::PowerOfTwoChoices,
        ] {
            // 1:1:1 to 3:1:1 plus w4 (1): w1 goes 1/3 → 1/2, the others 1/3 → 1/6.
            let plan = run(kind, &three(), "add=w4=127.0.0.1:7004&weight=w1:3");
            let share = |id| row(&plan, id).after.as_ref().unwrap().share;
            assert!(close(share("w1"), 0.5) && close(share("w4"), 1.0 / 6.0));
            assert!(close(plan.new_keys.moved_share, 1.0 / 3.0), "{kind:?}");
            assert!(close(flows_sum(&plan.new_keys), plan.new_keys.moved_share));
            let to_w1: f64 = plan
                .new_keys
                .flows
                .iter()
                .filter(|f| f.to == "w1")
                .map(|f| f.share)
                .sum();
            assert!(close(to_w1, 1.0 / 6.0), "gains split 1/6 : 1/6");
            assert!(
                plan.new_keys
                    .flows
                    .iter()
                    .all(|f| f.from == "w2" || f.from == "w3")
            );
        }
    }

    #[test]
    fn session_flows_sum_exactly_to_the_moving_sessions() {
        for kind in [StrategyKind::RoundRobin, StrategyKind::ConsistentHash] {
            let plan = run(kind, &three(), "remove=w2&remove=w3");
            assert_eq!(plan.sessions.moving, 108);
            let sum: u64 = plan.sessions.flows.iter().map(|f| f.sessions).sum();
            assert_eq!(sum, 108, "{kind:?}");
            assert!(plan.sessions.flows.iter().all(|f| f.to == "w1"));
        }
        // 101 sessions over two equal survivors: 51 and 50, never 50 and 50.
        let plan = run(StrategyKind::RoundRobin, &three(), "remove=w2");
        let got: Vec<(String, u64)> = plan
            .sessions
            .flows
            .iter()
            .map(|f| (f.to.clone(), f.sessions))
            .collect();
        assert_eq!(got, [("w1".into(), 51), ("w3".into(), 50)]);
    }

    #[test]
    fn largest_remainder_apportionment() {
        assert_eq!(apportion(7, &[1, 1, 1]), [3, 2, 2]);
        assert_eq!(apportion(10, &[3, 0, 1]), [8, 0, 2]);
        assert_eq!(apportion(5, &[0, 0]), [0, 0]);
        assert_eq!(apportion(0, &[1, 2]), [0, 0]);
        let big = apportion(u64::MAX, &[KEY_SPACE / 3, KEY_SPACE - KEY_SPACE / 3]);
        assert_eq!(
            big.iter().map(|&p| u128::from(p)).sum::<u128>(),
            u128::from(u64::MAX)
        );
    }

    #[test]
    fn no_eligible_backend_after_moves_nothing_anywhere() {
        let plan = run(StrategyKind::ConsistentHash, &three()[..1], "remove=w1");
        assert_eq!(plan.sessions.moving, 10);
        assert!(plan.sessions.flows.is_empty());
        assert_eq!(plan.new_keys.moved_share, 0.0);
    }

    #[test]
    fn the_answer_has_the_agreed_shape() {
        let plan = run(
            StrategyKind::ConsistentHash,
            &three(),
            "weight=w1:3&add=w4=127.0.0.1:7004&remove=w2",
        );
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v["strategy"], "consistent-hash");
        assert_eq!(
            v["changes"],
            serde_json::json!(["remove w2", "add w4=127.0.0.1:7004", "weight w1:3"])
        );
        let ids: Vec<&str> = v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["w1", "w2", "w3", "w4"]);
        assert!(v["backends"][1]["after"].is_null());
        assert!(v["backends"][3]["before"].is_null());
        assert_eq!(v["backends"][0]["after"]["weight"], 3);
        assert!(v["backends"][0]["before"]["share"].is_f64());
        assert_eq!(v["backends"][1]["sessions"], 101);
        assert_eq!(v["sessions"]["moving"], 101);
        assert!(v["sessions"]["flows"][0]["sessions"].is_u64());
        assert_eq!(v["new_keys"]["exact"], true);
        assert!(v["new_keys"]["moved_share"].is_f64());
        assert!(v["new_keys"]["flows"][0]["share"].is_f64());
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let parsing = [
            (None, "no change given"),
            (Some(""), "no change given"),
            (Some("remove"), "not key=value"),
            (Some("drop=w1"), "unknown parameter"),
            (Some("add=w4"), "expected add=ID=HOST:PORT"),
            (Some("add=w 4=127.0.0.1:1"), "letters, digits"),
            (Some("add=w4=127.0.0.1"), "not HOST:PORT"),
            (Some("add=w4=host:99999"), "not HOST:PORT"),
            (Some("weight=w1"), "expected weight=ID:N"),
            (Some("weight=w1:x"), "not a whole number"),
            (Some("weight=w1:-1"), "not a whole number"),
            (Some("weight=w1:0"), "outside 1..=1000"),
            (Some("weight=w1:1001"), "outside 1..=1000"),
            (Some("remove=w%2"), "malformed %-escape"),
        ];
        for (query, needle) in parsing {
            let err = parse(query).unwrap_err();
            assert!(err.contains(needle), "{query:?}: {err}");
        }
        let applying = [
            ("remove=w9", "no backend has id"),
            ("remove=w2&remove=w2", "given twice"),
            ("weight=w9:2", "no backend has id"),
            ("remove=w2&weight=w2:2", "removed by this plan"),
            ("weight=w1:2&weight=w1:3", "given twice"),
            ("add=w1=127.0.0.1:1", "already exists"),
            ("add=w4=127.0.0.1:1&add=w4=127.0.0.1:2", "given twice"),
        ];
        for (query, needle) in applying {
            let changes = parse(Some(query)).unwrap();
            let err = plan(&config(StrategyKind::RoundRobin), &three(), &changes).unwrap_err();
            assert!(err.contains(needle), "{query}: {err}");
        }
    }

    #[test]
    fn addresses_are_checked_by_form_only() {
        for ok in ["127.0.0.1:7004", "[::1]:7004", "waiter-4.internal:7004"] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":7004", "host", "host:", "a b:1", "host:port"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        // An added backend may be given its weight in the same plan.
        let plan = run(
            StrategyKind::WeightedRoundRobin,
            &three(),
            "add=w4=[::1]:7004&weight=w4:3",
        );
        assert!(close(row(&plan, "w4").after.as_ref().unwrap().share, 0.5));
    }
}
