//! Replicated mode on real sockets: a group of waiters in this process, each served by
//! `run` on its own 127.0.0.1 port, naming each other as peers.
//!
//! A waiter's "death" is its server stopping (its port then refuses connections, as a
//! killed process's would); a "pause" is its server stopping while the waiter's memory
//! is kept, and later served again on the same port, which is what a SIGSTOP'd process
//! looks like to its peers when it resumes.

use bistro_client::{Client, Response};
use bistro_store::{MemoryStore, StoreConfig};
use bistro_waiter::replication::{Peer, ReplicationConfig};
use bistro_waiter::{Waiter, WaiterConfig, run};
use http::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "a-group-secret-of-some-length";

/// One member of the group: its waiter (kept across a pause) and its server, if up.
struct Member {
    id: String,
    addr: SocketAddr,
    replication: ReplicationConfig,
    waiter: Waiter,
    serving: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

impl Member {
    fn client(&self) -> Client {
        Client::new(self.addr).with_timeout(Duration::from_secs(10))
    }

    /// Serves the waiter on its port (again).
    async fn serve(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the member's port");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, self.waiter.clone(), async move {
            let _signal = stopped.await;
        }));
        self.serving = Some((stop, task));
    }

    /// A new process in its place: the same id, port and peers, and empty memory.
    async fn restart_empty(&mut self) {
        self.halt().await;
        self.waiter = replicated_waiter(&self.id, self.replication.clone());
        self.serve().await;
    }

    /// Stops serving: its port refuses connections from now on.
    async fn halt(&mut self) {
        if let Some((stop, task)) = self.serving.take() {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the server stops")
                .expect("the server task")
                .expect("the server");
        }
    }
}

/// `n` waiters `w1..wn`, each naming the others, all serving.
async fn group(n: usize) -> Vec<Member> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(listeners);
    let mut members = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = format!("w{}", i + 1);
        let peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, a)| Peer {
                id: format!("w{}", j + 1),
                addr: *a,
            })
            .collect();
        let mut replication = ReplicationConfig::new(peers, SECRET.into());
        replication.timeout = Duration::from_millis(300);
        replication.probe_interval = Duration::from_millis(50);
        let mut member = Member {
            waiter: replicated_waiter(&id, replication.clone()),
            id,
            addr: *addr,
            replication,
            serving: None,
        };
        member.serve().await;
        members.push(member);
    }
    members
}

fn replicated_waiter(id: &str, replication: ReplicationConfig) -> Waiter {
    let config = WaiterConfig {
        id: id.to_string(),
        ..WaiterConfig::default()
    };
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    Waiter::replicated(config, store, replication)
}

async fn stop_all(members: Vec<Member>) {
    for mut m in members {
        m.halt().await;
    }
}

fn member<'a>(members: &'a mut [Member], id: &str) -> &'a mut Member {
    members.iter_mut().find(|m| m.id == id).expect("a member")
}

fn fries() -> Value {
    json!({"items": [{"dish": "fries", "quantity": 1}]})
}

/// A diner: a session id sent in `Bistro-Session` to whichever waiter is asked.
struct Diner {
    session: String,
}

impl Diner {
    async fn request(
        &self,
        to: &Member,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Response {
        to.client()
            .request(method, path, &[("bistro-session", &self.session)], body)
            .await
            .expect("an answer")
    }
}

/// Starts a session with one order on `on`; the diner, the order's path, and the
/// backup the waiter named.
async fn start(on: &Member) -> (Diner, String, String) {
    let created = on.client().post_json("/v1/orders", &fries()).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("bistro-mode"), Some("replicated"));
    let session = created.header("bistro-session").unwrap().to_string();
    let backup = created
        .header("bistro-backup")
        .expect("an acknowledged change names its backup")
        .to_string();
    assert_ne!(backup, on.id);
    let order = format!("/v1/orders/{}", created.value()["id"].as_str().unwrap());
    (Diner { session }, order, backup)
}

