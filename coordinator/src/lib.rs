//! fourm-coordinator: filled by later issues.
