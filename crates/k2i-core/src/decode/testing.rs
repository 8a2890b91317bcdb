//! Test helpers shared by the decoders' unit tests.

use super::registry::{NamedSchema, ResolvedSchema, SchemaType};

/// xorshift64*: deterministic, good enough to shake a decoder (reproducible failures, no dependency).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// A registry schema as the registry client resolves it: `text` with `references` as (name, text), each
/// registered under its own name as subject, version 1.
pub(crate) fn resolved(id: u32, schema_type: SchemaType, text: &str, references: &[(&str, &str)]) -> ResolvedSchema {
    ResolvedSchema {
        id,
        schema_type,
        schema: text.to_owned(),
        references: references
            .iter()
            .map(|(name, schema)| NamedSchema {
                name: (*name).into(),
                subject: (*name).into(),
                version: 1,
                schema: (*schema).into(),
            })
            .collect(),
    }
}
