//! Window counters in Envoy shared data, shared by every worker VM of one Envoy (same
//! `vm_id`), updated with compare-and-swap. Windows are fixed (N seconds from the epoch) or
//! calendar days and months ([`Window`]). Used for request, token and cost limits.

use crate::host::{Host, HostError, LogLevel};
pub use crate::shared_data::window::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub window_start_secs: u64,
    pub used: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOutcome {
    pub allowed: bool,
    /// Usage in the current window after this call (unchanged when refused).
    pub used: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

fn decode(bytes: &[u8]) -> Option<WindowState> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    let (start, used) = b.split_at(8);
    Some(WindowState {
        window_start_secs: u64::from_le_bytes(start.try_into().ok()?),
        used: u64::from_le_bytes(used.try_into().ok()?),
    })
}

fn encode(state: WindowState) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&state.window_start_secs.to_le_bytes());
    out[8..].copy_from_slice(&state.used.to_le_bytes());
    out
}

const CAS_RETRIES: usize = 8;

fn now_secs(host: &dyn Host) -> u64 {
    host.now_nanos() / 1_000_000_000
}

fn window_start(now: u64, window: Window) -> u64 {
    window.bounds(now).0
}

/// What one compare-and-swap update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Written to the window starting at `window_start_secs`: usage after the update.
    Done { window_start_secs: u64, used: u64, reset_secs: u64 },
    /// Over the limit, nothing written: usage as it stands.
    Refused { used: u64, reset_secs: u64 },
    /// A negative amount for a window another worker has already closed (its clock read
    /// later than ours): nothing to give back to, nothing written.
    WindowOver,
    /// Shared data kept failing (or kept changing under us).
    Unavailable,
}

/// The window containing `now` gets `amount` added (see [`consume`]).
///
/// Workers read the clock independently, so the stored counter may already belong to a
/// later window than `now`'s (another worker crossed the boundary first). That window is
/// never overwritten with an older one, which would erase its usage: a charge goes to the
/// stored (later) window, a refund for the older window is dropped ([`Applied::WindowOver`]).
fn apply(host: &dyn Host, key: &str, amount: i64, limit: u64, window: Window, force: bool, now: u64) -> Applied {
    let ours = window_start(now, window);
    for _ in 0..CAS_RETRIES {
        let (value, cas) = match host.shared_data(key) {
            Ok(v) => v,
            Err(_) => break,
        };
        let stored = value.as_deref().and_then(decode);
        let (target, current) = match stored {
            Some(s) if s.window_start_secs == ours => (ours, s.used),
            Some(s) if s.window_start_secs > ours && amount <= 0 => return Applied::WindowOver,
            Some(s) if s.window_start_secs > ours => (s.window_start_secs, s.used),
            _ => (ours, 0),
        };
        let reset_secs = window.bounds(target).1.saturating_sub(now);
        let next = if amount < 0 { current.saturating_sub(amount.unsigned_abs()) } else { current.saturating_add(amount.unsigned_abs()) };
        if amount > 0 && next > limit && !force {
            return Applied::Refused { used: current, reset_secs };
        }
        match host.set_shared_data(key, &encode(WindowState { window_start_secs: target, used: next }), cas) {
            Ok(()) => return Applied::Done { window_start_secs: target, used: next, reset_secs },
            Err(HostError::CasMismatch) => continue,
            Err(_) => break,
        }
    }
    Applied::Unavailable
}

/// Adds `amount` to the counter `key` if the result stays within `limit` (or always, when
/// `force`, e.g. to reconcile real usage after the fact). A negative `amount` returns
/// reserved capacity. Fails closed: if shared data keeps failing, the call is refused.
pub fn consume(host: &dyn Host, key: &str, amount: i64, limit: u64, window: Window, force: bool) -> LimitOutcome {
    let now = now_secs(host);
    match apply(host, key, amount, limit, window, force, now) {
        Applied::Done { used, reset_secs, .. } => LimitOutcome { allowed: true, used, reset_secs },
        Applied::Refused { used, reset_secs } => LimitOutcome { allowed: false, used, reset_secs },
        // Only a refund can find its window over: nothing was owed to the current window.
        Applied::WindowOver => LimitOutcome { allowed: true, used: usage(host, key, window), reset_secs: 0 },
        Applied::Unavailable => LimitOutcome { allowed: false, used: 0, reset_secs: window.reset_secs(now) },
    }
}

