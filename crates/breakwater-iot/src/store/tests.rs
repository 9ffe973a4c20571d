//! The store against both real engines: SQLite in a temporary directory and
//! a fresh PostgreSQL database per test.

use super::*;
use crate::command::Command;
use crate::registry::Action;
use breakwater_testkit::PgDatabase;
use serde_json::json;
use std::collections::HashSet;

/// Keeps the backing database alive for the test.
enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] PgDatabase),
}

async fn sqlite() -> (Store, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("iot.db").display());
    (Store::open(&url).await.unwrap(), Guard::Dir(dir))
}

async fn postgres() -> (Store, Guard) {
    let db = PgDatabase::create().expect("a local PostgreSQL (scripts/test-deps starts it)");
    (Store::open(&db.url()).await.unwrap(), Guard::Pg(db))
}

async fn both() -> Vec<(Store, Guard)> {
    vec![sqlite().await, postgres().await]
}

fn request(id: &str, user: &str, key: Option<&str>, status: RequestStatus, now: i64) -> NewRequest {
    NewRequest {
        id: id.into(),
        user: user.into(),
        idempotency_key: key.map(str::to_string),
        text: "turn on the kitchen light".into(),
        status,
        message: None,
        parse: json!({"parser": "rules"}),
        created_at: now,
        confirm_deadline: (status == RequestStatus::PendingConfirmation).then_some(now + 60_000),
    }
}

fn command(id: &str, seq: i64, action: Action, status: CommandStatus, due_at: Option<i64>) -> NewCommand {
    NewCommand {
        id: id.into(),
        seq,
        command: Command::new("kitchen_ceiling_light", action),
        sensitive: status == CommandStatus::PendingConfirmation,
        status,
        due_at,
    }
}

