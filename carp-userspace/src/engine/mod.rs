//! The election engine (placeholder, being written).
