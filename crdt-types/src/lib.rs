//! statemesh CRDT types (being built: issue 2).
