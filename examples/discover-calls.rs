//! Measures discovery call efficiency on recorded responses (filled in below).
fn main() {}
