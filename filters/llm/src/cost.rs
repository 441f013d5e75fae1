//! Cost of a request in integer micro-dollars.
//!
//! Prices are configured in dollars per million tokens and converted once, at load, to
//! integer micro-dollars per million tokens (`P`). With the normalized token counts of
//! [`Tokens`] (cached input and cache creation are parts of `input`, reasoning is part of
//! `output`):
//!
//! ```text
//! uncached_input = input - cached_input - cache_creation      (saturating at 0)
//! visible_output = output - reasoning                          (saturating at 0)
//! cost_micro_usd = round_half_up(( uncached_input * P.input
//!                                + cached_input   * P.cached_input
//!                                + cache_creation * P.cache_creation
//!                                + visible_output * P.output
//!                                + reasoning      * P.reasoning ) / 1_000_000)
//! ```
//!
//! The sum is taken in 128-bit integers and divided once, so there is no float rounding
//! and no per-term rounding.

use crate::usage::Tokens;
use std::collections::HashMap;
use tollgate_core::glob::Glob;

/// Micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub cache_creation: u64,
    pub output: u64,
    pub reasoning: u64,
}

pub fn cost_micro_usd(tokens: &Tokens, price: &Price) -> u64 {
    let uncached = tokens.input.saturating_sub(tokens.cached_input).saturating_sub(tokens.cache_creation);
    let visible = tokens.output.saturating_sub(tokens.reasoning);
    let terms = [
        (uncached, price.input),
        (tokens.cached_input, price.cached_input),
        (tokens.cache_creation, price.cache_creation),
        (visible, price.output),
        (tokens.reasoning, price.reasoning),
    ];
    let total = terms
        .iter()
        .fold(0u128, |acc, (n, p)| acc.saturating_add(u128::from(*n) * u128::from(*p)));
    let micros = total.saturating_add(500_000) / 1_000_000;
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// Prices by model: an exact name wins, else the first glob in configuration order.
#[derive(Debug, Default)]
pub struct PriceTable {
    exact: HashMap<String, Price>,
    globs: Vec<(Glob, Price)>,
}

impl PriceTable {
    pub fn new(entries: impl IntoIterator<Item = (String, Price)>) -> Self {
        let mut table = PriceTable::default();
        for (pattern, price) in entries {
            let glob = Glob::new(&pattern);
            if glob.is_exact() {
                table.exact.entry(pattern).or_insert(price);
            } else {
                table.globs.push((glob, price));
            }
        }
        table
    }

    pub fn lookup(&self, model: &str) -> Option<&Price> {
        self.exact
            .get(model)
            .or_else(|| self.globs.iter().find(|(g, _)| g.matches(model)).map(|(_, p)| p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: u64, cached: u64, creation: u64, output: u64, reasoning: u64) -> Price {
        Price { input, cached_input: cached, cache_creation: creation, output, reasoning }
    }

    #[test]
    fn formula_by_hand() {
        // gpt-4o-mini style: $0.15 in, $0.075 cached, $0.60 out (micro-dollars per 1M tokens).
        let p = price(150_000, 75_000, 150_000, 600_000, 600_000);
        let t = Tokens { input: 1000, cached_input: 200, output: 500, ..Default::default() };
        // 800*0.15 + 200*0.075 + 500*0.6 = 120 + 15 + 300 = 435 micro-dollars
        assert_eq!(cost_micro_usd(&t, &p), 435);
        // Reasoning priced separately.
        let p = price(1_000_000, 0, 0, 2_000_000, 5_000_000);
        let t = Tokens { input: 10, output: 30, reasoning: 20, ..Default::default() };
        assert_eq!(cost_micro_usd(&t, &p), 10 + 10 * 2 + 20 * 5);
        // Cache creation (Anthropic: 1.25x input).
        let p = price(3_000_000, 300_000, 3_750_000, 15_000_000, 15_000_000);
        let t = Tokens { input: 100, cached_input: 40, cache_creation: 20, output: 10, ..Default::default() };
        assert_eq!(cost_micro_usd(&t, &p), 40 * 3 + 12 + 75 + 150);
    }

    #[test]
    fn rounds_half_up_once_and_never_overflows() {
        let p = price(150_000, 0, 0, 0, 0);
        let t = |n| Tokens { input: n, ..Default::default() };
        assert_eq!(cost_micro_usd(&t(3), &p), 0); // 0.45
        assert_eq!(cost_micro_usd(&t(4), &p), 1); // 0.6
        assert_eq!(cost_micro_usd(&t(10), &p), 2); // 1.5 -> 2
        let max = price(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        let huge = Tokens { input: u64::MAX, output: u64::MAX, ..Default::default() };
        assert_eq!(cost_micro_usd(&huge, &max), u64::MAX);
        // Inconsistent reports (cached > input) saturate instead of wrapping.
        let t = Tokens { input: 5, cached_input: 9, ..Default::default() };
        assert_eq!(cost_micro_usd(&t, &price(1_000_000, 1_000_000, 0, 0, 0)), 9);
    }

    #[test]
    fn lookup_exact_then_first_glob() {
        let table = PriceTable::new([
            ("gpt-4o*".to_string(), price(1, 0, 0, 0, 0)),
            ("gpt-4o-mini".to_string(), price(2, 0, 0, 0, 0)),
            ("*".to_string(), price(3, 0, 0, 0, 0)),
        ]);
        assert_eq!(table.lookup("gpt-4o-mini").unwrap().input, 2);
        assert_eq!(table.lookup("gpt-4o").unwrap().input, 1);
        assert_eq!(table.lookup("claude").unwrap().input, 3);
        assert!(PriceTable::default().lookup("x").is_none());
    }
}
