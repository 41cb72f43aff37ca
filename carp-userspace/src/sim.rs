//! The simulator (placeholder, being written).
