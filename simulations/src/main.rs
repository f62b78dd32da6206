//! `simulations`: the CLI of CONTRACT §4.

fn main() {}
