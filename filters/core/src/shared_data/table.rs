//! A bounded, expiring key → value table in Envoy shared data.
//!
//! Shared data has no delete and no listing, and every key ever written lives as long as the
//! VM. So the table is a fixed grid of slots — `buckets × ways` shared-data keys
//! `<prefix>.<bucket>.<way>` — and a key lives in one bucket (by hash), in any of its ways.
//! A write reuses the key's own slot, else an empty or expired one, else the least recently
//! written one: the table never holds more than `capacity` entries, and stale ones are
//! overwritten. Writes use compare-and-swap, so concurrent workers never tear a slot.
//! A write takes the first never-written way before any later one, so the written ways of a
//! bucket are always a prefix: a scan stops at the first never-written way (each read is a
//! host call).
//!
//! Slot encoding: `[1u8][expires_secs u64 LE][written_nanos u64 LE][key_len u16 LE][key][value]`.

use crate::host::{Host, HostError};

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 2;
const CAS_RETRIES: usize = 4;
/// Longest key and value stored; longer ones are refused (the caller just loses the entry).
pub const MAX_KEY_BYTES: usize = 512;
pub const MAX_VALUE_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTable {
    prefix: String,
    buckets: u32,
    ways: u32,
    ttl_secs: u64,
}

/// One slot's content, borrowed from the bytes shared data returned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot<'a> {
    expires_secs: u64,
    written_nanos: u64,
    key: &'a [u8],
    value: &'a [u8],
}

fn decode(bytes: &[u8]) -> Option<Slot<'_>> {
    if bytes.len() < HEADER || bytes.first() != Some(&VERSION) {
        return None;
    }
    let expires_secs = u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
    let written_nanos = u64::from_le_bytes(bytes.get(9..17)?.try_into().ok()?);
    let key_len = u16::from_le_bytes(bytes.get(17..19)?.try_into().ok()?) as usize;
    let key = bytes.get(HEADER..HEADER + key_len)?;
    let value = bytes.get(HEADER + key_len..)?;
    Some(Slot { expires_secs, written_nanos, key, value })
}

fn encode(expires_secs: u64, written_nanos: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + key.len() + value.len());
    out.push(VERSION);
    out.extend_from_slice(&expires_secs.to_le_bytes());
    out.extend_from_slice(&written_nanos.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// What [`SharedTable::put_unless`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// A live value was there and `keep` kept it.
    Kept,
    /// The key or value is too long, or shared data kept failing.
    Failed,
    /// Every slot the key may live in holds another live key, and the write was one that
    /// must not push a live entry out ([`SharedTable::insert_unless`]).
    Full,
}

