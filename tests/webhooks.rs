//! Webhooks on both backends, against a real HTTP receiver on 127.0.0.1
//! (allow-listed through `Config`): signatures, order, retries with
//! backoff, dead letters and replay, timeouts, redirects, the address
//! policy, two workers at once, lease takeover, the secret at rest, kinds,
//! enable/disable, delete, in-process consumers and the upgrade to 10.

mod common;
#[path = "webhooks/receiver.rs"]
mod receiver;

use common::{err_code, shared_url};
use creditgate::{
    Config, CreditManager, DeliveryOptions, DeliveryReport, ErrorCode, EventKind, TestClock, Timestamp, verify_webhook,
};
use receiver::{Receiver, Reply};
use serde_json::json;

const KEY: &str = "8f1d3c5e7a9b0d2f4e6a8c0b1d3f5e7a9c0b2d4f6e8a0c1b3d5f7e9a0b2c4d6e";
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn config(clock: &TestClock) -> Config {
    Config::new()
        .webhook_key(KEY)
        .unwrap()
        .webhook_allowed_hosts(vec!["127.0.0.1".into()])
        .unwrap()
        .test_clock(clock.clone())
}

/// A fresh ledger (and its URL, for more managers) with the test key,
/// 127.0.0.1 allow-listed and a test clock.
fn ledger() -> (CreditManager, String, TestClock, common::Guard) {
    let clock = TestClock::new();
    let (url, guard) = shared_url();
    (common::open(&url, config(&clock)), url, clock, guard)
}

/// Fast retries: 1–2 ms backoff, 3 attempts, 2 s timeout.
fn fast() -> DeliveryOptions {
    DeliveryOptions { timeout_ms: 2_000, max_attempts: 3, backoff_base_ms: 1, backoff_max_ms: 2, batch_size: 100 }
}

