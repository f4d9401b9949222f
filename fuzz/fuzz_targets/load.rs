//! Any bytes through the loader and the validator: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_api::{Loaded, load_mesh_config, validate};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut loaded = Loaded::default();
        loaded.add_text("fuzz.yaml", text);
        loaded.check_duplicates();
        let _ = validate(&loaded.resources, loaded.mesh.as_ref());
        let _ = load_mesh_config("mesh.yaml", text);
    }
});
