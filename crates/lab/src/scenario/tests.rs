use super::*;

const MINIMAL: &str = r#"
name = "t"
[load]
model = "closed"
diners = 5
duration_seconds = 10
[[architecture]]
name = "stateful"
mode = "stateful"
[[architecture]]
name = "stateless"
mode = "stateless"
"#;

fn with(extra: &str) -> Result<Scenario, LabError> {
    Scenario::from_toml(&format!("{MINIMAL}\n{extra}"))
}

fn err(src: &str) -> String {
    match Scenario::from_toml(src) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn err_with(extra: &str) -> String {
    err(&format!("{MINIMAL}\n{extra}"))
}

#[test]
fn the_demo_is_the_canonical_comparison() {
    let d = Scenario::demo();
    assert_eq!(d.name, "demo");
    assert_eq!(d.cluster.waiters, 3);
    assert_eq!(d.load.model, LoadModel::Closed { diners: 50 });
    let names: Vec<(&str, Mode, &StoreSpec)> = d
        .architectures
        .iter()
        .map(|a| (a.name.as_str(), a.mode, &a.store))
        .collect();
    assert_eq!(
        names,
        vec![
            ("stateful", Mode::Stateful, &StoreSpec::Memory),
            ("stateless", Mode::Stateless, &StoreSpec::Sqlite),
            ("replicated", Mode::Replicated, &StoreSpec::Memory)
        ]
    );
    assert_eq!(d.faults.len(), 1);
    let kill = &d.faults[0];
    assert_eq!(
        (kill.kind, kill.waiter.as_deref()),
        (FaultKind::Kill, Some("w2"))
    );
    assert!(
        (kill.start_seconds(d.load.duration) / d.load.duration.as_secs_f64() - 0.4).abs() < 1e-9
    );
    // The three architectures, one after the other, must fit comfortably in 90 s.
    assert!(
        d.estimated_duration() <= Duration::from_secs(80),
        "{:?}",
        d.estimated_duration()
    );
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let s =
                Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(s.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        vec![
            "demo",
            "distance",
            "drain",
            "drain-1000",
            "open-loop",
            "paused",
            "postgres",
            "redis",
            "replicated"
        ]
    );
    let redis =
        Scenario::from_toml(&std::fs::read_to_string(dir.join("redis.toml")).unwrap()).unwrap();
    let stateful = &redis.architectures[0];
    assert_eq!(
        redis.faults_for(stateful).count(),
        1,
        "the store outage does not apply to stateful waiters"
    );
    assert_eq!(redis.faults_for(&redis.architectures[1]).count(), 2);
}

#[test]
fn defaults_fill_what_a_scenario_leaves_out() {
    let s = with("").unwrap();
    assert_eq!(s.seed, 1);
    assert_eq!(s.cluster.waiters, 3);
    assert_eq!(s.cluster.waiter_ids(), vec!["w1", "w2", "w3"]);
    assert_eq!(
        s.load.think,
        ThinkTime {
            min_ms: 100,
            max_ms: 400
        }
    );
    assert_eq!(s.load.request_timeout, Duration::from_secs(2));
    assert_eq!(s.architectures[1].store, StoreSpec::Sqlite);
    assert_eq!(s.architectures[1].label(), "stateless on sqlite");
}

#[test]
fn stores_are_parsed_by_kind() {
    let src = |store: &str| {
        format!(
            "name = \"t\"\n[load]\nmodel = \"closed\"\ndiners = 1\nduration_seconds = 5\n[[architecture]]\nname = \"a\"\nmode = \"stateless\"\nstore = \"{store}\""
        )
    };
    let store = |s: &str| {
        Scenario::from_toml(&src(s)).unwrap().architectures[0]
            .store
            .clone()
    };
    assert_eq!(store("redis"), StoreSpec::LabRedis { durable: true });
    assert_eq!(
        store("postgres://u@127.0.0.1/db"),
        StoreSpec::Url("postgres://u@127.0.0.1/db".into())
    );
    assert_eq!(store("redis://127.0.0.1:6379/").kind(), "redis");
    assert!(err(&src("mysql://x")).contains("store = \"mysql://x\" is unknown"));
    let volatile = format!("{}\ndurable = false", src("redis"));
    assert_eq!(
        Scenario::from_toml(&volatile).unwrap().architectures[0].store,
        StoreSpec::LabRedis { durable: false }
    );
}

#[test]
fn faults_are_parsed_with_their_timing() {
    let s = with(
        "[[fault]]\nkind = \"pause\"\nwaiter = \"w1\"\nat_seconds = 2\nfor_seconds = 3\n[[fault]]\nkind = \"restart\"\nwaiter = \"w3\"\nat_fraction = 0.5",
    )
    .unwrap();
    let d = s.load.duration;
    assert_eq!(
        (s.faults[0].start_seconds(d), s.faults[0].end_seconds(d)),
        (2.0, Some(5.0))
    );
    assert_eq!(s.faults[0].describe(), "pause w1 for 3 s");
    assert_eq!(
        (s.faults[1].start_seconds(d), s.faults[1].end_seconds(d)),
        (5.0, Some(5.0))
    );
    assert_eq!(s.faults[1].describe(), "restart w3");
}

#[test]
fn invalid_values_are_refused_with_the_key_and_the_fix() {
    let cases: &[(&str, &str)] = &[
        (
            "[cluster]\nwaiters = 0",
            "cluster.waiters = 0 is out of range",
        ),
        (
            "[cluster]\nkitchen_seconds = -1.0",
            "cluster.kitchen_seconds",
        ),
        (
            "[cluster]\nwaiter_args = [\"--listen\", \"x\"]",
            "must not contain --listen",
        ),
        (
            "[[fault]]\nkind = \"explode\"\nwaiter = \"w1\"\nat_fraction = 0.5",
            "kind = \"explode\" is unknown",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nwaiter = \"w9\"\nat_fraction = 0.5",
            "waiter \"w9\" does not exist; this scenario runs 3 waiters",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nat_fraction = 0.5",
            "waiter is required",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nwaiter = \"w1\"",
            "give exactly one of at_fraction",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nwaiter = \"w1\"\nat_fraction = 0.5\nat_seconds = 1",
            "give exactly one",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nwaiter = \"w1\"\nat_fraction = 1.5",
            "strictly between 0 and 1",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nwaiter = \"w1\"\nat_seconds = 12",
            "strictly between 0 and the load duration",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nwaiter = \"w1\"\nat_fraction = 0.5\nfor_seconds = 2",
            "use kind = \"restart\"",
        ),
        (
            "[[fault]]\nkind = \"pause\"\nwaiter = \"w1\"\nat_fraction = 0.5",
            "for_seconds is required",
        ),
        (
            "[[fault]]\nkind = \"pause\"\nwaiter = \"w1\"\nat_fraction = 0.5\nfor_seconds = 9",
            "after the load ends",
        ),
        (
            "[[fault]]\nkind = \"store-stop\"\nat_fraction = 0.5",
            "there is no store process to stop",
        ),
        (
            "[[fault]]\nkind = \"store-stop\"\nwaiter = \"w1\"\nat_fraction = 0.5",
            "a store fault has no waiter",
        ),
        (
            "[[fault]]\nkind = \"kill\"\nwaiter = \"w1\"\nat_fraction = 0.5\ntypo = 1",
            "unknown field `typo`",
        ),
    ];
    for (extra, expected) in cases {
        let msg = err_with(extra);
        assert!(msg.contains(expected), "for {extra:?}: {msg}");
        assert!(msg.starts_with("invalid scenario: "), "{msg}");
    }
}

#[test]
fn invalid_loads_and_architectures_are_refused() {
    let base = "name = \"t\"\n[[architecture]]\nname = \"a\"\nmode = \"stateful\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[load]\nmodel = \"closed\"\nduration_seconds = 5",
            "load.diners is required",
        ),
        (
            "[load]\nmodel = \"closed\"\ndiners = 5\nduration_seconds = 0",
            "load.duration_seconds = 0 is out of range",
        ),
        (
            "[load]\nmodel = \"closed\"\ndiners = 5\nduration_seconds = 5\narrivals_per_second = 3",
            "belongs to the open model",
        ),
        (
            "[load]\nmodel = \"open\"\nduration_seconds = 5",
            "load.arrivals_per_second is required",
        ),
        (
            "[load]\nmodel = \"open\"\ndiners = 3\nduration_seconds = 5\narrivals_per_second = 3",
            "belongs to the closed model",
        ),
        (
            "[load]\nmodel = \"poisson\"\nduration_seconds = 5",
            "use \"closed\" or \"open\"",
        ),
        (
            "[load]\nmodel = \"closed\"\ndiners = 5\nduration_seconds = 5\nthink_ms = [500, 100]",
            "shortest first",
        ),
    ];
    for (load, expected) in cases {
        let msg = err(&format!("{base}{load}"));
        assert!(msg.contains(expected), "for {load:?}: {msg}");
    }
    let load = "[load]\nmodel = \"closed\"\ndiners = 1\nduration_seconds = 5\n";
    let arch_cases: &[(&str, &str)] = &[
        ("", "has no [[architecture]]"),
        (
            "[[architecture]]\nname = \"Bad Name\"\nmode = \"stateful\"",
            "lowercase letters",
        ),
        (
            "[[architecture]]\nname = \"a\"\nmode = \"stateful\"\n[[architecture]]\nname = \"a\"\nmode = \"stateless\"",
            "used twice",
        ),
        (
            "[[architecture]]\nname = \"a\"\nmode = \"sharded\"",
            "mode = \"sharded\" is unknown",
        ),
        (
            "[[architecture]]\nname = \"a\"\nmode = \"stateful\"\nstore = \"sqlite\"",
            "remove store",
        ),
        (
            "[[architecture]]\nname = \"a\"\nmode = \"stateless\"\ndurable = true",
            "durable only applies",
        ),
        (
            "[[architecture]]\nname = \"a\"\nmode = \"stateless\"\nstore = \"postgres://x\"\n[[fault]]\nkind = \"store-stop\"\nat_fraction = 0.5",
            "never stops a server it did not start",
        ),
    ];
    for (archs, expected) in arch_cases {
        let msg = err(&format!("name = \"t\"\n{load}{archs}"));
        assert!(msg.contains(expected), "for {archs:?}: {msg}");
    }
    assert!(err("not toml at all").starts_with("invalid scenario: "));
}