/// FNV-1a, 64 bit: stable across VMs and builds (unlike std's randomized hasher).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl SharedTable {
    /// A table of at least `capacity` entries (rounded up to whole buckets of 4 ways) whose
    /// entries expire `ttl_secs` after their last write.
    pub fn new(prefix: &str, capacity: u32, ttl_secs: u64) -> Self {
        let ways = 4u32;
        let buckets = capacity.max(1).div_ceil(ways);
        SharedTable { prefix: prefix.to_string(), buckets, ways, ttl_secs: ttl_secs.max(1) }
    }

    pub fn capacity(&self) -> u32 {
        self.buckets * self.ways
    }

    /// `<prefix>.<bucket>.<way>`, built without the formatting machinery (several per lookup).
    fn slot_key(&self, bucket: u32, way: u32) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 24);
        key.push_str(&self.prefix);
        key.push('.');
        crate::gateway::push_decimal(&mut key, u64::from(bucket));
        key.push('.');
        crate::gateway::push_decimal(&mut key, u64::from(way));
        key
    }

    fn bucket(&self, key: &str) -> u32 {
        (fnv1a64(key.as_bytes()) % u64::from(self.buckets)) as u32
    }

    /// The live value stored under `key`, if any.
    pub fn get(&self, host: &dyn Host, key: &str) -> Option<Vec<u8>> {
        let now = host.now_nanos() / 1_000_000_000;
        let bucket = self.bucket(key);
        for way in 0..self.ways {
            match host.shared_data(&self.slot_key(bucket, way)) {
                Ok((None, _)) => return None,
                Ok((Some(raw), _)) => match decode(&raw) {
                    Some(slot) if slot.key == key.as_bytes() && slot.expires_secs > now => return Some(slot.value.to_vec()),
                    _ => {}
                },
                Err(_) => {}
            }
        }
        None
    }

    /// Stores `value` under `key` (replacing it, refreshing its expiry). Returns false when
    /// the key or value is too long or shared data kept failing.
    pub fn put(&self, host: &dyn Host, key: &str, value: &[u8]) -> bool {
        self.put_unless(host, key, value, |_| false) == Put::Stored
    }

    /// Stores `value` under `key` unless the live value stored there makes `keep` true.
    /// Once a slot has been written, the value `keep` saw and the write are one
    /// compare-and-swap: another worker's write in between is noticed, and the slot is read
    /// and judged again. A slot never written has no CAS value to hold (proxy-wasm shared
    /// data cannot create a key only if absent), so two workers putting the same new key
    /// into a fresh slot at once both succeed and the last write stays.
    pub fn put_unless(&self, host: &dyn Host, key: &str, value: &[u8], keep: impl Fn(&[u8]) -> bool) -> Put {
        self.write(host, key, value, keep, true)
    }

    /// As [`SharedTable::put_unless`], but never overwrites another key's live entry: when
    /// every slot of the key's bucket is live and holds another key, nothing is written and
    /// the answer is [`Put::Full`]. For entries whose loss would fail open (a security pin
    /// pushed out is re-learned from whatever comes next), where the caller must refuse
    /// rather than forget.
    pub fn insert_unless(&self, host: &dyn Host, key: &str, value: &[u8], keep: impl Fn(&[u8]) -> bool) -> Put {
        self.write(host, key, value, keep, false)
    }

    fn write(&self, host: &dyn Host, key: &str, value: &[u8], keep: impl Fn(&[u8]) -> bool, evict: bool) -> Put {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            return Put::Failed;
        }
        let now_nanos = host.now_nanos();
        let now = now_nanos / 1_000_000_000;
        let bucket = self.bucket(key);
        for _ in 0..CAS_RETRIES {
            // Pick the slot: the key's own, else an empty or expired one, else the oldest.
            let mut choice: Option<(String, Option<u32>)> = None;
            let mut oldest: Option<(u64, String, Option<u32>)> = None;
            for way in 0..self.ways {
                let slot_key = self.slot_key(bucket, way);
                let (raw, cas) = match host.shared_data(&slot_key) {
                    Ok((None, cas)) => {
                        // Never written, and so is every later way: the key is not here.
                        if choice.is_none() {
                            choice = Some((slot_key, cas));
                        }
                        break;
                    }
                    Ok((Some(raw), cas)) => (raw, cas),
                    // Writing past an unreadable way could leave a never-written way before
                    // a written one, which scans (stopping at the first) would never reach.
                    Err(_) => return Put::Failed,
                };
                match decode(&raw) {
                    Some(s) if s.key == key.as_bytes() => {
                        if s.expires_secs > now && keep(s.value) {
                            return Put::Kept;
                        }
                        choice = Some((slot_key, cas));
                        break;
                    }
                    Some(s) if s.expires_secs > now => {
                        let older = match &oldest {
                            Some((w, _, _)) => s.written_nanos < *w,
                            None => true,
                        };
                        if older {
                            oldest = Some((s.written_nanos, slot_key, cas));
                        }
                    }
                    _ => {
                        if choice.is_none() {
                            choice = Some((slot_key, cas));
                        }
                    }
                }
            }
            let (slot_key, cas) = match (choice, oldest) {
                (Some(c), _) => c,
                (None, Some((_, k, c))) if evict => (k, c),
                (None, Some(_)) => return Put::Full,
                (None, None) => return Put::Failed,
            };
            let bytes = encode(now.saturating_add(self.ttl_secs), now_nanos, key.as_bytes(), value);
            match host.set_shared_data(&slot_key, &bytes, cas) {
                Ok(()) => return Put::Stored,
                Err(HostError::CasMismatch) => continue,
                Err(_) => return Put::Failed,
            }
        }
        Put::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    fn at(host: &MemoryHost, secs: u64) {
        *host.clock_nanos.borrow_mut() = secs * 1_000_000_000;
    }

    #[test]
    fn put_unless_judges_the_live_value_in_the_same_write() {
        let host = MemoryHost::new();
        at(&host, 100);
        let t = SharedTable::new("t", 16, 60);
        assert_eq!(t.put_unless(&host, "a", b"1", |_| true), Put::Stored, "nothing there to keep");
        assert_eq!(t.put_unless(&host, "a", b"2", |old| old == b"1"), Put::Kept);
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(t.put_unless(&host, "a", b"3", |old| old == b"x"), Put::Stored);
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"3"[..]));
        // An expired value is not there any more: nothing to keep.
        at(&host, 200);
        assert_eq!(t.put_unless(&host, "a", b"4", |_| true), Put::Stored);
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"4"[..]));
        // One read per way up to the key's slot, then the write: no second scan.
        host.calls.borrow_mut().clear();
        assert_eq!(t.put_unless(&host, "a", b"5", |_| false), Put::Stored);
        let calls = host.calls.borrow();
        assert_eq!(calls.iter().filter(|c| c.starts_with("shared_data ")).count(), 1, "{calls:?}");
        assert_eq!(calls.iter().filter(|c| c.starts_with("set_shared_data ")).count(), 1, "{calls:?}");
        assert_eq!(t.put_unless(&host, &"k".repeat(MAX_KEY_BYTES + 1), b"x", |_| false), Put::Failed);
    }

    #[test]
    fn put_unless_judges_again_what_another_worker_wrote_meanwhile() {
        let host = MemoryHost::new();
        at(&host, 100);
        let t = SharedTable::new("t", 4, 60);
        assert!(t.put(&host, "a", b"mine"));
        let slot = host.shared.borrow().keys().next().cloned().unwrap();
        let theirs = encode(160, 100_000_000_000, b"a", b"theirs");
        // Another worker writes between our read and our write: its value is judged and kept.
        host.competing_writes.borrow_mut().push((slot.clone(), theirs.clone()));
        assert_eq!(t.put_unless(&host, "a", b"new", |old| old == b"theirs"), Put::Kept);
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"theirs"[..]));
        // Judged again and not kept: the write goes in over it.
        host.competing_writes.borrow_mut().push((slot, theirs));
        assert_eq!(t.put_unless(&host, "a", b"new", |old| old == b"mine"), Put::Stored);
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn put_get_replace() {
        let host = MemoryHost::new();
        at(&host, 100);
        let t = SharedTable::new("t", 16, 60);
        assert_eq!(t.get(&host, "a"), None);
        assert!(t.put(&host, "a", b"1"));
        assert!(t.put(&host, "b", b"2"));
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"1"[..]));
        assert!(t.put(&host, "a", b"3"));
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"3"[..]));
        assert_eq!(t.get(&host, "b").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn scans_stop_at_the_first_never_written_way() {
        let host = MemoryHost::new();
        at(&host, 100);
        let t = SharedTable::new("t", 4, 60);
        assert_eq!(t.get(&host, "a"), None);
        assert_eq!(host.calls_named("shared_data"), 1);
        assert!(t.put(&host, "a", b"1"));
        assert!(t.put(&host, "b", b"2"));
        host.calls.borrow_mut().clear();
        assert_eq!(t.get(&host, "c"), None);
        assert_eq!(host.calls_named("shared_data"), 3, "two written ways, then the first never-written one");
        assert_eq!(t.get(&host, "b").as_deref(), Some(&b"2"[..]));
        assert_eq!(t.get(&host, "a").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn entries_expire() {
        let host = MemoryHost::new();
        at(&host, 100);
        let t = SharedTable::new("t", 16, 60);
        assert!(t.put(&host, "a", b"1"));
        at(&host, 159);
        assert!(t.get(&host, "a").is_some());
        at(&host, 160);
        assert_eq!(t.get(&host, "a"), None);
    }

    #[test]
    fn bounded_keys_and_eviction_of_oldest() {
        let host = MemoryHost::new();
        let t = SharedTable::new("t", 8, 3600);
        assert_eq!(t.capacity(), 8);
        for i in 0..500u64 {
            *host.clock_nanos.borrow_mut() = 1_000_000_000 + i;
            assert!(t.put(&host, &format!("key-{i}"), b"v"));
        }
        // Never more shared-data keys than slots.
        assert!(host.shared.borrow().len() <= 8);
        // The most recent write always survives.
        assert!(t.get(&host, "key-499").is_some());
        let live = (0..500).filter(|i| t.get(&host, &format!("key-{i}")).is_some()).count();
        assert!((2..=8).contains(&live), "{live}");
    }

    #[test]
    fn insert_unless_never_pushes_a_live_entry_out() {
        let host = MemoryHost::new();
        at(&host, 100);
        // One bucket of four ways: the fifth key has nowhere to go.
        let t = SharedTable::new("t", 4, 60);
        for k in ["a", "b", "c", "d"] {
            assert_eq!(t.insert_unless(&host, k, k.as_bytes(), |_| false), Put::Stored);
        }
        assert_eq!(t.insert_unless(&host, "e", b"e", |_| false), Put::Full);
        for k in ["a", "b", "c", "d"] {
            assert_eq!(t.get(&host, k).as_deref(), Some(k.as_bytes()), "{k} stays");
        }
        assert_eq!(t.get(&host, "e"), None);
        // A key already in the table is still rewritten in its own slot.
        assert_eq!(t.insert_unless(&host, "b", b"B", |_| false), Put::Stored);
        assert_eq!(t.get(&host, "b").as_deref(), Some(&b"B"[..]));
        // An expired entry's slot is free again.
        at(&host, 200);
        assert_eq!(t.insert_unless(&host, "e", b"e", |_| false), Put::Stored);
        // put_unless, by contrast, evicts the oldest live entry.
        let u = SharedTable::new("u", 4, 60);
        for k in ["a", "b", "c", "d", "e"] {
            assert_eq!(u.put_unless(&host, k, b"v", |_| false), Put::Stored);
        }
        assert_eq!(u.get(&host, "a"), None);
    }

    #[test]
    fn refuses_oversized() {
        let host = MemoryHost::new();
        let t = SharedTable::new("t", 8, 60);
        assert!(!t.put(&host, &"k".repeat(MAX_KEY_BYTES + 1), b"v"));
        assert!(!t.put(&host, "k", &vec![0u8; MAX_VALUE_BYTES + 1]));
        assert!(!t.put(&host, "", b"v"));
    }

    #[test]
    fn garbage_in_a_slot_is_treated_as_empty() {
        let host = MemoryHost::new();
        let t = SharedTable::new("t", 4, 60);
        for w in 0..4 {
            host.set_shared_data(&format!("t.0.{w}"), b"junk", None).unwrap();
        }
        assert!(t.put(&host, "x", b"1"));
        assert_eq!(t.get(&host, "x").as_deref(), Some(&b"1"[..]));
    }
}
