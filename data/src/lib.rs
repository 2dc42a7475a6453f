//! fourm-data: filled by later issues.
