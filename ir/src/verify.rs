//! The graph verifier (placeholder).