/// One counter to reserve from in [`reserve_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    pub key: &'a str,
    pub amount: u64,
    pub limit: u64,
    pub window: Window,
}

/// A reservation [`reserve_all`] made: settle it with [`settle`] in the same window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Start of the window the amount was added to (seconds since the epoch).
    pub window_start_secs: u64,
    pub window: Window,
    pub amount: u64,
    /// Usage of the window right after this reservation.
    pub used: u64,
    /// Seconds until that window resets.
    pub reset_secs: u64,
}

/// Why [`reserve_all`] refused: the claim at `index` did not fit (or shared data failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub index: usize,
    /// The counter's usage in its current window (0 when `unavailable`).
    pub used: u64,
    pub reset_secs: u64,
    /// Shared data could not be read or written: refused to fail closed.
    pub unavailable: bool,
}

/// Reserves every claim or none: claims are taken in order, each with compare-and-swap
/// against its own limit; the first that does not fit is refused and the ones already taken
/// are returned. Not atomic across counters: a concurrent request can see a claim that is
/// later rolled back, which can only cause an extra refusal, never a counter above its limit.
/// All claims use one clock reading, so they land in the windows of one instant.
pub fn reserve_all(host: &dyn Host, claims: &[Claim<'_>]) -> Result<Vec<Reservation>, Exceeded> {
    let now = now_secs(host);
    let mut taken: Vec<Reservation> = Vec::with_capacity(claims.len());
    for (index, claim) in claims.iter().enumerate() {
        let amount = i64::try_from(claim.amount).unwrap_or(i64::MAX);
        let window = claim.window;
        let refusal = match apply(host, claim.key, amount, claim.limit, window, false, now) {
            Applied::Done { window_start_secs, used, reset_secs } => {
                taken.push(Reservation {
                    window_start_secs,
                    window,
                    amount: claim.amount,
                    used,
                    reset_secs,
                });
                continue;
            }
            Applied::Refused { used, reset_secs } => Exceeded { index, used, reset_secs, unavailable: false },
            Applied::Unavailable | Applied::WindowOver => Exceeded { index, used: 0, reset_secs: window.reset_secs(now), unavailable: true },
        };
        for (done, claim) in taken.iter().zip(claims) {
            let back = -i64::try_from(done.amount).unwrap_or(i64::MAX);
            if settle_at(host, claim.key, done.window_start_secs, done.window, back, now) == Settlement::Failed {
                host.log(LogLevel::Warn, &format!("tollgate: cannot roll back reservation on {}", claim.key));
            }
        }
        return Err(refusal);
    }
    Ok(taken)
}

/// What [`settle`] did with an adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Applied to the reservation's own window: its usage is now `used`.
    Applied { used: u64 },
    /// The reservation's window is over and the adjustment was positive (real usage above
    /// the reservation): charged to the current window, whose usage is now `used`.
    CarriedOver { used: u64 },
    /// The reservation's window is over and the adjustment was negative (or zero): dropped.
    /// Returning it to the new window would grant capacity that window never lent.
    Dropped,
    /// Shared data kept failing: nothing written.
    Failed,
}

/// Adjusts a reservation made in the window starting at `window_start_secs` by `amount`
/// (real usage minus the reservation: negative returns capacity, positive charges more).
/// Always applied, even above the limit: the usage happened. When the window rolled over
/// since the reservation, a negative amount is dropped and a positive one is charged to the
/// current window (see [`Settlement`]).
pub fn settle(host: &dyn Host, key: &str, window_start_secs: u64, window: Window, amount: i64) -> Settlement {
    settle_at(host, key, window_start_secs, window, amount, now_secs(host))
}

