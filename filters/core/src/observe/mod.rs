//! What a stream leaves behind: the one audit-record schema, labelled metrics, filter state.

pub mod audit;
pub mod correlate;
pub mod filter_state;
pub mod metrics;
pub mod otlp;
