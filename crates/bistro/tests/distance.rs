//! The lab's distance scenario, shortened: `scenarios/distance.toml` with two distances
//! (0 and 10 ms) of 2 s each, on the PostgreSQL and Redis the tests use.
//!
//! It checks what the sweep must deliver, not how fast anything is: a point per
//! architecture per distance, every acknowledged order read back intact, the store and
//! peer traffic really going through the delay proxies, and the direction of the cost:
//! at 10 ms the median is not below the median at 0 ms for the architectures the links
//! reach. 10 ms against loopback's tenths of a millisecond is two orders of magnitude
//! beyond noise, so that direction cannot flake.
//!
//! PostgreSQL and Redis come from `BISTRO_TEST_POSTGRES_URL` / `BISTRO_TEST_REDIS_URL`
//! (or throwaway servers, see bistro-testsupport); when they are unreachable the run
//! fails, it never skips.

use std::time::Duration;

/// `scenarios/distance.toml` with a short load, two distances, and the test servers.
fn shortened() -> bistro_lab::Scenario {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/distance.toml");
    let mut text = std::fs::read_to_string(path).expect("read scenarios/distance.toml");
    let postgres = format!("store = {:?}", bistro_testsupport::postgres_url());
    // The test Redis instead of one the lab starts (`durable` is only for the latter).
    let redis = format!("store = {:?}", bistro_testsupport::redis_url());
    for (from, to) in [
        ("duration_seconds = 6", "duration_seconds = 2"),
        ("diners = 20", "diners = 12"),
        ("rtt_ms = [0, 0.5, 1, 2]", "rtt_ms = [0, 10]"),
        (
            "store = \"postgres://postgres@127.0.0.1:5432/postgres\"",
            postgres.as_str(),
        ),
        ("store = \"redis\"\ndurable = false", redis.as_str()),
    ] {
        assert_eq!(
            text.matches(from).count(),
            1,
            "scenarios/distance.toml should hold `{from}` once; update this test with it"
        );
        text = text.replace(from, to);
    }
    bistro_lab::Scenario::from_toml(&text).expect("the shortened scenario is valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distance_sweep_has_every_point_loses_nothing_and_distance_costs_latency() {
    let scenario = shortened();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let out = std::env::temp_dir().join(format!(
        "bistro-distance-test-{}-{nanos}",
        std::process::id()
    ));
    let opts = bistro_lab::LabOptions {
        bin: env!("CARGO_BIN_EXE_bistro").into(),
        out_dir: out.clone(),
        progress: false,
    };
    // 8 runs of 2 s, each with start-up and read-back: far less than this.
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        bistro_lab::run(&scenario, &opts, std::future::pending()),
    )
    .await
    .expect("the shortened distance scenario ends within 5 minutes")
    .unwrap_or_else(|e| panic!("the distance scenario failed: {e}"));

    let sweep = report.sweep.as_ref().expect("a sweep report");
    assert_eq!(sweep.rtt_ms, vec![0.0, 10.0]);
    assert_eq!(sweep.links, vec!["store", "peer"]);
    let names: Vec<&str> = sweep
        .lines
        .iter()
        .map(|l| l.architecture.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "stateful",
            "stateless-redis",
            "stateless-postgres",
            "replicated"
        ]
    );
    assert_eq!(
        report.architectures.len(),
        8,
        "4 architectures at 2 distances"
    );

    for run in &report.architectures {
        let v = &run.verification;
        assert!(
            run.ok > 0 && v.orders > 0,
            "{}: nothing answered or ordered ({} ok, {} orders)",
            run.name,
            run.ok,
            v.orders
        );
        assert_eq!(
            (v.lost, v.diverged, v.duplicated, v.unchecked),
            (0, 0, 0, 0),
            "{}: every acknowledged order must read back intact: {v:?}",
            run.name
        );
        // The swept link of each architecture carried its traffic through a proxy, at
        // 0 ms as well (the same hop at every point).
        let link = match run.mode.as_str() {
            "stateless" => Some("store"),
            "replicated" => Some("peer"),
            _ => None,
        };
        match link {
            Some(link) => {
                let l = run
                    .network
                    .iter()
                    .find(|l| l.link == link)
                    .unwrap_or_else(|| panic!("{}: no {link} link in {:?}", run.name, run.network));
                assert_eq!(Some(l.rtt_ms), run.rtt_ms);
                assert!(
                    l.connections > 0 && l.bytes_to_target > 0 && l.bytes_from_target > 0,
                    "{}: the {link} proxy carried nothing: {l:?}",
                    run.name
                );
            }
            None => assert!(run.network.is_empty(), "{}: {:?}", run.name, run.network),
        }
    }

    for line in &sweep.lines {
        assert_eq!(
            line.points.len(),
            2,
            "{}: a point per distance",
            line.architecture
        );
        let (near, far) = (&line.points[0], &line.points[1]);
        assert_eq!((near.rtt_ms, far.rtt_ms), (0.0, 10.0));
        let run = |name: &str| {
            report
                .architectures
                .iter()
                .find(|a| a.name == name)
                .unwrap_or_else(|| panic!("no run {name}"))
        };
        match line.architecture.as_str() {
            // Every stateless request reads the store: the whole median moves.
            "stateless-redis" | "stateless-postgres" => {
                let (a, b) = (near.p50_ms.unwrap(), far.p50_ms.unwrap());
                assert!(
                    b >= a,
                    "{}: p50 {b} ms at 10 ms, below {a} ms at 0",
                    line.architecture
                );
            }
            // A replicated waiter reads from memory and copies only changes to its
            // peer: the writes' median moves (placing an order is one).
            "replicated" => {
                let place = |name: &str| run(name).latency_by_step["place"].p50_ms;
                let (a, b) = (place(&near.run), place(&far.run));
                assert!(
                    b >= a,
                    "replicated: place p50 {b} ms at 10 ms, below {a} ms at 0"
                );
            }
            _ => assert!(!line.affected, "stateful has no store and no peer"),
        }
    }

    let html = std::fs::read_to_string(out.join("index.html")).expect("index.html is written");
    assert!(
        html.contains("What distance costs"),
        "the page has the sweep"
    );
    let svg = std::fs::read_to_string(out.join("distance.svg")).expect("distance.svg is written");
    assert_eq!(
        svg.matches("<polyline").count(),
        8,
        "a throughput and a latency line per architecture"
    );
    let table = report.table();
    assert!(table.contains("0 ms") && table.contains("10 ms"), "{table}");
    std::fs::remove_dir_all(&out).expect("remove the report directory");
}