fn settle_at(host: &dyn Host, key: &str, window_start_secs: u64, window: Window, amount: i64, now: u64) -> Settlement {
    // The reservation's window as the clock sees it now, unless a later one is stored.
    let now = now.max(window_start_secs);
    let same_window = window_start(now, window) == window_start_secs;
    if !same_window && amount <= 0 {
        return Settlement::Dropped;
    }
    if amount == 0 {
        return Settlement::Applied { used: usage_at(host, key, window, now) };
    }
    match apply(host, key, amount, u64::MAX, window, true, now) {
        Applied::Done { window_start_secs: target, used, .. } if target == window_start_secs => Settlement::Applied { used },
        Applied::Done { used, .. } => Settlement::CarriedOver { used },
        Applied::WindowOver => Settlement::Dropped,
        Applied::Refused { .. } | Applied::Unavailable => Settlement::Failed,
    }
}

fn usage_at(host: &dyn Host, key: &str, window: Window, now: u64) -> u64 {
    let window_start = window_start(now, window);
    host.shared_data(key)
        .ok()
        .and_then(|(v, _)| v)
        .as_deref()
        .and_then(decode)
        .filter(|s| s.window_start_secs == window_start)
        .map(|s| s.used)
        .unwrap_or(0)
}

/// Current usage of `key` in the current window.
pub fn usage(host: &dyn Host, key: &str, window: Window) -> u64 {
    usage_at(host, key, window, now_secs(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    #[test]
    fn window_limits_and_resets() {
        let host = MemoryHost::new();
        *host.clock_nanos.borrow_mut() = 120 * 1_000_000_000;
        assert!(consume(&host, "k", 6, 10, Window::fixed(60), false).allowed);
        assert!(!consume(&host, "k", 5, 10, Window::fixed(60), false).allowed);
        assert!(consume(&host, "k", 4, 10, Window::fixed(60), false).allowed);
        assert_eq!(usage(&host, "k", Window::fixed(60)), 10);
        assert!(consume(&host, "k", -3, 10, Window::fixed(60), false).allowed);
        assert_eq!(usage(&host, "k", Window::fixed(60)), 7);
        assert!(consume(&host, "k", 50, 10, Window::fixed(60), true).allowed);
        *host.clock_nanos.borrow_mut() = 181 * 1_000_000_000;
        assert_eq!(usage(&host, "k", Window::fixed(60)), 0);
        let out = consume(&host, "k", 1, 10, Window::fixed(60), false);
        assert!(out.allowed);
        assert_eq!(out.reset_secs, 59);
    }

    fn at(host: &MemoryHost, secs: u64) {
        *host.clock_nanos.borrow_mut() = secs * 1_000_000_000;
    }

    #[test]
    fn a_worker_whose_clock_reads_earlier_never_erases_a_later_window() {
        let host = MemoryHost::new();
        // Another worker already counted 5 in the window starting at 120.
        at(&host, 125);
        assert!(consume(&host, "k", 5, 10, Window::fixed(60), false).allowed);
        // This worker's clock still says 119 (window 60): its charge goes to the later
        // window, not over it; its limit is that window's.
        at(&host, 119);
        let out = consume(&host, "k", 4, 10, Window::fixed(60), false);
        assert_eq!((out.allowed, out.used), (true, 9));
        assert!(!consume(&host, "k", 2, 10, Window::fixed(60), false).allowed, "the later window's usage counts");
        // A refund meant for the earlier window is dropped, the later window keeps its usage.
        assert!(consume(&host, "k", -4, 10, Window::fixed(60), false).allowed);
        at(&host, 125);
        assert_eq!(usage(&host, "k", Window::fixed(60)), 9);
        // A reservation made with the stale clock lands in the later window and is settled there.
        at(&host, 119);
        let r = reserve_all(&host, &[Claim { key: "k", amount: 1, limit: 10, window: Window::fixed(60) }]).unwrap();
        assert_eq!((r[0].window_start_secs, r[0].used), (120, 10));
        assert_eq!(settle(&host, "k", r[0].window_start_secs, Window::fixed(60), -1), Settlement::Applied { used: 9 });
        at(&host, 125);
        assert_eq!(usage(&host, "k", Window::fixed(60)), 9);
    }

    #[test]
    fn reserve_all_takes_every_claim_or_none() {
        let host = MemoryHost::new();
        at(&host, 1000);
        let claims = |tokens| {
            [
                Claim { key: "req", amount: 1, limit: 5, window: Window::fixed(60) },
                Claim { key: "tok", amount: tokens, limit: 100, window: Window::fixed(60) },
                Claim { key: "usd", amount: 10, limit: 1_000, window: Window::fixed(3600) },
            ]
        };
        let held = reserve_all(&host, &claims(70)).unwrap();
        assert_eq!(held.len(), 3);
        assert_eq!((held[0].window_start_secs, held[0].used, held[0].reset_secs), (960, 1, 20));
        assert_eq!((held[2].window_start_secs, held[2].window, held[2].reset_secs), (0, Window::fixed(3600), 2600));
        assert_eq!(held[1].amount, 70);
        // The second claim does not fit: nothing is kept, not even the first one.
        let refused = reserve_all(&host, &claims(31)).unwrap_err();
        assert_eq!(refused, Exceeded { index: 1, used: 70, reset_secs: 20, unavailable: false });
        assert_eq!((usage(&host, "req", Window::fixed(60)), usage(&host, "tok", Window::fixed(60)), usage(&host, "usd", Window::fixed(3600))), (1, 70, 10));
        // Exactly at the limit fits.
        assert!(reserve_all(&host, &claims(30)).is_ok());
        assert_eq!(usage(&host, "tok", Window::fixed(60)), 100);
        // A later claim failing rolls back earlier claims on other counters too.
        let refused = reserve_all(&host, &[Claim { key: "req", amount: 1, limit: 5, window: Window::fixed(60) },
                                           Claim { key: "usd", amount: 981, limit: 1_000, window: Window::fixed(3600) }]).unwrap_err();
        assert_eq!((refused.index, refused.used), (1, 20));
        assert_eq!(usage(&host, "req", Window::fixed(60)), 2);
        assert!(reserve_all(&host, &[]).unwrap().is_empty());
    }

    #[test]
    fn settle_adjusts_the_reservation_window() {
        let host = MemoryHost::new();
        at(&host, 100);
        let held = reserve_all(&host, &[Claim { key: "k", amount: 80, limit: 100, window: Window::fixed(60) }]).unwrap();
        let r = held[0];
        assert_eq!(r.window_start_secs, 60);
        // Real usage below the reservation: the difference comes back.
        at(&host, 110);
        assert_eq!(settle(&host, "k", r.window_start_secs, r.window, -70), Settlement::Applied { used: 10 });
        // Real usage above the reservation: charged even over the limit (it happened).
        assert_eq!(settle(&host, "k", r.window_start_secs, r.window, 95), Settlement::Applied { used: 105 });
        assert!(!consume(&host, "k", 1, 100, Window::fixed(60), false).allowed);
        assert_eq!(settle(&host, "k", r.window_start_secs, r.window, 0), Settlement::Applied { used: 105 });
        // Never below zero.
        assert_eq!(settle(&host, "k", r.window_start_secs, r.window, -500), Settlement::Applied { used: 0 });
    }

    #[test]
    fn settle_after_the_window_rolled_over() {
        let host = MemoryHost::new();
        at(&host, 100);
        let r = reserve_all(&host, &[Claim { key: "k", amount: 80, limit: 100, window: Window::fixed(60) }]).unwrap()[0];
        // Next window: another request reserved 50 there.
        at(&host, 130);
        assert!(consume(&host, "k", 50, 100, Window::fixed(60), false).allowed);
        // Returning the old reservation's unused part would free capacity the new window
        // never lent: dropped.
        assert_eq!(settle(&host, "k", r.window_start_secs, r.window, -60), Settlement::Dropped);
        assert_eq!(usage(&host, "k", Window::fixed(60)), 50);
        // Usage beyond the old reservation is still real: charged to the current window.
        assert_eq!(settle(&host, "k", r.window_start_secs, r.window, 7), Settlement::CarriedOver { used: 57 });
        assert_eq!(settle(&host, "k", r.window_start_secs, r.window, 0), Settlement::Dropped);
    }

    /// Shared data that always fails: reservations fail closed, settlements report it.
    struct Broken(MemoryHost);
    impl Host for Broken {
        fn property(&self, p: &[&str]) -> crate::host::HostResult<Option<Vec<u8>>> { self.0.property(p) }
        fn set_property(&self, p: &[&str], v: &[u8]) -> crate::host::HostResult<()> { self.0.set_property(p, v) }
        fn header(&self, m: crate::host::HeaderMap, n: &str) -> crate::host::HostResult<Option<String>> { self.0.header(m, n) }
        fn headers(&self, m: crate::host::HeaderMap) -> crate::host::HostResult<Vec<(String, String)>> { self.0.headers(m) }
        fn set_header(&self, m: crate::host::HeaderMap, n: &str, v: Option<&str>) -> crate::host::HostResult<()> { self.0.set_header(m, n, v) }
        fn add_header(&self, m: crate::host::HeaderMap, n: &str, v: &str) -> crate::host::HostResult<()> { self.0.add_header(m, n, v) }
        fn set_headers(&self, m: crate::host::HeaderMap, p: &[(&str, &str)]) -> crate::host::HostResult<()> { self.0.set_headers(m, p) }
        fn body(&self, b: crate::host::BodyBuffer, s: usize, n: usize) -> crate::host::HostResult<Option<Vec<u8>>> { self.0.body(b, s, n) }
        fn set_body(&self, b: crate::host::BodyBuffer, s: usize, n: usize, v: &[u8]) -> crate::host::HostResult<()> { self.0.set_body(b, s, n, v) }
        fn shared_data(&self, _: &str) -> crate::host::HostResult<(Option<Vec<u8>>, Option<u32>)> { Err(HostError::Status(10)) }
        fn set_shared_data(&self, _: &str, _: &[u8], _: Option<u32>) -> crate::host::HostResult<()> { Err(HostError::Status(10)) }
        fn define_metric(&self, k: crate::host::MetricKind, n: &str) -> crate::host::HostResult<u32> { self.0.define_metric(k, n) }
        fn increment_metric(&self, i: u32, o: i64) -> crate::host::HostResult<()> { self.0.increment_metric(i, o) }
        fn record_metric(&self, i: u32, v: u64) -> crate::host::HostResult<()> { self.0.record_metric(i, v) }
        fn now_nanos(&self) -> u64 { self.0.now_nanos() }
        fn random_bytes(&self, o: &mut [u8]) -> crate::host::HostResult<()> { self.0.random_bytes(o) }
        fn send_local_reply(&self, s: u32, h: &[(&str, &str)], b: &[u8]) -> crate::host::HostResult<()> { self.0.send_local_reply(s, h, b) }
        fn log(&self, l: LogLevel, m: &str) { self.0.log(l, m) }
        fn dispatch_grpc(&self, c: &crate::host::GrpcCall<'_>) -> crate::host::HostResult<u32> { self.0.dispatch_grpc(c) }
        fn dispatch_http(&self, c: &crate::host::HttpCall<'_>) -> crate::host::HostResult<u32> { self.0.dispatch_http(c) }
        fn resume(&self, d: crate::host::Direction) -> crate::host::HostResult<()> { self.0.resume(d) }
    }

    #[test]
    fn shared_data_failure_fails_closed() {
        let host = Broken(MemoryHost::new());
        let refused = reserve_all(&host, &[Claim { key: "k", amount: 1, limit: 10, window: Window::fixed(60) }]).unwrap_err();
        assert!(refused.unavailable);
        assert!(!consume(&host, "k", 1, 10, Window::fixed(60), false).allowed);
        assert_eq!(settle(&host, "k", 0, Window::fixed(60), 5), Settlement::Failed);
    }
}
