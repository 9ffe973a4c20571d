//! wire formats
