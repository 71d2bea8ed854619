//! Graph passes (placeholder).
