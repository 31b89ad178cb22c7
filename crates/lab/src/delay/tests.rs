//! The delay proxy as a unit, against small TCP servers in the test process.
//!
//! Timing is checked only from below (a round trip takes at least the configured one),
//! with an upper bound ten times as generous, so a loaded machine cannot fail these
//! tests; how close the delivered delay comes to the configured one is shown by the
//! lab's distance scenario, not asserted here.

use super::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The longest any step of these tests may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// An echo server: each connection sends back what it reads, and half-closes after the
/// client's EOF.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_in_random_chunks_arrive_intact_in_both_directions() {
    let target = echo_server().await;
    // Jitter larger than the delay: without monotonic due times the chunks would
    // overtake each other.
    let delay = Delay::from_rtt_ms(1.0, 2.0);
    let mut proxy = DelayProxy::start("echo", target, delay).await.unwrap();
    let mut rng = StdRng::seed_from_u64(14);
    let mut data = vec![0u8; 3 * 1024 * 1024 + 17];
    rng.fill(&mut data[..]);
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        let mut at = 0;
        while at < sent.len() {
            let n = rng.random_range(1..=100_000).min(sent.len() - at);
            w.write_all(&sent[at..at + n]).await.unwrap();
            at += n;
            if rng.random_bool(0.05) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Our EOF must reach the echo server, whose EOF must come back.
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(data.len());
    within("reading the echo to its EOF", r.read_to_end(&mut got))
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), data.len(), "every byte came back, and no more");
    assert!(got == data, "the bytes came back unchanged and in order");
    let stats = proxy.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.bytes_to_target, data.len() as u64);
    assert_eq!(stats.bytes_from_target, data.len() as u64);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_takes_at_least_the_configured_rtt() {
    let target = echo_server().await;
    let rtt = Duration::from_millis(20);
    let mut proxy = DelayProxy::start("echo", target, Delay::from_rtt_ms(20.0, 0.0))
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    for i in 0..5u8 {
        let started = Instant::now();
        s.write_all(&[i]).await.unwrap();
        let mut b = [0u8; 1];
        within("an echo", s.read_exact(&mut b)).await.unwrap();
        let took = started.elapsed();
        assert_eq!(b[0], i);
        assert!(
            took >= rtt,
            "round trip {i} took {took:?}, less than {rtt:?}"
        );
        assert!(
            took < rtt * 10,
            "round trip {i} took {took:?}, over ten times {rtt:?}"
        );
    }
    // Each of the 10 chunks (5 each way) was held at least the one-way 10 ms.
    let stats = proxy.stats();
    assert_eq!(stats.chunks, 10);
    let held = stats.mean_held_ms().unwrap();
    assert!(held >= 10.0, "chunks were held {held} ms on average");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_is_forwarded_and_the_answer_still_arrives() {
    // A server that reads the whole request to EOF and only then answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        s.read_to_end(&mut request).await.unwrap();
        s.write_all(format!("got {} bytes", request.len()).as_bytes())
            .await
            .unwrap();
    });
    let mut proxy = DelayProxy::start("server", target, Delay::from_rtt_ms(2.0, 0.0))
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    within("the answer", s.read_to_string(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, "got 5 bytes");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_closes_the_client_connection() {
    let target = SocketAddr::from(([127, 0, 0, 1], crate::process::free_port().unwrap()));
    let mut proxy = DelayProxy::start("nothing", target, Delay::from_rtt_ms(1.0, 0.0))
        .await
        .unwrap();
    // The reset can come so soon that the connect itself reports it; otherwise the
    // first read does. Either a reset or an EOF; never data, never a hang.
    if let Ok(mut s) = TcpStream::connect(proxy.addr()).await {
        let mut buf = [0u8; 16];
        let read = within("the close", s.read(&mut buf)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // The count is made before the reset is sent.
    assert_eq!(proxy.stats().refused, 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_every_connection_and_stops_listening() {
    // A server that holds its connections open and says nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            kept.push(s);
        }
    });
    let mut proxy = DelayProxy::start("quiet", target, Delay::from_rtt_ms(1.0, 0.0))
        .await
        .unwrap();
    let addr = proxy.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"anyone?").await.unwrap();
    within("the shutdown", proxy.shutdown()).await;
    let mut buf = [0u8; 16];
    let read = within("the close", s.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the proxy no longer listens"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_stops_reading_stops_the_sender_and_nothing_is_lost() {
    // A server that reads nothing until told to, then counts everything to EOF.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (go, wait) = oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        wait.await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        all
    });
    let mut proxy = DelayProxy::start("slow", target, Delay::from_rtt_ms(1.0, 0.0))
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    // Write until a write has made no progress for half a second: the proxy's queue and
    // the sockets' buffers are full. Without backpressure the proxy would keep reading
    // into memory and the writes would go on to the cap.
    let cap = 256 * 1024 * 1024;
    let block = vec![7u8; 256 * 1024];
    let mut written = 0usize;
    let mut stalled = false;
    while written < cap {
        match tokio::time::timeout(Duration::from_millis(500), s.write_all(&block)).await {
            Ok(r) => {
                r.unwrap();
                written += block.len();
            }
            Err(_) => {
                // The timed-out write may have sent part of the block; it is counted
                // below from what the server receives.
                stalled = true;
                break;
            }
        }
    }
    assert!(
        stalled,
        "{written} bytes went in without the target reading"
    );
    assert!(
        written < 64 * 1024 * 1024,
        "{written} bytes were buffered for a target that reads nothing"
    );
    go.send(()).unwrap();
    s.shutdown().await.unwrap();
    let all = within("the target reading everything", reader)
        .await
        .unwrap();
    assert!(
        all.len() >= written && all.len() <= written + block.len(),
        "the target got {} bytes of the {written} (+ at most one partial block) written",
        all.len()
    );
    assert!(all.iter().all(|&b| b == 7));
    proxy.shutdown().await;
}
