//! The statemesh node runtime (not built yet: see issues 5 and 6).
