//! Command line and environment. A flag wins over its environment variable.

use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub redis: String,
    pub key_prefix: String,
    pub clock_offset_ms: i64,
}

pub const USAGE: &str = "usage: tollgate-limits [--listen ADDR] [--redis URL] [--key-prefix PREFIX] [--clock-offset-ms N]
  --listen ADDR         gRPC listen address (env TOLLGATE_LIMITS_LISTEN; default 127.0.0.1:18081; port 0 = any)
  --redis URL           Redis URL (env TOLLGATE_LIMITS_REDIS; default redis://127.0.0.1:6379/)
  --key-prefix PREFIX   prefix of every Redis key (env TOLLGATE_LIMITS_KEY_PREFIX; default tollgate:)
  --clock-offset-ms N   signed ms added to the real clock; a test hook (env TOLLGATE_LIMITS_CLOCK_OFFSET_MS; default 0)";

impl Config {
    /// `args` without the program name; `env` looks up an environment variable.
    pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut listen = env("TOLLGATE_LIMITS_LISTEN").unwrap_or_else(|| "127.0.0.1:18081".to_string());
        let mut redis = env("TOLLGATE_LIMITS_REDIS").unwrap_or_else(|| "redis://127.0.0.1:6379/".to_string());
        let mut key_prefix = env("TOLLGATE_LIMITS_KEY_PREFIX").unwrap_or_else(|| "tollgate:".to_string());
        let mut offset = env("TOLLGATE_LIMITS_CLOCK_OFFSET_MS").unwrap_or_else(|| "0".to_string());
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_string());
            }
            let slot = match flag {
                "--listen" => &mut listen,
                "--redis" => &mut redis,
                "--key-prefix" => &mut key_prefix,
                "--clock-offset-ms" => &mut offset,
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            };
            *slot = match inline {
                Some(v) => v,
                None => it.next().cloned().ok_or_else(|| format!("{flag} needs a value"))?,
            };
        }
        Ok(Config {
            listen: listen.parse().map_err(|e| format!("--listen {listen:?}: {e}"))?,
            redis,
            key_prefix,
            clock_offset_ms: offset.trim().parse().map_err(|e| format!("--clock-offset-ms {offset:?}: {e}"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_env_and_flags() {
        let c = Config::parse(&[], |_| None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:18081");
        assert_eq!(c.redis, "redis://127.0.0.1:6379/");
        assert_eq!(c.key_prefix, "tollgate:");
        assert_eq!(c.clock_offset_ms, 0);
        let env = |k: &str| (k == "TOLLGATE_LIMITS_KEY_PREFIX").then(|| "env:".to_string());
        let c = Config::parse(&args(&["--listen", "0.0.0.0:1", "--clock-offset-ms=-2500"]), env).unwrap();
        assert_eq!((c.listen.to_string().as_str(), c.key_prefix.as_str(), c.clock_offset_ms), ("0.0.0.0:1", "env:", -2500));
        let c = Config::parse(&args(&["--key-prefix", "x:"]), env).unwrap();
        assert_eq!(c.key_prefix, "x:");
        assert!(Config::parse(&args(&["--listen"]), |_| None).is_err());
        assert!(Config::parse(&args(&["--bogus", "1"]), |_| None).is_err());
        assert!(Config::parse(&args(&["--clock-offset-ms", "soon"]), |_| None).is_err());
    }
}