/// Records `n` `payment.unmapped` events and waits until they show in
/// the outbox; their ids in commit order. (On PostgreSQL an event shows
/// once every older transaction of the server has finished, and tests on
/// other databases of the same server run alongside.)
fn emit(m: &CreditManager, n: usize) -> Vec<i64> {
    let data = |i: usize| json!({"n": i}).as_object().cloned().unwrap();
    let ids: Vec<i64> = (0..n).map(|i| m.record_event(EventKind::PaymentUnmapped, &data(i)).unwrap()).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut after = 0;
    while let Some(last) = ids.last() {
        assert!(std::time::Instant::now() < deadline, "event {last} never showed");
        let page = m.events(after, 1000).unwrap();
        if page.iter().any(|e| e.id == *last) {
            break;
        }
        match page.last() {
            Some(e) => after = e.id,
            None => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    ids
}

/// Passes until subscription `id` has nothing pending and no failure
/// waiting (bounded); the reports added up.
fn drain(m: &CreditManager, id: &str, opts: &DeliveryOptions) -> DeliveryReport {
    let mut total = DeliveryReport::default();
    for _ in 0..2_000 {
        let r = m.deliver_webhooks(opts).unwrap();
        total.sent += r.sent;
        total.failed += r.failed;
        total.dead_lettered += r.dead_lettered;
        let w = m.webhook(id).unwrap();
        if w.pending == 0 && w.attempts == 0 {
            return total;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("subscription {id} did not drain: {:?}", m.webhook(id).unwrap());
}

/// Past the lease of a pass with `opts` (twice the timeout and 5 s).
fn lease(opts: &DeliveryOptions) -> i64 {
    (2 * i64::from(opts.timeout_ms) + 5_000) * 1_000 + 1
}

/// The stored secret of subscription `id`, read with the backend's own client.
fn stored_secret(url: &str, id: &str) -> String {
    let sql = format!("SELECT secret FROM creditgate_webhooks WHERE id = '{id}'");
    match url.strip_prefix("sqlite:///") {
        Some(path) => rusqlite::Connection::open(path).unwrap().query_row(&sql, [], |r| r.get(0)).unwrap(),
        None => postgres::Client::connect(url, postgres::NoTls).unwrap().query_one(&sql, &[]).unwrap().get(0),
    }
}

#[test]
fn deliveries_are_signed_and_verify_only_untampered_and_fresh() {
    let (m, _url, _clock, _g) = ledger();
    let rx = Receiver::start();
    let (sub, secret) = m.create_webhook(&rx.url("/hook"), &[], Some("billing")).unwrap();
    assert!(sub.id.starts_with("wh_") && sub.id.len() == 35, "{}", sub.id);
    assert_eq!((sub.enabled, sub.description.as_deref(), sub.pending), (true, Some("billing"), 0));
    let ids = emit(&m, 1);
    drain(&m, &sub.id, &fast());
    let req = rx.requests().pop().expect("a delivery");
    assert_eq!(req.event_id(), ids[0]);
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(req.header("user-agent").unwrap().starts_with("creditgate/"));
    let now = Timestamp::now();
    let body = verify_webhook(&req.body, &req.headers(), secret.expose(), now, 300).unwrap();
    let event = m.events(0, 10).unwrap().pop().unwrap();
    assert_eq!(body, event.to_json());
    assert_eq!((body["type"].as_str(), body["id"].as_i64()), (Some("payment.unmapped"), Some(ids[0])));
    // Tampered body, timestamp or secret, and a stale delivery, fail.
    let mut tampered = req.body.clone();
    tampered[req.body.len() - 2] ^= 1;
    let fail = |body: &[u8], headers: &[(&str, &str)], secret: &str, now: Timestamp| {
        verify_webhook(body, headers, secret, now, 300).unwrap_err().to_string()
    };
    assert!(fail(&tampered, &req.headers(), secret.expose(), now).contains("signature mismatch"));
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    let moved = (ts + 1).to_string();
    let mut headers = req.headers();
    headers.iter_mut().find(|(n, _)| *n == "webhook-timestamp").unwrap().1 = &moved;
    assert!(fail(&req.body, &headers, secret.expose(), now).contains("signature mismatch"));
    let (_, other) = m.create_webhook(&rx.url("/other"), &[], None).unwrap();
    assert!(fail(&req.body, &req.headers(), other.expose(), now).contains("signature mismatch"));
    let later = Timestamp(now.0 + 301 * 1_000_000);
    assert!(fail(&req.body, &req.headers(), secret.expose(), later).contains("too old"));
    // A rotated secret signs from then on; the old one no longer verifies.
    let rotated = m.rotate_webhook_secret(&sub.id).unwrap();
    assert_ne!(rotated.expose(), secret.expose());
    emit(&m, 1);
    drain(&m, &sub.id, &fast());
    let req = rx.requests().into_iter().rfind(|r| r.path == "/hook").unwrap();
    assert!(verify_webhook(&req.body, &req.headers(), rotated.expose(), Timestamp::now(), 300).is_ok());
    assert!(verify_webhook(&req.body, &req.headers(), secret.expose(), Timestamp::now(), 300).is_err());
}

#[test]
fn a_subscription_receives_events_committed_after_it_in_commit_order_despite_failures() {
    let (m, _url, _clock, _g) = ledger();
    let rx = Receiver::start();
    emit(&m, 3); // before the subscription: not delivered
    let (sub, _) = m.create_webhook(&rx.url("/hook"), &[], None).unwrap();
    rx.script(&[Reply::Status(500), Reply::Status(200), Reply::Status(503), Reply::Status(404), Reply::Status(200)]);
    let ids = emit(&m, 20);
    assert_eq!(m.webhook(&sub.id).unwrap().pending, 20);
    let report = drain(&m, &sub.id, &fast());
    assert_eq!(rx.delivered("/hook"), ids, "each event once, in commit order");
    assert_eq!((report.sent, report.failed, report.dead_lettered), (20, 3, 0));
    let w = m.webhook(&sub.id).unwrap();
    assert_eq!((w.delivered, w.failed_attempts, w.pending, w.lag_seconds, w.attempts), (20, 3, 0, 0, 0));
}

#[test]
fn failures_back_off_then_dead_letter_and_a_replay_delivers() {
    let (m, _url, clock, _g) = ledger();
    let rx = Receiver::start();
    let (sub, _) = m.create_webhook(&rx.url("/hook"), &[], None).unwrap();
    let ids = emit(&m, 2);
    let slow = DeliveryOptions { backoff_base_ms: 60_000, backoff_max_ms: 600_000, ..fast() };
    rx.script(&[Reply::Status(500); 3]);
    let r = m.deliver_webhooks(&slow).unwrap();
    assert_eq!((r.sent, r.failed, r.busy), (0, 1, 0));
    let w = m.webhook(&sub.id).unwrap();
    assert_eq!((w.attempts, w.last_error.as_deref(), w.pending), (1, Some("HTTP 500"), 2));
    let retry = w.next_attempt_at.expect("a retry time");
    // 60 s × equal jitter: between 30 and 60 s ahead.
    let ahead = retry.0 - Timestamp::now().0 - clock.offset_micros();
    assert!((25_000_000..=61_000_000).contains(&ahead), "{ahead}");
    // Waiting for its backoff: the next pass leaves it alone.
    let r = m.deliver_webhooks(&slow).unwrap();
    assert_eq!((r.sent, r.failed, r.busy), (0, 0, 1));
    assert_eq!(rx.requests().len(), 1);
    // Past the backoff: the second attempt; the third dead-letters it.
    clock.advance(61_000_000);
    assert_eq!(m.deliver_webhooks(&slow).unwrap().failed, 1);
    assert_eq!(m.webhook(&sub.id).unwrap().attempts, 2);
    clock.advance(121_000_000);
    let r = m.deliver_webhooks(&slow).unwrap();
    assert_eq!((r.failed, r.dead_lettered), (1, 1));
    let w = m.webhook(&sub.id).unwrap();
    assert_eq!((w.attempts, w.failed_attempts, w.dead_lettered, w.pending), (0, 3, 1, 1));
    let dead = m.webhook_dead_letters(Some(&sub.id), 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].event_id, dead[0].attempts, dead[0].requeued), (ids[0], 3, false));
    assert_eq!((dead[0].kind, dead[0].last_error.as_deref()), (EventKind::PaymentUnmapped, Some("HTTP 500")));
    // The cursor moved on: the next event is delivered.
    drain(&m, &sub.id, &slow);
    assert_eq!(rx.delivered("/hook"), vec![ids[1]]);
    // A replay that fails stays dead (one more attempt); one that succeeds goes.
    assert_eq!(m.replay_dead_letters(&sub.id, None).unwrap(), 1);
    assert!(m.webhook_dead_letters(None, 10).unwrap()[0].requeued);
    rx.script(&[Reply::Status(500)]);
    assert_eq!(m.deliver_webhooks(&slow).unwrap().failed, 1);
    let dead = m.webhook_dead_letters(None, 10).unwrap();
    assert_eq!((dead[0].attempts, dead[0].requeued), (4, false));
    assert_eq!(m.replay_dead_letters(&sub.id, Some(&[ids[0], 999_999])).unwrap(), 1);
    assert_eq!(m.deliver_webhooks(&slow).unwrap().sent, 1);
    assert_eq!(rx.delivered("/hook"), vec![ids[1], ids[0]]);
    assert!(m.webhook_dead_letters(Some(&sub.id), 10).unwrap().is_empty());
    assert_eq!(m.webhook(&sub.id).unwrap().dead_lettered, 0);
    assert_eq!(err_code(m.replay_dead_letters("wh_nope", None)), ErrorCode::NotFound);
    assert_eq!(err_code(m.webhook_dead_letters(Some("wh_nope"), 10)), ErrorCode::NotFound);
}

#[test]
fn a_hanging_receiver_times_out_within_the_bound_and_a_redirect_is_a_failure_not_followed() {
    let (m, _url, _clock, _g) = ledger();
    let rx = Receiver::start();
    let (sub, _) = m.create_webhook(&rx.url("/hook"), &[], None).unwrap();
    emit(&m, 1);
    rx.script(&[Reply::Hang]);
    let opts = DeliveryOptions { timeout_ms: 300, ..fast() };
    let started = std::time::Instant::now();
    assert_eq!(m.deliver_webhooks(&opts).unwrap().failed, 1);
    // The receiver would hang for 30 s: the request's bound ended it.
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(m.webhook(&sub.id).unwrap().last_error.as_deref(), Some("timeout after 300 ms"));
    rx.script(&[Reply::Redirect]);
    let mut report = m.deliver_webhooks(&opts).unwrap();
    while report.failed == 0 {
        report = m.deliver_webhooks(&opts).unwrap(); // the backoff of 1–2 ms
    }
    assert_eq!(m.webhook(&sub.id).unwrap().last_error.as_deref(), Some("HTTP 302"));
    drain(&m, &sub.id, &opts);
    assert!(rx.requests().iter().all(|r| r.path == "/hook"), "the redirect was not followed");
    assert_eq!(m.webhook(&sub.id).unwrap().delivered, 1);
}

#[test]
fn loopback_is_refused_without_the_allow_list_at_creation_and_at_delivery() {
    let (m, url, clock, _g) = ledger();
    let rx = Receiver::start();
    let strict = common::open(&url, Config::new().webhook_key(KEY).unwrap().test_clock(clock.clone()));
    for endpoint in [rx.url("/x"), format!("http://localhost:{}/x", rx.port), format!("http://[::1]:{}/", rx.port)] {
        let e = strict.create_webhook(&endpoint, &[], None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{endpoint}");
        assert!(e.to_string().contains("is not allowed"), "{e}");
    }
    for bad in ["ftp://example.com/", "https://user:pw@example.com/", "callback:me", "http://"] {
        assert_eq!(err_code(strict.create_webhook(bad, &[], None)), ErrorCode::InvalidArgument, "{bad}");
    }
    // Created where it is allowed, delivered where it is not: refused at connection.
    let (sub, _) = m.create_webhook(&rx.url("/x"), &[], None).unwrap();
    emit(&m, 1);
    assert_eq!(strict.deliver_webhooks(&fast()).unwrap().failed, 1);
    let w = strict.webhook(&sub.id).unwrap();
    assert!(w.last_error.as_deref().unwrap().contains("address 127.0.0.1 is not allowed"), "{w:?}");
    assert!(rx.requests().is_empty());
    // No key: creating, rotating and delivering fail closed, naming it.
    let keyless = common::open(&url, Config::new().webhook_allowed_hosts(vec!["127.0.0.1".into()]).unwrap());
    for e in [
        keyless.create_webhook(&rx.url("/y"), &[], None).map(|_| ()).unwrap_err(),
        keyless.rotate_webhook_secret(&sub.id).map(|_| ()).unwrap_err(),
        keyless.deliver_webhooks(&fast()).map(|_| ()).unwrap_err(),
    ] {
        assert!(e.code() == ErrorCode::InvalidArgument && e.to_string().contains("CREDITGATE_WEBHOOK_KEY"), "{e}");
    }
}

#[test]
fn two_workers_at_once_deliver_every_event_and_never_one_event_twice_at_once() {
    let (m, url, clock, _g) = ledger();
    let rx = Receiver::start();
    rx.delay_ms(3);
    let subs: Vec<String> =
        (0..3).map(|i| m.create_webhook(&rx.url(&format!("/s{i}")), &[], None).unwrap().0.id).collect();
    let ids = emit(&m, 30);
    rx.script(&[Reply::Status(500), Reply::Status(200), Reply::Status(502)]);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let w = common::open(&url, config(&clock));
            let subs = subs.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                for _ in 0..5_000 {
                    sent += w.deliver_webhooks(&fast()).unwrap().sent;
                    let done = subs.iter().all(|s| w.webhook(s).is_ok_and(|s| s.pending == 0 && s.attempts == 0));
                    if done {
                        return sent;
                    }
                }
                panic!("the workers did not drain the subscriptions");
            })
        })
        .collect();
    let sent: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(rx.max_in_flight(), 1, "an event was delivered twice at once");
    for (i, s) in subs.iter().enumerate() {
        let mut got = rx.delivered(&format!("/s{i}"));
        got.dedup();
        assert_eq!(got, ids, "subscription {s} got every event, in order");
    }
    assert!(sent.iter().sum::<u64>() >= 90, "{sent:?}");
}