fn spice(body: &Value) -> u64 {
    body["notes"]["spice"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_carries_on_when_the_primary_dies() {
    let mut members = group(3).await;
    let (diner, order, backup) = start(&members[0]).await;
    for level in 1..=3 {
        let r = diner
            .request(
                &members[0],
                Method::PATCH,
                &order,
                Some(&json!({"notes": {"spice": level}})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("bistro-backup"), Some(backup.as_str()));
    }
    members[0].halt().await;

    // The diner reaches the backup (as a balancer would send it there).
    let b = member(&mut members, &backup);
    let read = diner.request(b, Method::GET, &order, None).await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(
        spice(&read.value()),
        3,
        "every acknowledged change is there"
    );
    assert_eq!(read.value()["version"], 4);
    let new_backup = read
        .header("bistro-backup")
        .expect("the new primary copied the session at once")
        .to_string();
    assert_ne!(new_backup, backup);
    assert_ne!(new_backup, "w1", "not the dead primary");
    let changed = diner
        .request(
            b,
            Method::PATCH,
            &order,
            Some(&json!({"notes": {"spice": 5}})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    let info = b.client().get("/v1/waiter").await.unwrap().value();
    assert_eq!(info["replication"]["takeovers"], 1);
    assert_eq!(info["replication"]["sessions_led"], 1);
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_cannot_acknowledge_after_the_takeover() {
    let mut members = group(3).await;
    let (diner, order, backup) = start(&members[0]).await;
    // w1 "pauses": its peers cannot reach it, but it keeps its memory.
    members[0].halt().await;
    let taken = diner
        .request(
            member(&mut members, &backup),
            Method::PATCH,
            &order,
            Some(&json!({"notes": {"spice": 4}})),
        )
        .await;
    assert_eq!(taken.status, 200, "{}", taken.text());
    // w1 resumes and is asked to change the order on its stale copy.
    members[0].serve().await;
    let stale = diner
        .request(
            &members[0],
            Method::PATCH,
            &order,
            Some(&json!({"notes": {"spice": 1}})),
        )
        .await;
    assert_eq!(stale.status, 421, "{}", stale.text());
    assert_eq!(
        stale.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        stale.value()["type"]
            .as_str()
            .unwrap()
            .ends_with("/session-moved")
    );
    assert_eq!(stale.header("bistro-leader"), Some(backup.as_str()));
    // Nothing diverged: the leader has the change it acknowledged, not the stale one.
    let read = diner
        .request(member(&mut members, &backup), Method::GET, &order, None)
        .await;
    assert_eq!(spice(&read.value()), 4);
    // And w1 keeps pointing there rather than serving its old copy as its own.
    let again = diner.request(&members[0], Method::GET, &order, None).await;
    assert_eq!(again.status, 421, "{}", again.text());
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_backup_dies_the_session_is_copied_again_before_the_primary_can_die() {
    let mut members = group(3).await;
    let (diner, order, backup) = start(&members[0]).await;
    member(&mut members, &backup).halt().await;
    // The next change finds the backup gone and copies the session to the third waiter.
    let r = diner
        .request(
            &members[0],
            Method::PATCH,
            &order,
            Some(&json!({"notes": {"spice": 2}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let third = r.header("bistro-backup").expect("a new backup").to_string();
    assert_ne!(third, backup);
    assert_ne!(third, "w1");
    members[0].halt().await;
    let read = diner
        .request(member(&mut members, &third), Method::GET, &order, None)
        .await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(spice(&read.value()), 2);
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_copies_gone_the_session_is_lost_explicitly() {
    let mut members = group(3).await;
    let (diner, order, backup) = start(&members[0]).await;
    members[0].halt().await;
    member(&mut members, &backup).halt().await;
    let third = members
        .iter()
        .find(|m| m.serving.is_some())
        .expect("one waiter is left");
    let r = diner.request(third, Method::GET, &order, None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.value()["type"]
            .as_str()
            .unwrap()
            .ends_with("/unknown-session")
    );
    assert!(r.value()["detail"].as_str().unwrap().contains("colleague"));
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_waiter_carries_on_and_says_so_then_copies_when_a_peer_returns() {
    let mut members = group(2).await;
    members[1].halt().await;
    let created = members[0]
        .client()
        .post_json("/v1/orders", &fries())
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("bistro-replication"), Some("alone"));
    assert_eq!(created.header("bistro-backup"), None);
    let info = members[0].client().get("/v1/waiter").await.unwrap().value();
    assert_eq!(info["replication"]["alone"], true);
    assert_eq!(info["replication"]["unsynced"], 1);
    // The peer returns: the watch task copies the session without a request.
    members[1].serve().await;
    let mut synced = false;
    for _ in 0..100 {
        let info = members[0].client().get("/v1/waiter").await.unwrap().value();
        if info["replication"]["unsynced"] == 0 && info["replication"]["alone"] == false {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(synced, "the session was copied once the peer was back");
    let copies = members[1].client().get("/v1/waiter").await.unwrap().value();
    assert_eq!(copies["replication"]["copies_held"], 1);
    let metrics = members[0].client().get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("bistro_replication_peer_up{peer=\"w2\"} 1"),
        "{metrics}"
    );
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_endpoint_wants_the_group_secret() {
    let members = group(2).await;
    let client = members[0].client();
    let batch = json!({"from": "w2", "incarnation": 1, "items": []});
    let anonymous = client.post_json("/v1/peer/batch", &batch).await.unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("content-type"),
        Some("application/problem+json")
    );
    let wrong = client
        .request(
            Method::POST,
            "/v1/peer/batch",
            &[("authorization", "Bearer not-the-secret-at-all")],
            Some(&batch),
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {SECRET}");
    let stranger = client
        .request(
            Method::POST,
            "/v1/peer/batch",
            &[("authorization", &bearer)],
            Some(&json!({"from": "w9", "incarnation": 1, "items": []})),
        )
        .await
        .unwrap();
    assert_eq!(stranger.status, 403);
    let peer = client
        .request(
            Method::POST,
            "/v1/peer/batch",
            &[("authorization", &bearer)],
            Some(&batch),
        )
        .await
        .unwrap();
    assert_eq!(peer.status, 200, "{}", peer.text());
    assert_eq!(peer.value()["replies"], json!([]));
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_empty_takes_its_sessions_back_from_the_backup() {
    let mut members = group(3).await;
    let (diner, order, backup) = start(&members[0]).await;
    let r = diner
        .request(
            &members[0],
            Method::PATCH,
            &order,
            Some(&json!({"notes": {"spice": 2}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // w1 dies and comes straight back with empty memory; its diners' cookies still
    // name it, and it is up, so the balancer sends them to it.
    members[0].restart_empty().await;
    let read = diner.request(&members[0], Method::GET, &order, None).await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(
        spice(&read.value()),
        2,
        "found on the backup and taken back"
    );
    let info = members[0].client().get("/v1/waiter").await.unwrap().value();
    assert_eq!(info["replication"]["takeovers"], 1);
    // The backup no longer leads or serves it as its own.
    let on_backup = member(&mut members, &backup)
        .client()
        .get("/v1/waiter")
        .await
        .unwrap()
        .value();
    assert_eq!(on_backup["replication"]["sessions_led"], 0);
    // A made-up session is searched for once, then remembered as nowhere.
    let ghost = Diner {
        session: bistro_store::SessionId::generate().to_string(),
    };
    for _ in 0..3 {
        let r = ghost
            .request(&members[0], Method::GET, "/v1/orders", None)
            .await;
        assert_eq!(r.status, 404, "{}", r.text());
    }
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_hello_on_the_backup_resumes_the_order() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut members = group(3).await;
    let (diner, order, backup) = start(&members[0]).await;
    let r = diner
        .request(
            &members[0],
            Method::PATCH,
            &order,
            Some(&json!({"notes": {"spice": 3}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    members[0].halt().await;
    // The line protocol on the backup waiter.
    let b = member(&mut members, &backup);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let tcp = tokio::spawn(bistro_waiter::run_tcp_with(
        listener,
        b.waiter.clone(),
        bistro_waiter::TcpConfig::default(),
        async move {
            let _signal = stopped.await;
        },
    ));
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut lines = BufReader::new(stream);
    let mut send = async |line: &str| -> Vec<String> {
        if !line.is_empty() {
            lines
                .get_mut()
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
        }
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            lines.read_line(&mut l).await.unwrap();
            let l = l.trim_end().to_string();
            let done = l.starts_with("OK") || l.starts_with("ERR");
            out.push(l);
            if done {
                return out;
            }
        }
    };
    let greeting = send("").await;
    assert!(greeting[0].contains("mode=replicated"), "{greeting:?}");
    let hello = send(&format!("HELLO {}", diner.session)).await;
    assert!(hello.last().unwrap().starts_with("OK session"), "{hello:?}");
    let show = send("SHOW").await;
    assert!(show.iter().any(|l| l == "spice 3"), "{show:?}");
    let spice = send("SPICE 5").await;
    assert!(spice.last().unwrap().starts_with("OK spice 5"), "{spice:?}");
    let _ = stop.send(());
    tcp.await.unwrap().unwrap();
    stop_all(members).await;
}
