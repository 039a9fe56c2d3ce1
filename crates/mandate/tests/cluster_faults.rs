//! Faults under load, on two `mandate serve` instances and a PostgreSQL
//! server of this test's own: one instance killed (SIGKILL), the database's
//! connections cut mid-transaction, the database itself crashed
//! (immediate shutdown) and restarted. Afterwards every decision that was
//! answered has its receipt, the indices run 0..n without a gap, and the
//! stored log hashes to a checkpoint signed by the log's key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mandate_ledger::{MerkleTree, Receipt, SignedCheckpoint};
use serde_json::{Value, json};
use util::{Launch, Server, poll_until};

fn read_inbox(agent: &str) -> Value {
    json!({
        "principal": { "id": agent },
        "action": {
            "server": "mail",
            "tool": "read_inbox",
            "annotations": { "readOnlyHint": true, "destructiveHint": false, "openWorldHint": false }
        }
    })
}

/// Clients deciding in a loop against `urls` until stopped; each keeps the
/// ids of the decisions it was answered (the acknowledged ones).
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<u64>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(urls: &[String], per_url: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let mut clients = Vec::new();
        for (u, url) in urls.iter().enumerate() {
            for k in 0..per_url {
                let (url, stop, acknowledged, refused) = (
                    url.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&acknowledged),
                    Arc::clone(&refused),
                );
                clients.push(std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let sent = http
                            .post(&url)
                            .json(&read_inbox(&format!("agent-{u}-{k}-{n}")))
                            .send();
                        match sent {
                            Ok(reply) if reply.status() == 200 => {
                                let answer: Value = reply.json().unwrap();
                                let id = answer["decision_id"].as_str().unwrap().to_owned();
                                acknowledged.lock().unwrap().push(id);
                            }
                            // A 503 (deny) or a dead instance: not acknowledged.
                            _ => {
                                *refused.lock().unwrap() += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }));
            }
        }
        Self {
            stop,
            acknowledged,
            refused,
            clients,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `more` further decisions are acknowledged.
    fn progress(&self, more: usize, what: &str) {
        let from = self.acknowledged();
        poll_until(Duration::from_secs(120), what, || {
            let now = self.acknowledged();
            if now >= from + more { Ok(()) } else { Err(now) }
        });
    }

    fn finish(self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.join().unwrap();
        }
        let refused = *self.refused.lock().unwrap();
        (
            Arc::try_unwrap(self.acknowledged)
                .unwrap()
                .into_inner()
                .unwrap(),
            refused,
        )
    }
}

fn instance(data: &std::path::Path, url: &str) -> Server {
    Launch::serve(data).env("MANDATE_STORE", url).start()
}

#[test]
fn no_acknowledged_receipt_is_lost_to_a_killed_instance_or_a_crashed_database() {
    let pg = test_postgres::Postgres::start().unwrap();
    let url = pg.database();
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = instance(&data_a, &url);
    util::copy_dir(&data_a.join("keys"), &data_b.join("keys"));
    let b = instance(&data_b, &url);

    let load = Load::start(&[a.url("/v1/decide"), b.url("/v1/decide")], 2);
    load.progress(50, "decisions on both instances");

    // SIGKILL one instance mid-load; the other goes on.
    let _ = a.kill();
    load.progress(50, "decisions on the surviving instance");

    // Cut every connection the instances hold, mid-transaction.
    pg.query(
        &url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'mandate' AND pid <> pg_backend_pid()",
    );
    load.progress(50, "decisions after the connections were cut");

    // Crash the database (no checkpoint, connections gone), bring it back:
    // the instance recovers without a restart.
    pg.crash().unwrap();
    poll_until(Duration::from_secs(60), "health to say failing", || {
        let health = b.health();
        if health["status"] == "failing" {
            Ok(())
        } else {
            Err(health)
        }
    });
    pg.resume().unwrap();
    load.progress(50, "decisions after the database came back");
    poll_until(Duration::from_secs(60), "health to say ok again", || {
        let health = b.health();
        if health["status"] == "ok" {
            Ok(())
        } else {
            Err(health)
        }
    });

    // The killed instance starts again on its data directory.
    let a = instance(&data_a, &url);
    let (acknowledged, refused) = load.finish();

    // Every acknowledged decision has its receipt; indices run 0..n.
    let stored: Vec<(u64, String)> = pg
        .query(&url, "SELECT idx, decision_id FROM receipts ORDER BY idx")
        .lines()
        .map(|line| {
            let (idx, id) = line.split_once('|').unwrap();
            (idx.parse().unwrap(), id.to_owned())
        })
        .collect();
    let indices: Vec<u64> = stored.iter().map(|(idx, _)| *idx).collect();
    assert_eq!(
        indices,
        (0..stored.len() as u64).collect::<Vec<_>>(),
        "no gap"
    );
    let logged: HashSet<&str> = stored.iter().map(|(_, id)| id.as_str()).collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !logged.contains(id.as_str()))
        .collect();
    println!(
        "faults: {} decisions acknowledged, {} refused or unanswered, {} receipts stored, {} acknowledged without a receipt",
        acknowledged.len(),
        refused,
        stored.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but not logged: {lost:?}");

    // The stored log hashes to a checkpoint signed with the log's key.
    let checkpoint: Value = reqwest::blocking::Client::new()
        .get(a.url("/v1/checkpoint"))
        .header("accept", "application/json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let verifier =
        mandate_ledger::LogVerifier::parse(checkpoint["verifier_key"].as_str().unwrap()).unwrap();
    let signed = SignedCheckpoint::open(&verifier, checkpoint["note"].as_str().unwrap()).unwrap();
    let mut tree = MerkleTree::new();
    for line in pg
        .query(
            &url,
            "SELECT encode(signature, 'hex'), body FROM receipts ORDER BY idx",
        )
        .lines()
    {
        let (signature, body) = line.split_once('|').unwrap();
        let signature: Vec<u8> = (0..signature.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&signature[i..i + 2], 16).unwrap())
            .collect();
        assert!(verifier.verify_entry(body.as_bytes(), &signature));
        let receipt: Receipt = serde_json::from_str(body).unwrap();
        assert_eq!(receipt.index, tree.len());
        tree.push(mandate_ledger::receipt::leaf_hash(body.as_bytes()));
    }
    assert!(signed.size <= tree.len());
    assert_eq!(tree.root(signed.size).unwrap(), signed.root);
}
