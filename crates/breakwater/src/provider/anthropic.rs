//! anthropic (in progress)
