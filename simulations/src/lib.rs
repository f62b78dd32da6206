//! Deterministic partition simulator of the sans-IO gossip core (not built yet: see issue 4).