#[test]
fn a_drain_fault_says_whether_it_hands_off() {
    let s = with(
        "[[fault]]\nkind = \"drain\"\nhandoff = true\nwaiter = \"w2\"\nat_fraction = 0.4\nfor_seconds = 3",
    )
    .unwrap();
    assert_eq!(s.faults[0].kind, FaultKind::Drain { handoff: true });
    assert_eq!(
        s.faults[0].describe(),
        "drain w2 with handoff, then stop it"
    );
    assert_eq!(s.faults[0].end_seconds(s.load.duration), None);
    let s = with("[[fault]]\nkind = \"drain\"\nwaiter = \"w1\"\nat_seconds = 2").unwrap();
    assert_eq!(s.faults[0].kind, FaultKind::Drain { handoff: false });
    let e = err_with("[[fault]]\nkind = \"kill\"\nhandoff = true\nwaiter = \"w1\"\nat_seconds = 2");
    assert!(e.contains("handoff only applies"), "{e}");
}

const NETWORKED: &str = r#"
name = "t"
[load]
model = "closed"
diners = 5
duration_seconds = 10
[[architecture]]
name = "stateful"
mode = "stateful"
[[architecture]]
name = "stateless-redis"
mode = "stateless"
store = "redis"
[[architecture]]
name = "replicated"
mode = "replicated"
"#;

