//! fourm-worker: filled by later issues.
