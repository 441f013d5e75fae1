//! Fixed-window counters in Envoy shared data, shared by every worker VM of one Envoy
//! (same `vm_id`), updated with compare-and-swap. Used for request and token limits.

use crate::host::{Host, HostError};

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

/// Adds `amount` to the counter `key` if the result stays within `limit` (or always, when
/// `force`, e.g. to reconcile real usage after the fact). A negative `amount` returns
/// reserved capacity. Fails closed: if shared data keeps failing, the call is refused.
pub fn consume(host: &dyn Host, key: &str, amount: i64, limit: u64, window_secs: u64, force: bool) -> LimitOutcome {
    let now = host.now_nanos() / 1_000_000_000;
    let window_secs = window_secs.max(1);
    let window_start = now - now % window_secs;
    for _ in 0..CAS_RETRIES {
        let (value, cas) = match host.shared_data(key) {
            Ok(v) => v,
            Err(_) => break,
        };
        let current = value
            .as_deref()
            .and_then(decode)
            .filter(|s| s.window_start_secs == window_start)
            .map(|s| s.used)
            .unwrap_or(0);
        let next = if amount < 0 { current.saturating_sub(amount.unsigned_abs()) } else { current.saturating_add(amount as u64) };
        let reset_secs = window_start + window_secs - now;
        if amount > 0 && next > limit && !force {
            return LimitOutcome { allowed: false, used: current, reset_secs };
        }
        match host.set_shared_data(key, &encode(WindowState { window_start_secs: window_start, used: next }), cas) {
            Ok(()) => return LimitOutcome { allowed: true, used: next, reset_secs },
            Err(HostError::CasMismatch) => continue,
            Err(_) => break,
        }
    }
    LimitOutcome { allowed: false, used: 0, reset_secs: window_secs }
}

/// Current usage of `key` in the current window.
pub fn usage(host: &dyn Host, key: &str, window_secs: u64) -> u64 {
    let now = host.now_nanos() / 1_000_000_000;
    let window_secs = window_secs.max(1);
    let window_start = now - now % window_secs;
    host.shared_data(key)
        .ok()
        .and_then(|(v, _)| v)
        .as_deref()
        .and_then(decode)
        .filter(|s| s.window_start_secs == window_start)
        .map(|s| s.used)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    #[test]
    fn window_limits_and_resets() {
        let host = MemoryHost::new();
        *host.clock_nanos.borrow_mut() = 120 * 1_000_000_000;
        assert!(consume(&host, "k", 6, 10, 60, false).allowed);
        assert!(!consume(&host, "k", 5, 10, 60, false).allowed);
        assert!(consume(&host, "k", 4, 10, 60, false).allowed);
        assert_eq!(usage(&host, "k", 60), 10);
        assert!(consume(&host, "k", -3, 10, 60, false).allowed);
        assert_eq!(usage(&host, "k", 60), 7);
        assert!(consume(&host, "k", 50, 10, 60, true).allowed);
        *host.clock_nanos.borrow_mut() = 181 * 1_000_000_000;
        assert_eq!(usage(&host, "k", 60), 0);
        let out = consume(&host, "k", 1, 10, 60, false);
        assert!(out.allowed);
        assert_eq!(out.reset_secs, 59);
    }
}
