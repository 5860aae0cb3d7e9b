//! Admin HTTP API.
