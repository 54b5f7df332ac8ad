//! The checks and store calls behind `WEBHOOK ...` and `/webhooks`.
