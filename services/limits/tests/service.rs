//! End-to-end tests of the `tollgate-limits` binary against a real `redis-server` (each test starts
//! its own on a free port, in a temporary directory, with `appendonly yes`), through a gRPC client.

// clippy.toml lets #[test] functions unwrap, expect, panic and index; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use tollgate_limits::proto::{
    code, serving, unit, Entry, HealthCheckRequest, HealthCheckResponse, RateLimitDescriptor, RateLimitRequest, RateLimitResponse, SettleRequest, SettleResponse,
    Settlement, UInt64Value, HEALTH_CHECK_PATH, SETTLE_PATH, SHOULD_RATE_LIMIT_PATH,
};
use tollgate_limits::window::Window;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

const GRACE_MS: i64 = 3_600_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// A `redis-server` of our own, with append-only persistence, removed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!("tollgate-limits-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis { child: None, port: free_port(), dir };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--save", "", "--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make redis)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING").as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// One inline command over a raw socket; the first reply line.
    fn command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    fn get(&self, key: &str) -> Option<i64> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    /// A clean shutdown (the append-only file is flushed), then start again on the same port and dir.
    fn restart(&mut self) {
        let _ = self.command("SHUTDOWN");
        if let Some(mut c) = self.child.take() {
            c.wait().unwrap();
        }
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service binary, on a port it picks itself (read from its start line).
struct Service {
    child: Child,
    addr: String,
}

impl Service {
    fn start(redis: &Redis, clock_offset_ms: i64) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-limits"))
            .args(["--listen", "127.0.0.1:0", "--redis", &redis.url(), "--key-prefix", "t:"])
            .arg(format!("--clock-offset-ms={clock_offset_ms}"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in the start line {line:?}"))
            .to_string();
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            eprint!("{rest}");
        });
        Service { child, addr }
    }

    async fn client(&self) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap();
        Client(tonic::client::Grpc::new(channel))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
struct Client(tonic::client::Grpc<Channel>);

impl Client {
    async fn should(&mut self, req: RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
        self.0.ready().await.unwrap();
        let codec = ProstCodec::<RateLimitRequest, RateLimitResponse>::default();
        let path = PathAndQuery::from_static(SHOULD_RATE_LIMIT_PATH);
        self.0.unary(tonic::Request::new(req), path, codec).await.map(|r| r.into_inner())
    }

    async fn health(&mut self, service: &str) -> Result<i32, tonic::Status> {
        self.0.ready().await.unwrap();
        let codec = ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let req = tonic::Request::new(HealthCheckRequest { service: service.to_string() });
        self.0.unary(req, PathAndQuery::from_static(HEALTH_CHECK_PATH), codec).await.map(|r| r.into_inner().status)
    }

    async fn settle(&mut self, req: SettleRequest) -> Result<SettleResponse, tonic::Status> {
        self.0.ready().await.unwrap();
        let codec = ProstCodec::<SettleRequest, SettleResponse>::default();
        self.0.unary(tonic::Request::new(req), PathAndQuery::from_static(SETTLE_PATH), codec).await.map(|r| r.into_inner())
    }
}

fn desc(limit: &str, subject: &str, window: &str, cap: u64, hits: Option<u64>) -> RateLimitDescriptor {
    let e = |k: &str, v: &str| Entry { key: k.to_string(), value: v.to_string() };
    RateLimitDescriptor {
        entries: vec![e("limit", limit), e("subject", subject), e("window", window), e("cap", &cap.to_string())],
        limit: None,
        hits_addend: hits.map(|value| UInt64Value { value }),
    }
}

fn req(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest { domain: "tollgate".to_string(), descriptors, hits_addend: 0 }
}

fn reserved_at(r: &RateLimitResponse) -> i64 {
    let h = r.response_headers_to_add.iter().find(|h| h.key == "x-tollgate-reserved-at").expect("reserved-at header");
    h.value.parse().unwrap()
}

/// The key the service uses (prefix `t:`, domain `tollgate`).
fn key(limit: &str, subject: &str, window: &str, at_ms: i64) -> String {
    let id = Window::parse(window).unwrap().span(at_ms).id;
    format!("t:tollgate|limit={limit}|subject={subject}|window={window}@{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_within_cap_statuses_and_expiry() {
    let redis = Redis::start();
    let svc = Service::start(&redis, 0);
    let mut c = svc.client().await;

    for remaining in [2, 1, 0] {
        let r = c.should(req(vec![desc("rpm", "alice", "60s", 3, None)])).await.unwrap();
        assert_eq!(r.overall_code, code::OK);
        let s = &r.statuses[0];
        assert_eq!((s.code, s.limit_remaining), (code::OK, remaining));
        let limit = s.current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, limit.unit, limit.name.as_str()), (3, unit::MINUTE, "rpm"));
        let until = s.duration_until_reset.as_ref().unwrap();
        let at = reserved_at(&r);
        assert_eq!(until.seconds * 1000 + i64::from(until.nanos) / 1_000_000, (at / 60_000 + 1) * 60_000 - at);
    }
    // Full: refused, nothing counted.
    let r = c.should(req(vec![desc("rpm", "alice", "60s", 3, None)])).await.unwrap();
    assert_eq!((r.overall_code, r.statuses[0].code, r.statuses[0].limit_remaining), (code::OVER_LIMIT, code::OVER_LIMIT, 0));
    let at = reserved_at(&r);
    if at / 60_000 == (at - 50) / 60_000 {
        // (Skip when the window just turned.)
        assert_eq!(redis.get(&key("rpm", "alice", "60s", at)), Some(3));
        // The key expires one grace period after its window ends.
        let expire: i64 = redis::cmd("PEXPIRETIME").arg(key("rpm", "alice", "60s", at)).query(&mut redis.conn()).unwrap();
        assert_eq!(expire, (at / 60_000 + 1) * 60_000 + GRACE_MS);
    }

    // hits_addend: descriptor level wins over request level; 0 is a query.
    let mut r2 = req(vec![desc("tokens", "alice", "day", 1000, None), desc("tokens2", "alice", "day", 1000, Some(7))]);
    r2.hits_addend = 40;
    let r = c.should(r2).await.unwrap();
    assert_eq!(r.statuses.iter().map(|s| s.limit_remaining).collect::<Vec<_>>(), vec![960, 993]);
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().unit, unit::DAY);
    let r = c.should(req(vec![desc("tokens", "alice", "day", 1000, Some(0))])).await.unwrap();
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (code::OK, 960));
    let r = c.should(req(vec![desc("tokens", "alice", "day", 1000, Some(0))])).await.unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 960, "a query counts nothing");
    // A query on an exhausted counter is still OK (0 more fits).
    let r = c.should(req(vec![desc("rpm", "bob", "60s", 0, Some(0))])).await.unwrap();
    assert_eq!(r.overall_code, code::OK);

    // Caps above u32 are counted as u64 and reported clamped.
    let r = c.should(req(vec![desc("usd", "team-a", "month", 10_000_000_000, Some(1_000_000_000))])).await.unwrap();
    assert_eq!(r.overall_code, code::OK);
    let s = &r.statuses[0];
    assert_eq!((s.current_limit.as_ref().unwrap().requests_per_unit, s.limit_remaining), (u32::MAX, u32::MAX));
    let r = c.should(req(vec![desc("usd", "team-a", "month", 10_000_000_000, Some(5_000_000_000))])).await.unwrap();
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (code::OK, 4_000_000_000));
    assert_eq!(s.current_limit.as_ref().unwrap().unit, unit::MONTH);
    let r = c.should(req(vec![desc("usd", "team-a", "month", 10_000_000_000, Some(4_000_000_001))])).await.unwrap();
    assert_eq!(r.overall_code, code::OVER_LIMIT);
    let r = c.should(req(vec![desc("usd", "team-a", "month", 10_000_000_000, Some(4_000_000_000))])).await.unwrap();
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (code::OK, 0));

    // A descriptor without a cap: OK, not counted, nothing in Redis.
    let plain = RateLimitDescriptor {
        entries: vec![Entry { key: "generic_key".to_string(), value: "x".to_string() }],
        limit: None,
        hits_addend: None,
    };
    let r = c.should(req(vec![plain])).await.unwrap();
    assert_eq!((r.overall_code, r.statuses.len(), r.statuses[0].current_limit.is_none()), (code::OK, 1, true));
    assert!(reserved_at(&r) > 0);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*generic_key*").query(&mut redis.conn()).unwrap();
    assert!(keys.is_empty());

    // Malformed descriptors are refused whole.
    let err = c.should(req(vec![desc("rpm", "alice", "fortnight", 3, None)])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_or_nothing_over_two_descriptors_under_concurrency() {
    let redis = Redis::start();
    // Two stateless replicas on one Redis.
    let a = Service::start(&redis, 0);
    let b = Service::start(&redis, 0);
    let (ca, cb) = (a.client().await, b.client().await);
    // 24 requests, each reserving 10 on the team budget (cap 100: ten fit) and 10 on its key's
    // budget (cap 30: three fit per key, two keys). Only 6 can be granted, whatever the order;
    // a request refused by its key's budget must not count against the team's.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut client = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let subject = format!("key-{}", i % 2);
        tasks.push(tokio::spawn(async move {
            client
                .should(req(vec![desc("team", "team-a", "3600s", 100, Some(10)), desc("key", &subject, "3600s", 30, Some(10))]))
                .await
                .unwrap()
        }));
    }
    let mut granted = 0;
    let mut at = 0;
    for t in tasks {
        let r = t.await.unwrap();
        at = reserved_at(&r);
        if r.overall_code == code::OK {
            granted += 1;
            assert!(r.statuses.iter().all(|s| s.code == code::OK));
        } else {
            assert_eq!(r.overall_code, code::OVER_LIMIT);
            // The team budget had room; only the key's descriptor is the one over.
            assert_eq!(r.statuses[0].code, code::OK);
            assert_eq!((r.statuses[1].code, r.statuses[1].limit_remaining), (code::OVER_LIMIT, 0));
        }
    }
    assert_eq!(granted, 6);
    assert_eq!(redis.get(&key("team", "team-a", "3600s", at)), Some(60));
    assert_eq!(redis.get(&key("key", "key-0", "3600s", at)), Some(30));
    assert_eq!(redis.get(&key("key", "key-1", "3600s", at)), Some(30));

    // Now the team budget is the binding one: 40 left, 8 parallel requests of 10 on fresh keys.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut client = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(async move {
            client
                .should(req(vec![desc("team", "team-a", "3600s", 100, Some(10)), desc("key", &format!("fresh-{i}"), "3600s", 30, Some(10))]))
                .await
                .unwrap()
        }));
    }
    let mut granted = 0;
    let mut refused_keys = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if r.overall_code == code::OK {
            granted += 1;
        } else {
            assert_eq!((r.statuses[0].code, r.statuses[1].code), (code::OVER_LIMIT, code::OK));
            refused_keys.push(format!("fresh-{i}"));
        }
    }
    assert_eq!(granted, 4);
    assert_eq!(redis.get(&key("team", "team-a", "3600s", at)), Some(100));
    for k in refused_keys {
        assert_eq!(redis.get(&key("key", &k, "3600s", at)), None, "{k} was refused, so not counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_refund_and_overage() {
    let redis = Redis::start();
    let svc = Service::start(&redis, 0);
    let mut c = svc.client().await;
    let budget = |hits| desc("budget", "team-a", "month", 100, Some(hits));
    let settle = |at: i64, reserved, actual| SettleRequest {
        domain: "tollgate".to_string(),
        settlements: vec![Settlement { descriptor: Some(budget(0)), reserved, actual }],
        reserved_at_unix_ms: u64::try_from(at).unwrap(),
    };

    // Reserve an estimate of 50, spend 20: 30 come back.
    let r = c.should(req(vec![budget(50)])).await.unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 50);
    let at = reserved_at(&r);
    assert_eq!(c.settle(settle(at, 50, 20)).await.unwrap().settled, 1);
    let r = c.should(req(vec![budget(0)])).await.unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 80);

    // Reserve 10, spend 150: the overage is recorded above the cap; the next reservation is refused.
    let r = c.should(req(vec![budget(10)])).await.unwrap();
    assert_eq!(r.overall_code, code::OK);
    assert_eq!(c.settle(settle(reserved_at(&r), 10, 150)).await.unwrap().settled, 1);
    assert_eq!(redis.get(&key("budget", "team-a", "month", at)), Some(20 + 150));
    let r = c.should(req(vec![budget(1)])).await.unwrap();
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (code::OVER_LIMIT, 0));

    // A refund never takes a counter below 0.
    assert_eq!(c.settle(settle(at, 1000, 0)).await.unwrap().settled, 1);
    assert_eq!(redis.get(&key("budget", "team-a", "month", at)), Some(0));

    // A refund for a window whose key is gone applies nowhere and creates nothing...
    let last_month = Window::Month { offset_s: 0 }.span(at).start_ms - 1;
    assert_eq!(c.settle(settle(last_month, 50, 20)).await.unwrap().settled, 0);
    assert_eq!(redis.get(&key("budget", "team-a", "month", last_month)), None);
    // ...but an overage is recorded, with the window's expiry (here: already over, so gone at once
    // unless within the grace period; use a fixed window that ends in the future instead).
    let hourly = |hits| desc("hourly", "team-a", "3600s", 100, Some(hits));
    let r = SettleRequest {
        domain: "tollgate".to_string(),
        settlements: vec![Settlement { descriptor: Some(hourly(0)), reserved: 5, actual: 25 }],
        reserved_at_unix_ms: u64::try_from(at).unwrap(),
    };
    assert_eq!(c.settle(r).await.unwrap().settled, 1);
    assert_eq!(redis.get(&key("hourly", "team-a", "3600s", at)), Some(20));
    let expire: i64 = redis::cmd("PEXPIRETIME").arg(key("hourly", "team-a", "3600s", at)).query(&mut redis.conn()).unwrap();
    assert_eq!(expire, (at / 3_600_000 + 1) * 3_600_000 + GRACE_MS);

    // Several settlements in one call, one per descriptor, atomically.
    let r = c.should(req(vec![budget(40), hourly(40)])).await.unwrap();
    assert_eq!(r.overall_code, code::OK);
    let both = SettleRequest {
        domain: "tollgate".to_string(),
        settlements: vec![
            Settlement { descriptor: Some(budget(0)), reserved: 40, actual: 15 },
            Settlement { descriptor: Some(hourly(0)), reserved: 40, actual: 15 },
        ],
        reserved_at_unix_ms: u64::try_from(reserved_at(&r)).unwrap(),
    };
    assert_eq!(c.settle(both).await.unwrap().settled, 2);
    assert_eq!(redis.get(&key("budget", "team-a", "month", at)), Some(15));
    assert_eq!(redis.get(&key("hourly", "team-a", "3600s", at)), Some(35));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_service_and_redis_restarts() {
    let mut redis = Redis::start();
    let budget = |hits| desc("budget", "team-a", "day", 10, Some(hits));
    {
        let svc = Service::start(&redis, 0);
        let r = svc.client().await.should(req(vec![budget(6)])).await.unwrap();
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (code::OK, 4));
    } // the service is killed here
    let svc = Service::start(&redis, 0);
    let mut c = svc.client().await;
    let r = c.should(req(vec![budget(0)])).await.unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 4, "a new service process sees the spend");
    assert_eq!(c.health("").await.unwrap(), serving::SERVING);
    assert_eq!(c.health("envoy.service.ratelimit.v3.RateLimitService").await.unwrap(), serving::SERVING);
    assert_eq!(c.health("nope").await.unwrap_err().code(), tonic::Code::NotFound);

    // Redis down: UNAVAILABLE (the filter applies its failure policy), never a silent OK.
    let _ = redis.command("SHUTDOWN");
    if let Some(mut child) = redis.child.take() {
        child.wait().unwrap();
    }
    let err = c.should(req(vec![budget(1)])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(c.health("").await.unwrap(), serving::NOT_SERVING);
    // Redis back with its append-only file: the same service reconnects and the spend is there.
    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        match c.should(req(vec![budget(0)])).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect to Redis: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(r.statuses[0].limit_remaining, 4, "the spend survived a Redis restart");
    let r = c.should(req(vec![budget(5)])).await.unwrap();
    assert_eq!(r.overall_code, code::OVER_LIMIT);
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match c.should(req(vec![budget(4)])).await {
            Ok(r) => {
                assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (code::OK, 0));
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect to Redis: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn month_budget_resets_at_the_first_second_of_the_month() {
    let redis = Redis::start();
    // Start the service's clock 4 s before the next UTC month begins.
    let real = now_ms();
    let boundary = Window::Month { offset_s: 0 }.span(real).end_ms;
    let svc = Service::start(&redis, boundary - 4_000 - real);
    let mut c = svc.client().await;
    let budget = |hits| desc("budget", "team-a", "month", 5, Some(hits));

    let r = c.should(req(vec![budget(5)])).await.unwrap();
    let at = reserved_at(&r);
    assert!(at < boundary, "the test must reserve before the month ends");
    assert_eq!(r.overall_code, code::OK);
    let r = c.should(req(vec![budget(1)])).await.unwrap();
    assert_eq!(r.overall_code, code::OVER_LIMIT);
    let until = r.statuses[0].duration_until_reset.as_ref().unwrap();
    let until_ms = until.seconds * 1000 + i64::from(until.nanos) / 1_000_000;
    assert_eq!(until_ms, boundary - reserved_at(&r), "reset at the first second of next month");
    assert!(until_ms <= 4_000);

    tokio::time::sleep(Duration::from_millis(u64::try_from(boundary - reserved_at(&r) + 200).unwrap())).await;
    let r = c.should(req(vec![budget(1)])).await.unwrap();
    assert!(reserved_at(&r) >= boundary);
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (code::OK, 4), "a new month, a new budget");
    // The old month's counter is still there until it expires (a late settlement can land).
    assert_eq!(redis.get(&key("budget", "team-a", "month", at)), Some(5));
}
