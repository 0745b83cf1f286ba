//! `cargo +nightly fuzz run onion`: the onion decoder of `bankmesh_node::decoders`.
#![no_main]

use std::sync::{Mutex, OnceLock};

use bankmesh_node::decoders::{Harness, Target};
use libfuzzer_sys::fuzz_target;

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(|| Mutex::new(Harness::seeded().expect("harness")));
    if let Ok(mut h) = harness.lock() {
        h.feed(Target::Onion, data);
    }
});
