//! fourm-proto: filled by later issues.
