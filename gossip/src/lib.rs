//! The statemesh protocol as a sans-IO state machine (not built yet: see issue 3).
