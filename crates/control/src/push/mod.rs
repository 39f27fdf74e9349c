//! The push server (placeholder: being built).