fn networked(extra: &str) -> Result<Scenario, LabError> {
    Scenario::from_toml(&format!("{NETWORKED}\n{extra}"))
}

#[test]
fn a_network_section_puts_links_at_a_distance_and_zero_means_none() {
    let s = networked(
        "[network]\nstore_rtt_ms = 1.5\nwaiter_rtt_ms = 0\npeer_rtt_ms = 2\njitter_ms = 0.1",
    )
    .unwrap();
    assert_eq!(
        s.network,
        NetworkSpec {
            store_rtt_ms: Some(1.5),
            waiter_rtt_ms: None,
            peer_rtt_ms: Some(2.0),
            jitter_ms: 0.1,
        }
    );
    assert_eq!(s.runs().len(), 3, "no sweep: each architecture once");
    assert!(
        s.runs()
            .iter()
            .all(|r| r.network == s.network && r.rtt_ms.is_none())
    );
    assert_eq!(
        s.network.describe(),
        vec![
            "waiters to the store: 1.5 ms round trip, ± 0.1 ms each way",
            "between replicated peers: 2 ms round trip, ± 0.1 ms each way"
        ]
    );
    assert_eq!(networked("").unwrap().network, NetworkSpec::default());
}

#[test]
fn impossible_distances_are_refused_with_the_key() {
    for (extra, needle) in [
        ("[network]\nstore_rtt_ms = -1", "network.store_rtt_ms = -1"),
        (
            "[network]\nwaiter_rtt_ms = nan",
            "network.waiter_rtt_ms = NaN",
        ),
        (
            "[network]\npeer_rtt_ms = 5000",
            "network.peer_rtt_ms = 5000",
        ),
        (
            "[network]\nstore_rtt_ms = 1\njitter_ms = -0.5",
            "network.jitter_ms",
        ),
        ("[network]\njitter_ms = 0.5", "no link to vary"),
        ("[network]\nstore_rtt = 1", "unknown field"),
        ("[sweep]\nrtt_ms = []", "1 to 12 round trips"),
        ("[sweep]\nrtt_ms = [0, 2, 1]", "must increase"),
        ("[sweep]\nrtt_ms = [0, 1, 1]", "must increase"),
        ("[sweep]\nrtt_ms = [0, inf]", "sweep.rtt_ms = inf"),
        (
            "[sweep]\nrtt_ms = [0, 1]\nlinks = []",
            "sweep.links is empty",
        ),
        (
            "[sweep]\nrtt_ms = [0, 1]\nlinks = [\"disk\"]",
            "\"disk\" is unknown",
        ),
        (
            "[sweep]\nrtt_ms = [0, 1]\nlinks = [\"store\", \"store\"]",
            "twice",
        ),
        (
            "[network]\nstore_rtt_ms = 1\n[sweep]\nrtt_ms = [0, 1]",
            "remove one of them",
        ),
    ] {
        let e = networked(extra).expect_err(extra).to_string();
        assert!(e.contains(needle), "{extra:?}: {e}");
    }
}

