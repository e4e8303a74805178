//! Outbound HTTP: the one client set-up shared by the embedding provider, the chat model and
//! URL fetch.

pub mod client;
