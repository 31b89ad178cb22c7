//! The lab end to end with the real binary: a short scenario on the three architectures
//! with a waiter killed mid-run. Stateful must lose orders, stateless and replicated none;
//! the HTML report and its charts are written; a cancelled run cleans up; and no child
//! process is left running afterwards.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stateful_waiter_loses_orders_and_a_stateless_one_does_not() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let out = std::env::temp_dir().join(format!("bistro-lab-test-{}-{nanos}", std::process::id()));
    let report =
        bistro_lab::end_to_end_check(std::path::Path::new(env!("CARGO_BIN_EXE_bistro")), &out)
            .await
            .unwrap_or_else(|e| panic!("lab end-to-end check failed: {e}"));
    let html = std::fs::read_to_string(out.join("index.html")).expect("index.html is written");
    assert!(
        html.matches("<svg").count() >= 2,
        "the report holds its charts"
    );
    let stateful = report
        .architectures
        .iter()
        .find(|a| a.mode == "stateful")
        .expect("a stateful architecture");
    let stateless = report
        .architectures
        .iter()
        .find(|a| a.mode == "stateless")
        .expect("a stateless architecture");
    assert!(
        stateful.verification.lost > 0,
        "stateful lost nothing when its waiter was killed"
    );
    assert_eq!(stateless.verification.lost, 0, "stateless lost orders");
    let replicated = report
        .architectures
        .iter()
        .find(|a| a.mode == "replicated")
        .expect("a replicated architecture");
    assert_eq!(replicated.verification.lost, 0, "replicated lost orders");
    assert_eq!(replicated.verification.diverged, 0, "replicated diverged");
    std::fs::remove_dir_all(&out).expect("remove the report directory");
}
