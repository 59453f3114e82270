//! exfilwatch: a passive packet-capture exfiltration detector for local-AI subnets.
//!
//! The pipeline, in one paragraph: a capture thread ([`capture`], the only code that touches
//! libpcap) reads frames from capture files (or, later, an interface) and [`decode`]s each into
//! a small owned [`decode::PacketSummary`]; batches of summaries cross a bounded crossbeam
//! channel ([`pipeline`]) to the engine thread ([`engine`]), which tracks flows on packet time
//! ([`flow`]), evaluates the compiled TOML rules on them ([`rules`]), applies rate limits and
//! writes timestamped alerts as EVE-compatible JSON lines or text ([`alert`]). Everything is a
//! library; `main.rs` only parses flags ([`cli`]) and turns the outcome into an exit code.

pub mod alert;
pub mod capture;
pub mod cli;
pub mod community_id;
pub mod decode;
pub mod engine;
pub mod firewall;
pub mod flow;
pub mod pipeline;
pub mod privilege;
pub mod report;
pub mod rules;
pub mod time;

#[cfg(test)]
mod testing;
