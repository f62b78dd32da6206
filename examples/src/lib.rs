//! Examples of embedding statemesh (not built yet: see issue 5).
