//! Advert authentication (placeholder, being written).
