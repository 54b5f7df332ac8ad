//! A cluster of JetStream nats-servers routed on loopback, ready when JetStream
//! can place a stream on every node; nodes die and come back, and stream leaders
//! are read from stream info.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::{NatsTestClient, RequestError};
use super::process::{NatsAuth, Node, POLL, Route, START_TIMEOUT, free_ports};

/// Bound on the election of a stream leader after its leader is killed: with 3
/// nodes, nats-server 2.9.10 answered publishes with no-responders for 6-9 s
/// after a kill -9 of the leader on this machine.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one probe of a cluster (a stream info request) may take, short so a
/// probe of a node that lost its leader does not use up a wait.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The stream `NatsCluster::start` places on every node to learn that JetStream's
/// meta group is complete; deleted again before the cluster is handed out.
const PROBE_STREAM: &str = "HARNESS_READY";

/// JetStream nats-servers routed to each other on loopback (`server_name` `n<i>`,
/// each with its own store), ready for streams with one replica per node.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// `n` nodes, each with routes to all the others; returns once JetStream can
    /// place an `n`-replica stream. Cluster ports are picked free beforehand, so a
    /// start that loses one to another process is tried again, up to 3 times.
    pub fn start(n: usize) -> NatsCluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(n) {
                Ok(c) => return c,
                Err(e) => failures.push(e),
            }
        }
        panic!("nats cluster did not start:\n{}", failures.join("\n\n"));
    }

    fn try_start(n: usize) -> Result<NatsCluster, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(n);
        let nodes = (0..n)
            .map(|i| {
                let peers = ports
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &p)| p)
                    .collect();
                let route = Route {
                    port: ports[i],
                    peers,
                };
                Node::new(dir.path(), &format!("n{i}"), Some(route), NatsAuth::None)
            })
            .collect();
        let mut cluster = NatsCluster { nodes, _dir: dir };
        // All launched before any wait, so routes form while the others start.
        for node in &mut cluster.nodes {
            node.launch()?;
        }
        for node in &mut cluster.nodes {
            node.wait_ready()?;
        }
        cluster.wait_placement(n)?;
        Ok(cluster)
    }

    /// Waits until the JetStream meta group has a leader, then until a stream with
    /// `n` replicas is placed and has a leader of its own (proof that the meta
    /// group holds every node), then deletes that stream.
    ///
    /// Requests before the meta leader's election go unanswered, hence short
    /// probes; a CREATE is answered once the new stream's group has elected its
    /// leader, hence a long wait for that one. A second CREATE of a stream still
    /// without a leader is answered at once, and a DELETE of it is not answered at
    /// all, so CREATE is sent again only after an error reply.
    fn wait_placement(&mut self, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut client = self.nodes[0].client();
        let mut outcome = client.try_api("$JS.API.INFO", &json!({}), PROBE_TIMEOUT);
        while !matches!(&outcome, Ok(v) if v.get("error").is_none()) {
            self.check_alive(deadline, "a meta leader", &outcome)?;
            outcome = client.try_api("$JS.API.INFO", &json!({}), PROBE_TIMEOUT);
        }
        let create = format!("$JS.API.STREAM.CREATE.{PROBE_STREAM}");
        let config = json!({
            "name": PROBE_STREAM, "subjects": ["harness.ready"], "storage": "memory",
            "num_replicas": n,
        });
        let left = || deadline.saturating_duration_since(Instant::now());
        outcome = client.try_api(&create, &config, left());
        while !matches!(&outcome, Ok(v) if v.get("error").is_none()) {
            self.check_alive(deadline, "a stream on every node", &outcome)?;
            outcome = client.try_api(&create, &config, left());
        }
        let delete = format!("$JS.API.STREAM.DELETE.{PROBE_STREAM}");
        match client.try_api(&delete, &json!({}), left()) {
            Ok(v) if v.get("error").is_none() => Ok(()),
            outcome => Err(format!("{delete}: {outcome:?}")),
        }
    }

    /// Between the attempts of a wait: `Err` when a node exited or the wait's
    /// deadline passed, else a pause.
    fn check_alive(
        &mut self,
        deadline: Instant,
        waiting_for: &str,
        outcome: &Result<Value, RequestError>,
    ) -> Result<(), String> {
        for node in &mut self.nodes {
            node.check_alive()?;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no {waiting_for} in {START_TIMEOUT:?}; last answer: {outcome:?}"
            ));
        }
        std::thread::sleep(POLL);
        Ok(())
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's `nats://127.0.0.1:PORT`, comma-joined, as `--nats` takes them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Node::url).collect();
        urls.join(",")
    }

    /// Node `i`'s `nats://127.0.0.1:PORT`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Node `i`'s client port; the same across restarts.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port()
    }

    /// Node `i`'s `server_name` (`n<i>`), as stream info names leaders and replicas.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].running()
    }

    /// A client connected to node `i`.
    pub fn client(&self, i: usize) -> NatsTestClient {
        self.nodes[i].client()
    }

    /// A client connected to the first node that runs.
    pub fn any_client(&self) -> NatsTestClient {
        let live = self
            .nodes
            .iter()
            .position(Node::running)
            .expect("a running node");
        self.client(live)
    }

    /// Node `i`'s log, across restarts.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log_text()
    }

    /// SIGKILL to node `i`, and waits for the process to go.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// SIGTERM to node `i`, and waits for it to shut down.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Starts node `i` again on its ports with its store (stopping it first when it
    /// runs) and waits until it answers PING; `wait_current` waits for its
    /// replicas to catch up.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].stop();
        if let Err(e) = self.nodes[i].start() {
            panic!("nats-server {i} did not restart: {e}");
        }
    }

    /// The node leading `stream`, from `$JS.API.STREAM.INFO`'s `cluster.leader` as
    /// any running node answers; `None` while there is no leader, the answer
    /// names no node, or no node answers in time.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let info = self.probe_stream_info(stream)?;
        let leader = info["cluster"]["leader"].as_str()?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Waits (up to `LEADER_TIMEOUT`) until `stream` has a leader other than node `not`, and
    /// returns it: after a kill of the leader, the newly elected one.
    pub fn wait_stream_leader(&self, stream: &str, not: Option<usize>) -> usize {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            match self.stream_leader(stream) {
                Some(i) if Some(i) != not && self.nodes[i].running() => return i,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "no leader for stream {stream} (other than {not:?}) in {LEADER_TIMEOUT:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits (up to `LEADER_TIMEOUT`) until every replica of `stream` is current and the
    /// stream has a leader: after a restart, the node has caught up.
    pub fn wait_current(&self, stream: &str) {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let info = self.probe_stream_info(stream);
            let current = info.as_ref().is_some_and(|v| {
                let c = &v["cluster"];
                let replicas = c["replicas"].as_array().map_or(&[][..], Vec::as_slice);
                c["leader"].as_str().is_some_and(|l| !l.is_empty())
                    && replicas.len() + 1 == self.nodes.len()
                    && replicas.iter().all(|r| r["current"] == true)
            });
            if current {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replicas of {stream} not current in {LEADER_TIMEOUT:?}: {info:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Stream info from the first running node that answers within `PROBE_TIMEOUT`.
    fn probe_stream_info(&self, stream: &str) -> Option<Value> {
        let subject = format!("$JS.API.STREAM.INFO.{stream}");
        self.nodes.iter().filter(|n| n.running()).find_map(|n| {
            let mut c = NatsTestClient::connect(&n.url_with_auth()).ok()?;
            match c.try_request(&subject, &[], b"", PROBE_TIMEOUT) {
                Ok((_, payload)) => serde_json::from_slice::<Value>(&payload)
                    .ok()
                    .filter(|v| v.get("error").is_none()),
                Err(RequestError::NoResponders | RequestError::Timeout) => None,
                Err(RequestError::Closed(_)) => None,
            }
        })
    }
}
