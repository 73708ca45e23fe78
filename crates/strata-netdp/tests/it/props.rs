//! Property test: placeholder.
