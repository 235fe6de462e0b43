//! The Redis module against a real server: namespacing, counters with a TTL, and test cleanup.

use std::time::Duration;

use coinalarm_runtime::redis::{Error, KeyTtl, Redis, RedisConfig};
use coinalarm_test_support::redis::{TestRedis, namespace_keys};

async fn connect(test: &TestRedis) -> Redis {
    Redis::connect(&RedisConfig {
        url: test.url().to_owned(),
        namespace: test.namespace().to_owned(),
        pool_size: 2,
        ..RedisConfig::default()
    })
    .await
    .expect("redis")
}

#[tokio::test]
async fn namespaces_isolate_two_handles() {
    let (ta, tb) = (TestRedis::new(), TestRedis::new());
    let (a, b) = (connect(&ta).await, connect(&tb).await);
    a.ping().await.expect("ping");

    a.set_ex("session:1", &b"alice"[..], Duration::from_secs(60))
        .await
        .expect("set a");
    b.set_ex("session:1", &b"bob"[..], Duration::from_secs(60))
        .await
        .expect("set b");

    assert_eq!(
        a.get("session:1").await.expect("get a").as_deref(),
        Some(&b"alice"[..])
    );
    assert_eq!(
        b.get("session:1").await.expect("get b").as_deref(),
        Some(&b"bob"[..])
    );
    assert_eq!(
        ta.keys().await.expect("keys"),
        vec![format!("{}:session:1", ta.namespace())]
    );

    assert!(a.del("session:1").await.expect("del"));
    assert!(!a.del("session:1").await.expect("del again"));
    assert_eq!(a.get("session:1").await.expect("get a"), None);
    assert_eq!(
        b.get("session:1").await.expect("get b").as_deref(),
        Some(&b"bob"[..])
    );
}

#[tokio::test]
async fn set_ex_and_ttl() {
    let test = TestRedis::new();
    let redis = connect(&test).await;
    assert_eq!(redis.ttl("code").await.expect("ttl"), KeyTtl::Missing);

    redis
        .set_ex("code", vec![1_u8, 2, 3], Duration::from_millis(1_500))
        .await
        .expect("set");
    match redis.ttl("code").await.expect("ttl") {
        KeyTtl::ExpiresIn(left) => {
            assert!(
                left > Duration::ZERO && left <= Duration::from_millis(1_500),
                "{left:?}"
            );
        }
        other => panic!("expected an expiry, got {other:?}"),
    }
    assert!(
        redis
            .set_ex("code", vec![1_u8], Duration::ZERO)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn incr_with_ttl_counts_and_sets_the_ttl_once() {
    let test = TestRedis::new();
    let redis = connect(&test).await;
    let window = Duration::from_secs(60);

    assert_eq!(
        redis
            .incr_with_ttl("rl:phone:1", window)
            .await
            .expect("incr"),
        1
    );
    let KeyTtl::ExpiresIn(first) = redis.ttl("rl:phone:1").await.expect("ttl") else {
        panic!("a new counter must expire");
    };
    assert!(first <= window);

    // A longer ttl on later hits must not extend the window fixed by the first hit.
    for expected in 2..=5 {
        let count = redis
            .incr_with_ttl("rl:phone:1", Duration::from_secs(3_600))
            .await
            .expect("incr");
        assert_eq!(count, expected);
    }
    let KeyTtl::ExpiresIn(later) = redis.ttl("rl:phone:1").await.expect("ttl") else {
        panic!("the counter lost its expiry");
    };
    assert!(
        later <= first,
        "window extended from {first:?} to {later:?}"
    );

    // Counters are independent per key.
    assert_eq!(
        redis.incr_with_ttl("rl:ip:1", window).await.expect("incr"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_are_all_counted() {
    let test = TestRedis::new();
    let redis = connect(&test).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let redis = redis.clone();
            tokio::spawn(async move {
                redis
                    .incr_with_ttl("burst", Duration::from_secs(30))
                    .await
                    .expect("incr")
            })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.expect("task"));
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<i64>>());
    assert!(matches!(
        redis.ttl("burst").await.expect("ttl"),
        KeyTtl::ExpiresIn(_)
    ));
}

#[tokio::test]
async fn keys_are_gone_after_drop() {
    let keep = TestRedis::new();
    let kept = connect(&keep).await;
    kept.set_ex("k", &b"stay"[..], Duration::from_secs(60))
        .await
        .expect("set");

    let test = TestRedis::new();
    let (url, namespace) = (test.url().to_owned(), test.namespace().to_owned());
    let redis = connect(&test).await;
    for i in 0..3 {
        redis
            .set_ex(&format!("k{i}"), &b"x"[..], Duration::from_secs(60))
            .await
            .expect("set");
    }
    redis
        .incr_with_ttl("counter", Duration::from_secs(60))
        .await
        .expect("incr");
    assert_eq!(
        namespace_keys(&url, &namespace).await.expect("keys").len(),
        4
    );

    // Drop cleans up synchronously, so no waiting is needed afterwards.
    drop(test);
    assert!(
        namespace_keys(&url, &namespace)
            .await
            .expect("keys")
            .is_empty()
    );
    assert_eq!(
        kept.get("k").await.expect("get").as_deref(),
        Some(&b"stay"[..])
    );
}

#[tokio::test]
async fn connect_fails_fast_on_a_closed_port_and_rejects_an_empty_namespace() {
    // A port that was just free; nothing listens on it once the listener is gone.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let closed = RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        ..RedisConfig::default()
    };
    let err = Redis::connect(&closed).await.expect_err("nothing listens");
    assert!(matches!(err, Error::Connect(_)), "{err:?}");

    let test = TestRedis::new();
    let unnamed = RedisConfig {
        url: test.url().to_owned(),
        namespace: String::new(),
        ..RedisConfig::default()
    };
    let err = Redis::connect(&unnamed).await.expect_err("empty namespace");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
async fn compare_and_delete_leaves_a_newer_value_alone() {
    let test = TestRedis::new();
    let redis = connect(&test).await;
    redis
        .set_ex("signin:code", &b"first"[..], Duration::from_secs(60))
        .await
        .expect("set");
    // Someone replaced the value since it was read: it stays.
    redis
        .set_ex("signin:code", &b"second"[..], Duration::from_secs(60))
        .await
        .expect("replace");
    assert!(
        !redis
            .compare_and_delete("signin:code", &b"first"[..])
            .await
            .expect("compare")
    );
    assert_eq!(
        redis.get("signin:code").await.expect("get").as_deref(),
        Some(&b"second"[..])
    );
    assert!(
        redis
            .compare_and_delete("signin:code", &b"second"[..])
            .await
            .expect("compare")
    );
    assert_eq!(redis.get("signin:code").await.expect("get"), None);
    assert!(
        !redis
            .compare_and_delete("signin:code", &b"second"[..])
            .await
            .expect("missing")
    );
}
