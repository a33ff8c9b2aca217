//! Chunk decoders on arbitrary bytes (a damaged block): no panic, bounded output.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&enc, rest)) = data.split_first() {
        let n = toolwatch_storage::chunk::decode(enc % 3, rest).take(70_000).count();
        assert!(n <= u16::MAX as usize);
    }
});
