//! Acked ⇒ durable: SIGKILL the server at random moments under concurrent
//! load, restart it, and count every acknowledged record exactly once.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use prost::Message;
use rand::Rng;

const CLIENTS: usize = 4;
const KILLS: usize = 12;
const MAX_REQUESTS_PER_CYCLE: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_record_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    // Frequent flushes and merges, so kills also land during part writes
    // and compactions.
    let args = [
        "--flush-interval",
        "200ms",
        "--maintenance-interval",
        "200ms",
    ];
    let mut merges = 0;
    let mut unfinished = 0;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut sent_total = 0usize;
    for cycle in 0..=KILLS {
        let mut server = Server::start(dir.path(), &args);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (url, key, acked, stop) = (
                server.otlp_url("/v1/logs"),
                creds.ingestion_key.clone(),
                acked.clone(),
                stop.clone(),
            );
            clients.push(tokio::spawn(async move {
                let http = client();
                let mut sent = 0usize;
                // Bounded per cycle, so one page of results covers a client's cycle.
                for r in 0..MAX_REQUESTS_PER_CYCLE {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let ids: Vec<String> = (0..3)
                        .map(|i| format!("dur-k{cycle:02}-c{c}-r{r}-i{i}"))
                        .collect();
                    // Two hours old: their hour is sealed, so every
                    // maintenance round merges its parts and kills land in
                    // merges too.
                    let mut req = logs_request("durability", &ids);
                    for r in &mut req.resource_logs[0].scope_logs[0].log_records {
                        r.time_unix_nano -= 2 * 3_600_000_000_000;
                    }
                    let body = req.encode_to_vec();
                    sent += ids.len();
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .header("authorization", &key)
                        .body(body)
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                        // Killed mid-request, or refused: not acknowledged, may or may not be stored.
                        _ => break,
                    }
                }
                sent
            }));
        }
        if cycle < KILLS {
            let wait = rand::rng().random_range(200..1500);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            server.kill9();
            merges += server.logs().matches("merged parts").count();
            unfinished += server
                .logs()
                .matches("part files of unfinished changes")
                .count();
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            sent_total += c.await.unwrap();
        }
        if cycle == KILLS {
            // Final check on the last, still running server.
            let acked = acked.lock().unwrap().clone();
            assert!(
                acked.len() > 100,
                "the test must acknowledge real load, got {}",
                acked.len()
            );
            let mut seen: HashMap<String, usize> = HashMap::new();
            for k in 0..=KILLS {
                for c in 0..CLIENTS {
                    let (status, body) = api_get(
                        &server,
                        &creds.api_token,
                        &format!("/api/v1/search?signal=logs&q=dur-k{k:02}-c{c}-&limit=10000"),
                    )
                    .await;
                    assert_eq!(status, 200, "{body}");
                    let rows = body["rows"].as_array().unwrap();
                    assert!(rows.len() < 10_000, "one page holds a client's cycle");
                    for row in rows {
                        *seen
                            .entry(row["Body"].as_str().unwrap().to_owned())
                            .or_default() += 1;
                    }
                }
            }
            let missing: Vec<_> = acked
                .iter()
                .filter(|id| !seen.contains_key(*id))
                .take(5)
                .collect();
            assert!(
                missing.is_empty(),
                "acknowledged records lost: {missing:?} ({} acked)",
                acked.len()
            );
            let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
            assert!(doubled.is_empty(), "records stored twice: {doubled:?}");
            merges += server.logs().matches("merged parts").count();
            assert!(merges > 0, "compaction ran between the kills");
            eprintln!(
                "{KILLS} kills: {} sent, {} acknowledged, {} stored, all acknowledged present once; {merges} merges, {unfinished} restarts cleaned up an unfinished flush or merge",
                sent_total,
                acked.len(),
                seen.len()
            );
            server.stop();
        }
    }
}

#[tokio::test]
async fn a_torn_wal_tail_is_dropped_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let creds = init(dir.path());
    let mut s = Server::start(dir.path(), &["--flush-interval", "1h"]);
    let body =
        logs_request("torn", &["torn-one".to_string(), "torn-two".to_string()]).encode_to_vec();
    assert_eq!(
        post_otlp(
            &s,
            "/v1/logs",
            Some(&creds.ingestion_key),
            "application/x-protobuf",
            body,
            false
        )
        .await
        .0,
        200
    );
    s.kill9();
    // Simulate a crash mid-write: a partial frame, then random garbage.
    let wal_dir = dir.path().join("wal");
    let newest = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .max()
        .unwrap();
    let mut data = std::fs::read(&newest).unwrap();
    data.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
    data.extend((0..100).map(|_| rand::random::<u8>()));
    std::fs::write(&newest, data).unwrap();
    let s = Server::start(dir.path(), &[]);
    let rows = rows_eventually(&s, &creds.api_token, "/api/v1/search?signal=logs&q=torn", 2).await;
    assert_eq!(rows.len(), 2);
    assert!(s.logs().contains("torn or corrupt"), "{}", s.logs());
    let body = logs_request("torn", &["torn-three".to_string()]).encode_to_vec();
    assert_eq!(
        post_otlp(
            &s,
            "/v1/logs",
            Some(&creds.ingestion_key),
            "application/x-protobuf",
            body,
            false
        )
        .await
        .0,
        200
    );
    assert_eq!(
        rows_eventually(&s, &creds.api_token, "/api/v1/search?signal=logs&q=torn", 3)
            .await
            .len(),
        3
    );
}
