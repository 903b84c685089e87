//! Tracking runs on an MLflow server: a typed REST client ([`client`]) and the sync that
//! replays the local run history to it exactly once ([`sync`]). Tracking never blocks or
//! fails a run: the history is written first, and whatever the server has not
//! acknowledged stays pending in the history's ledgers (the outbox) until a later
//! `pipe run` or `pipe runs sync` sends it.

pub mod client;
pub mod multipart;
pub mod registry;
pub mod sync;
