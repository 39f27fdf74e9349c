//! The weftd HTTP API (placeholder: being built).
