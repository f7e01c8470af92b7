//! sse-gateway: an edge proxy for Server-Sent Events.
//!
//! ```text
//!  upstream (one per source)          hub                         server (per client)
//!  ┌──────────────┐   events   ┌────────────────────┐  cursor  ┌──────────────────┐
//!  │ upstream::   │──────────▶ │ Source: ReplayRing │ ◀─────── │ ClientStream     │──▶ socket
//!  │ dial + parse │  (encoded  │ (bounded; it *is*  │  reads   │ (retry, replay,  │
//!  └──────────────┘   once)    │  the broadcast)    │          │ heartbeat, drain)│
//!                              └────────────────────┘          └──────────────────┘
//! ```
//!
//! An event is parsed once by the source's upstream task, encoded once into a shared
//! `Bytes`, and pushed into the source's ring. Every client holds a cursor into that
//! ring, so live delivery and `Last-Event-ID` resumption are the same read. The ring
//! never waits for a client: one that falls too far behind gets `Lagged` and is cut.
//!
//! Module dependencies point one way: `main → server, admin, hub, drain, config`,
//! `server → hub, drain, metrics, config`, `hub → upstream, sse, metrics, config`,
//! `upstream → sse, config`; `sse`, `config`, `metrics` and `drain` use nothing of ours
//! (`telemetry::error_chain`, how errors are written into logs, is used everywhere).

pub mod admin;
pub mod cli;
pub mod config;
pub mod drain;
/// Entry points for `fuzz/` and `tests/fuzz_properties.rs`; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod metrics;
pub mod server;
pub(crate) mod sse;
pub mod telemetry;
pub(crate) mod upstream;