#[tokio::test]
async fn requests_are_recorded_listed_and_idempotent() {
    for (store, _g) in both().await {
        let e = store.engine();
        let r = request("req_1", "alice", Some("k1"), RequestStatus::Dispatched, 1_000);
        let cmds = [command("cmd_1", 0, Action::TurnOn, CommandStatus::Queued, None)];
        let ev = [NewAudit::request(
            "req_1",
            "alice",
            "utterance",
            json!({"text": r.text}),
        )];
        assert_eq!(
            store.insert_request(&r, &cmds, &ev).await.unwrap(),
            Inserted::New,
            "{e}"
        );
        // the same key again: nothing new, the first request back
        let again = request("req_2", "alice", Some("k1"), RequestStatus::Dispatched, 2_000);
        match store.insert_request(&again, &cmds, &ev).await.unwrap() {
            Inserted::Existing(rec) => {
                assert_eq!(rec.id, "req_1", "{e}");
                assert_eq!(rec.commands.len(), 1);
            }
            other => panic!("{e}: {other:?}"),
        }
        // another user may use the same key
        let bob = request("req_3", "bob", Some("k1"), RequestStatus::NotUnderstood, 3_000);
        assert_eq!(
            store.insert_request(&bob, &[], &[]).await.unwrap(),
            Inserted::New,
            "{e}"
        );

        let got = store.get_request("req_1").await.unwrap().unwrap();
        assert_eq!(got.commands[0].status, CommandStatus::Queued);
        assert_eq!(got.commands[0].command.action, Action::TurnOn);
        let all = store.list_requests(&ListQuery::default()).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["req_3", "req_1"],
            "{e}"
        );
        let alice = store
            .list_requests(&ListQuery {
                user: Some("alice".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(alice.len(), 1);
        let not_understood = store
            .list_requests(&ListQuery {
                status: Some(RequestStatus::NotUnderstood),
                since: Some(2_500),
                limit: Some(10),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(not_understood.len(), 1);
        assert_eq!(not_understood[0].id, "req_3");
        let audit = store
            .audit(&AuditQuery {
                request_id: Some("req_1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(audit.len(), 1, "{e}: the duplicate wrote no audit");
        assert_eq!(audit[0].event, "utterance");
        assert!(store.get_request("req_nope").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn the_outbox_sends_retries_with_the_same_id_and_gives_up() {
    for (store, _g) in both().await {
        let e = store.engine();
        let r = request("req_1", "alice", None, RequestStatus::Dispatched, 0);
        let cmds = [
            command("cmd_a", 0, Action::TurnOn, CommandStatus::Queued, None),
            command("cmd_b", 1, Action::TurnOff, CommandStatus::Queued, None),
        ];
        store.insert_request(&r, &cmds, &[]).await.unwrap();
        let c = store.claim(10, "me", 100, 3, 10).await.unwrap();
        assert_eq!(c.len(), 2, "{e}");
        assert!(c.iter().all(|c| c.attempt == 1));
        // nothing more until the ack deadline
        assert!(store.claim(50, "me", 100, 3, 10).await.unwrap().is_empty(), "{e}");
        assert_eq!(store.next_attempt().await.unwrap(), Some(110));
        // cmd_a is acknowledged; an ack from the wrong device changes nothing
        let wrong = Ack {
            command_id: "cmd_b".into(),
            device: "oven".into(),
            ok: true,
            detail: json!({}),
        };
        let ack = Ack {
            command_id: "cmd_a".into(),
            device: "kitchen_ceiling_light".into(),
            ok: true,
            detail: json!({"state": {"power": "on"}}),
        };
        let changed = store.record_acks(&[wrong, ack.clone(), ack.clone()], 60).await.unwrap();
        assert_eq!(changed, ["cmd_a"], "{e}: duplicates and foreign acks are ignored");
        // cmd_b timed out: resent with the same id, attempt 2, then 3, then given up
        let c = store.claim(111, "me", 100, 3, 10).await.unwrap();
        assert_eq!((c.len(), c[0].id.as_str(), c[0].attempt), (1, "cmd_b", 2), "{e}");
        let c = store.claim(212, "me", 100, 3, 10).await.unwrap();
        assert_eq!(c[0].attempt, 3, "{e}");
        assert!(store.claim(313, "me", 100, 3, 10).await.unwrap().is_empty());
        let b = store.get_command("cmd_b").await.unwrap().unwrap();
        assert_eq!((b.status, b.attempts), (CommandStatus::Unacknowledged, 3), "{e}");
        assert_eq!(store.next_attempt().await.unwrap(), None);
        // a late ack still counts
        let late = Ack {
            command_id: "cmd_b".into(),
            device: "kitchen_ceiling_light".into(),
            ok: true,
            detail: json!({}),
        };
        assert_eq!(store.record_acks(&[late], 400).await.unwrap(), ["cmd_b"]);
        let events: Vec<String> = store
            .audit(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.command_id.as_deref() == Some("cmd_b"))
            .map(|a| a.event)
            .collect();
        assert_eq!(
            events,
            [
                "sent",
                "unacknowledged",
                "sent",
                "unacknowledged",
                "sent",
                "unacknowledged",
                "acknowledged"
            ],
            "{e}"
        );
    }
}

#[tokio::test]
async fn confirmations_belong_to_their_user_and_expire() {
    for (store, _g) in both().await {
        let e = store.engine();
        let r = request("req_1", "alice", None, RequestStatus::PendingConfirmation, 0);
        let cmds = [
            command("cmd_1", 0, Action::Unlock, CommandStatus::PendingConfirmation, None),
            command("cmd_2", 1, Action::TurnOn, CommandStatus::Queued, None),
        ];
        store.insert_request(&r, &cmds, &[]).await.unwrap();
        assert_eq!(
            store.confirm("req_1", "mallory", 10).await.unwrap(),
            ConfirmOutcome::WrongUser
        );
        assert_eq!(
            store.confirm("req_x", "alice", 10).await.unwrap(),
            ConfirmOutcome::NotFound
        );
        assert_eq!(
            store.confirm("req_1", "alice", 20).await.unwrap(),
            ConfirmOutcome::Confirmed(RequestStatus::Dispatched),
            "{e}"
        );
        assert_eq!(
            store.confirm("req_1", "alice", 30).await.unwrap(),
            ConfirmOutcome::NotPending(RequestStatus::Dispatched),
            "{e}: confirming twice does nothing"
        );
        let got = store.get_request("req_1").await.unwrap().unwrap();
        assert_eq!(got.commands[0].status, CommandStatus::Queued);

        // a second request, confirmed too late
        let r = request("req_2", "alice", None, RequestStatus::PendingConfirmation, 1_000);
        store
            .insert_request(
                &r,
                &[command(
                    "cmd_3",
                    0,
                    Action::Unlock,
                    CommandStatus::PendingConfirmation,
                    None,
                )],
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            store.confirm("req_2", "alice", 61_001).await.unwrap(),
            ConfirmOutcome::Expired,
            "{e}"
        );
        let got = store.get_request("req_2").await.unwrap().unwrap();
        assert_eq!(got.status, RequestStatus::Expired);
        assert_eq!(
            got.commands[0].status,
            CommandStatus::Expired,
            "{e}: the sensitive command is dropped"
        );
        // nothing of it reaches the outbox
        let claimed: Vec<String> = store
            .claim(70_000, "me", 100, 3, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(claimed, ["cmd_1", "cmd_2"], "{e}");
    }
}

#[tokio::test]
async fn scheduled_commands_fire_when_due() {
    for (store, _g) in both().await {
        let e = store.engine();
        let r = request("req_1", "alice", None, RequestStatus::Scheduled, 0);
        let cmds = [
            command("cmd_late", 0, Action::TurnOn, CommandStatus::Scheduled, Some(5_000)),
            command("cmd_soon", 1, Action::TurnOff, CommandStatus::Scheduled, Some(1_000)),
        ];
        store.insert_request(&r, &cmds, &[]).await.unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(1_000), "{e}");
        assert!(store.fire_due(999, 10).await.unwrap().is_empty());
        assert_eq!(store.fire_due(1_000, 10).await.unwrap(), ["cmd_soon"], "{e}");
        assert_eq!(store.next_due().await.unwrap(), Some(5_000));
        let c = store.claim(1_001, "me", 100, 3, 10).await.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].id, "cmd_soon");
        assert_eq!(store.fire_due(9_000, 10).await.unwrap(), ["cmd_late"]);
        assert_eq!(store.next_due().await.unwrap(), None);
    }
}

#[tokio::test]
async fn sqlite_is_in_wal_mode_with_full_sync() {
    let (store, _g) = sqlite().await;
    let Pool::Sqlite(p) = &store.pool else { unreachable!() };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(p).await.unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(p).await.unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}

#[tokio::test]
async fn bad_urls_are_refused() {
    assert!(matches!(Store::open("mysql://x").await, Err(StoreError::BadUrl(_))));
}

/// Two instances sharing PostgreSQL claim concurrently: every command is
/// claimed exactly once (SKIP LOCKED), and so is every scheduled one fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_claim_the_same_command() {
    let db = PgDatabase::create().unwrap();
    let a = Store::open(&db.url()).await.unwrap();
    let b = Store::open(&db.url()).await.unwrap();
    let n = 400;
    for chunk in 0..(n / 50) {
        let r = request(&format!("req_{chunk}"), "alice", None, RequestStatus::Dispatched, 0);
        let cmds: Vec<NewCommand> = (0..50i64)
            .map(|i| {
                let status = if i % 2 == 0 {
                    CommandStatus::Queued
                } else {
                    CommandStatus::Scheduled
                };
                let due = (status == CommandStatus::Scheduled).then_some(0);
                command(&format!("cmd_{chunk}_{i}"), i, Action::TurnOn, status, due)
            })
            .collect();
        a.insert_request(&r, &cmds, &[]).await.unwrap();
    }
    let worker = |s: Store, name: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let fired = s.fire_due(1, 7).await.unwrap();
            let got = s.claim(1, name, 1_000_000, 3, 7).await.unwrap();
            if got.is_empty() && fired.is_empty() && s.next_due().await.unwrap().is_none() {
                // the other instance may still hold rows it fired; one last look
                let got = s.claim(1, name, 1_000_000, 3, 7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|c| c.id));
                continue;
            }
            mine.extend(got.into_iter().map(|c| c.id));
        }
        mine
    };
    let both = async {
        tokio::join!(
            tokio::spawn(worker(a.clone(), "a")),
            tokio::spawn(worker(b.clone(), "b"))
        )
    };
    let (x, y) = tokio::time::timeout(std::time::Duration::from_secs(60), both)
        .await
        .expect("bounded in time");
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut all: Vec<String> = x.iter().chain(y.iter()).cloned().collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a command was claimed twice");
    all.sort();
    assert_eq!(
        all.len(),
        n as usize,
        "every command claimed: a={} b={}",
        x.len(),
        y.len()
    );
    a.close().await;
    b.close().await;
}
