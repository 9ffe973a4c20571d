//! gemini (in progress)
