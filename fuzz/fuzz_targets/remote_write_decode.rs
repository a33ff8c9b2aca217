//! Remote-write decoders (v1 and v2) on arbitrary bytes: no panic, no unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    toolwatch_ingest::decode::decode_any(data);
    // Also through snappy, as the handler sees bodies.
    if let Ok(n) = snap::raw::decompress_len(data) {
        if n < 1 << 20 {
            if let Ok(raw) = snap::raw::Decoder::new().decompress_vec(data) {
                toolwatch_ingest::decode::decode_any(&raw);
            }
        }
    }
});
