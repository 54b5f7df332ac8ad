//! Delivery decisions.