#[test]
fn a_dead_workers_lease_is_taken_over_after_it_expires_and_fences_the_old_worker() {
    let (m, url, clock, _g) = ledger();
    let other = common::open(&url, config(&clock));
    let opts = DeliveryOptions { timeout_ms: 1_000, ..fast() };
    m.handle_events("mailer", &[], &opts, &mut |_| Ok(())).unwrap(); // creates the consumer
    let ids = emit(&m, 3);
    // A worker dies holding the lease (its handler panics mid-turn).
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.handle_events("mailer", &[], &opts, &mut |_| panic!("killed")).ok();
    }));
    assert!(died.is_err());
    let mut seen = Vec::new();
    let r = other
        .handle_events("mailer", &[], &opts, &mut |e| {
            seen.push(e.id);
            Ok(())
        })
        .unwrap();
    assert_eq!((r.busy, seen.len()), (1, 0), "the lease is live");
    clock.advance(lease(&opts));
    let r = other
        .handle_events("mailer", &[], &opts, &mut |e| {
            seen.push(e.id);
            Ok(())
        })
        .unwrap();
    assert_eq!((r.sent, seen.clone()), (3, ids.clone()), "taken over after the lease expired");
    // A worker paused past its lease changes nothing once another took over.
    let more = emit(&m, 2);
    let mut taken_over = Vec::new();
    let r = m
        .handle_events("mailer", &[], &opts, &mut |e| {
            if taken_over.is_empty() {
                clock.advance(lease(&opts));
                let r = other
                    .handle_events("mailer", &[], &opts, &mut |e| {
                        taken_over.push(e.id);
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(r.sent, 2);
            }
            let _ = e;
            Ok(())
        })
        .unwrap();
    assert_eq!((r.sent, taken_over), (0, more), "the paused worker's delivery was fenced off");
    let w = m.webhooks().unwrap().into_iter().find(|w| w.url == "callback:mailer").unwrap();
    assert_eq!((w.delivered, w.pending), (5, 0));
}

#[test]
fn the_secret_is_stored_encrypted_and_another_key_fails_clearly() {
    let (m, url, clock, _g) = ledger();
    let rx = Receiver::start();
    let (sub, secret) = m.create_webhook(&rx.url("/hook"), &[], None).unwrap();
    assert_eq!(format!("{secret:?} {secret}"), "whsec_<redacted> whsec_<redacted>");
    let stored = stored_secret(&url, &sub.id);
    let b64 = secret.expose().strip_prefix("whsec_").unwrap();
    assert!(stored.starts_with("v1:") && !stored.contains(b64), "{stored}");
    assert!(!format!("{:?}", m.config()).contains(KEY));
    emit(&m, 1);
    let wrong = common::open(
        &url,
        Config::new().webhook_key(OTHER_KEY).unwrap().webhook_allowed_hosts(vec!["127.0.0.1".into()]).unwrap(),
    );
    // A subscription sealed under the other key delivers; the first one
    // fails alone, with the reason on it, and does not stop the pass.
    let (other, _) = wrong.create_webhook(&rx.url("/other"), &[], None).unwrap();
    emit(&m, 1);
    let r = wrong.deliver_webhooks(&fast()).unwrap();
    assert_eq!((r.sent, r.failed, r.dead_lettered), (1, 1, 0), "{r:?}");
    let failed = wrong.webhook(&sub.id).unwrap();
    let msg = failed.last_error.clone().unwrap_or_default();
    assert!(msg.contains("encrypted under key") && !msg.contains(b64), "{msg}");
    assert_eq!(failed.attempts, 0, "a key problem does not bring the events closer to the dead letter");
    assert!(rx.delivered("/hook").is_empty());
    assert_eq!(rx.delivered("/other").len(), 1);
    // The right key still delivers both events: the failed turn released its lease.
    let _ = clock;
    drain(&m, &sub.id, &fast());
    assert_eq!(rx.delivered("/hook").len(), 2);
    assert!(m.webhook(&other.id).unwrap().last_error.is_some_and(|e| e.contains("encrypted under key")));
}

#[test]
fn kinds_filter_what_is_delivered_and_counted_and_disabled_or_deleted_get_nothing() {
    let (m, _url, _clock, _g) = ledger();
    let rx = Receiver::start();
    let (only, _) = m.create_webhook(&rx.url("/only"), &[EventKind::PaymentUnmapped], None).unwrap();
    assert_eq!(only.kinds, vec![EventKind::PaymentUnmapped]);
    let (off, _) = m.create_webhook(&rx.url("/off"), &[], None).unwrap();
    assert!(!m.set_webhook_enabled(&off.id, false).unwrap().enabled);
    m.record_payment("alice", "pi_1", 500, "usd").unwrap(); // purchase.first
    let ids = emit(&m, 2);
    m.record_payment("alice", "pi_2", 500, "usd").unwrap(); // no event
    assert_eq!(m.webhook(&only.id).unwrap().pending, 2);
    assert_eq!(m.webhook(&off.id).unwrap().pending, 3, "a disabled subscription still counts what waits");
    drain(&m, &only.id, &fast());
    assert_eq!(rx.delivered("/only"), ids);
    assert!(rx.delivered("/off").is_empty());
    // Enabled again, it resumes where it stopped.
    m.set_webhook_enabled(&off.id, true).unwrap();
    drain(&m, &off.id, &fast());
    assert_eq!(rx.delivered("/off").len(), 3);
    let listed: Vec<String> = m.webhooks().unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(listed, vec![only.id.clone(), off.id.clone()], "oldest first");
    m.delete_webhook(&off.id).unwrap();
    assert_eq!(err_code(m.webhook(&off.id)), ErrorCode::NotFound);
    assert_eq!(err_code(m.delete_webhook(&off.id)), ErrorCode::NotFound);
    assert_eq!(err_code(m.set_webhook_enabled(&off.id, true)), ErrorCode::NotFound);
    emit(&m, 1);
    drain(&m, &only.id, &fast());
    assert_eq!(rx.delivered("/off").len(), 3);
    assert_eq!(m.webhooks().unwrap().len(), 1);
}

#[test]
fn an_in_process_consumer_gets_its_kinds_retries_and_is_left_to_handle_events() {
    let (m, _url, _clock, _g) = ledger();
    let rx = Receiver::start();
    let (sub, _) = m.create_webhook(&rx.url("/hook"), &[], None).unwrap();
    let opts = fast();
    let kinds = [EventKind::PaymentUnmapped];
    assert_eq!(m.handle_events("mailer", &kinds, &opts, &mut |_| Ok(())).unwrap(), DeliveryReport::default());
    m.record_payment("bob", "pi_1", 500, "usd").unwrap();
    let ids = emit(&m, 3);
    let seen = std::cell::RefCell::new(Vec::new());
    let mut fail_once = true;
    let mut handler = |e: &creditgate::Event| {
        if std::mem::take(&mut fail_once) {
            return Err("smtp down".to_string());
        }
        seen.borrow_mut().push(e.id);
        Ok(())
    };
    let r = m.handle_events("mailer", &kinds, &opts, &mut handler).unwrap();
    assert_eq!((r.sent, r.failed), (0, 1));
    let consumer = m.webhooks().unwrap().into_iter().find(|w| w.url == "callback:mailer").unwrap();
    assert_eq!((consumer.attempts, consumer.last_error.as_deref()), (1, Some("handler failed: smtp down")));
    assert_eq!(consumer.pending, 3);
    assert_eq!(err_code(m.rotate_webhook_secret(&consumer.id)), ErrorCode::InvalidArgument);
    for _ in 0..1_000 {
        if m.handle_events("mailer", &kinds, &opts, &mut handler).unwrap().sent > 0 {
            break;
        }
    }
    assert_eq!(*seen.borrow(), ids);
    // deliver_webhooks drives the HTTP subscription only.
    drain(&m, &sub.id, &opts);
    assert_eq!(rx.delivered("/hook").len(), 4);
    assert_eq!(m.webhook(&consumer.id).unwrap().delivered, 3);
    assert_eq!(err_code(m.handle_events("", &kinds, &opts, &mut handler)), ErrorCode::InvalidArgument);
    let bad = DeliveryOptions { max_attempts: 0, ..opts };
    assert_eq!(err_code(m.handle_events("mailer", &kinds, &bad, &mut handler)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.deliver_webhooks(&bad)), ErrorCode::InvalidArgument);
}

#[test]
fn a_version_9_ledger_upgrades_and_subscribes_at_its_outbox_tail() {
    let (url, _g) = shared_url();
    let clock = TestClock::new();
    let m = common::open(&url, config(&clock));
    emit(&m, 2);
    drop(m);
    common::raw_sql(&url, common::UNDO_V13);
    common::raw_sql(&url, common::UNDO_V12);
    common::raw_sql(&url, common::UNDO_V11);
    common::raw_sql(&url, common::UNDO_V10);
    let m = common::open(&url, config(&clock));
    assert_eq!(m.schema_versions().unwrap().0, 9);
    let rx = Receiver::start();
    let (sub, _) = m.create_webhook(&rx.url("/hook"), &[], None).unwrap();
    assert_eq!(m.webhook(&sub.id).unwrap().pending, 0);
    let ids = emit(&m, 1);
    drain(&m, &sub.id, &fast());
    assert_eq!(rx.delivered("/hook"), ids);
}
