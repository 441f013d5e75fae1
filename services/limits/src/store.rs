//! Redis: one Lua script per call, so every reservation and settlement is atomic over all of its
//! keys (the script runs alone on the Redis server). `redis::Script` sends EVALSHA; after a Redis restart emptied the script
//! cache, the NOSCRIPT reply makes it SCRIPT LOAD the script and retry.

use redis::aio::ConnectionManager;
use redis::Script;

/// How long a key outlives its window, so late settlements still find it.
pub const GRACE_MS: i64 = 3_600_000;

/// All-or-nothing reservation.
/// KEYS[i]: the counter of descriptor i; ARGV[3i-2] amount, ARGV[3i-1] cap, ARGV[3i] expire-at
/// (Unix ms). Two descriptors naming the same key are checked with their summed amount.
/// Returns {ok, current_1, over_1, current_2, over_2, ...} where current is the value after the call.
const RESERVE_LUA: &str = r"
local n = #KEYS
local need = {}
for i = 1, n do
  need[KEYS[i]] = (need[KEYS[i]] or 0) + tonumber(ARGV[3 * i - 2])
end
local cur, over, ok = {}, {}, 1
for i = 1, n do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  cur[i] = c
  if c + need[KEYS[i]] > tonumber(ARGV[3 * i - 1]) then
    over[i] = 1
    ok = 0
  else
    over[i] = 0
  end
end
if ok == 1 then
  for i = 1, n do
    if tonumber(ARGV[3 * i - 2]) > 0 then
      redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
      redis.call('PEXPIREAT', KEYS[i], ARGV[3 * i])
    end
  end
  for i = 1, n do
    cur[i] = cur[i] + need[KEYS[i]]
  end
end
local out = {ok}
for i = 1, n do
  out[#out + 1] = cur[i]
  out[#out + 1] = over[i]
end
return out
";

/// Settlement. KEYS[i]: a counter; ARGV[2i-1] delta = actual - reserved (signed), ARGV[2i]
/// expire-at for a key this call creates. A delta applies only when the key still exists or the
/// delta is positive (an overage is recorded even above the cap); a counter never goes below 0.
/// Returns how many settlements applied.
const SETTLE_LUA: &str = r"
local applied = 0
for i = 1, #KEYS do
  local k = KEYS[i]
  local d = tonumber(ARGV[2 * i - 1])
  local exists = redis.call('EXISTS', k) == 1
  if exists or d > 0 then
    if d ~= 0 then
      local c = tonumber(redis.call('GET', k) or '0') or 0
      if c + d < 0 then
        redis.call('SET', k, '0', 'KEEPTTL')
      else
        redis.call('INCRBY', k, ARGV[2 * i - 1])
      end
      if not exists then
        redis.call('PEXPIREAT', k, ARGV[2 * i])
      end
    end
    applied = applied + 1
  end
end
return applied
";

/// One counter to reserve on.
#[derive(Clone, Debug)]
pub struct Reserve {
    pub key: String,
    pub amount: u64,
    pub cap: u64,
    pub expire_at_ms: i64,
}

/// Outcome per counter, in request order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// The counter after the call (unchanged unless the whole reservation was granted).
    pub current: u64,
    /// This counter alone would exceed its cap.
    pub over: bool,
}

/// One counter to settle.
#[derive(Clone, Debug)]
pub struct Settle {
    pub key: String,
    pub delta: i64,
    pub expire_at_ms: i64,
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    reserve: Script,
    settle: Script,
}

impl Store {
    pub fn new(conn: ConnectionManager) -> Store {
        Store { conn, reserve: Script::new(RESERVE_LUA), settle: Script::new(SETTLE_LUA) }
    }

    /// Returns (granted, per-counter outcome).
    pub async fn reserve(&self, items: &[Reserve]) -> Result<(bool, Vec<Counted>), String> {
        let mut inv = self.reserve.prepare_invoke();
        for it in items {
            inv.key(&it.key).arg(it.amount).arg(it.cap).arg(it.expire_at_ms);
        }
        let mut conn = self.conn.clone();
        let out: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(|e| e.to_string())?;
        let (ok, rest) = out.split_first().ok_or("empty reply from the reserve script")?;
        if rest.len() != items.len() * 2 {
            return Err(format!("reserve script returned {} values for {} keys", out.len(), items.len()));
        }
        let counted = rest
            .chunks_exact(2)
            .map(|pair| match pair {
                [current, over] => Counted { current: u64::try_from(*current).unwrap_or(0), over: *over != 0 },
                _ => Counted { current: 0, over: true },
            })
            .collect();
        Ok((*ok == 1, counted))
    }

    /// Redis answers PING.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Returns how many settlements applied.
    pub async fn settle(&self, items: &[Settle]) -> Result<u32, String> {
        let mut inv = self.settle.prepare_invoke();
        for it in items {
            inv.key(&it.key).arg(it.delta).arg(it.expire_at_ms);
        }
        let mut conn = self.conn.clone();
        let applied: i64 = inv.invoke_async(&mut conn).await.map_err(|e| e.to_string())?;
        Ok(u32::try_from(applied).unwrap_or(0))
    }
}