#[test]
fn a_distance_on_a_link_no_architecture_has_is_refused() {
    // SQLite: a file each waiter opens, no network to delay.
    let e = err_with("[network]\nstore_rtt_ms = 1");
    assert!(e.contains("SQLite") && e.contains("\"stateless\""), "{e}");
    let e = err_with("[sweep]\nrtt_ms = [0, 1]");
    assert!(e.contains("SQLite"), "{e}");
    let stateful_only = "name = \"t\"\n[load]\nmodel = \"closed\"\ndiners = 1\nduration_seconds = 5\n[[architecture]]\nname = \"a\"\nmode = \"stateful\"\n";
    let e = err(&format!("{stateful_only}[network]\nstore_rtt_ms = 1"));
    assert!(e.contains("needs a stateless architecture"), "{e}");
    let e = err(&format!("{stateful_only}[network]\npeer_rtt_ms = 1"));
    assert!(e.contains("needs a replicated architecture"), "{e}");
    // The balancer to its waiters: every architecture has that link.
    let s = Scenario::from_toml(&format!("{stateful_only}[network]\nwaiter_rtt_ms = 1")).unwrap();
    assert_eq!(s.network.waiter_rtt_ms, Some(1.0));
}

#[test]
fn a_sweep_runs_every_architecture_at_every_distance() {
    let s = networked("[network]\nwaiter_rtt_ms = 0.2\n[sweep]\nrtt_ms = [0, 0.5, 2]\nlinks = [\"peer\", \"store\"]").unwrap();
    let sweep = s.sweep.as_ref().unwrap();
    assert_eq!(sweep.links, vec![Link::Store, Link::Peer]);
    assert_eq!(sweep.rtt_ms, vec![0.0, 0.5, 2.0]);
    let runs = s.runs();
    assert_eq!(runs.len(), 9);
    let names: Vec<String> = runs.iter().take(4).map(|r| r.name()).collect();
    assert_eq!(
        names,
        [
            "stateful-0ms",
            "stateless-redis-0ms",
            "replicated-0ms",
            "stateful-0.5ms"
        ]
    );
    let far = &runs[8];
    assert_eq!(
        (far.arch.name.as_str(), far.rtt_ms),
        ("replicated", Some(2.0))
    );
    // The swept links at the run's distance, 0 included (through the proxy, no delay);
    // the fixed ones as [network] set them.
    assert_eq!(
        runs[0].network,
        NetworkSpec {
            store_rtt_ms: Some(0.0),
            waiter_rtt_ms: Some(0.2),
            peer_rtt_ms: Some(0.0),
            jitter_ms: 0.0,
        }
    );
    assert_eq!(far.network.store_rtt_ms, Some(2.0));
    assert_eq!(far.network.peer_rtt_ms, Some(2.0));
    assert_eq!(s.estimated_duration(), Duration::from_secs(14 * 9));
    // The default link is the store.
    let s = networked("[sweep]\nrtt_ms = [1]").unwrap();
    assert_eq!(s.sweep.unwrap().links, vec![Link::Store]);
}
