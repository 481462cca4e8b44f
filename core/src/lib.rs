//! stagefan-core: the pure logic of stagefan.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers: the current time and
//! random bytes are always arguments, so every function is deterministic and runs the same
//! natively (tests) and on wasm32 (the Cloudflare Worker).

/// `as_str` (the spelling in JSON, messages and labels) and `Display` for a fieldless enum:
/// `spelled!(Type, "doc of as_str", Type::A => "a", Type::B => "b");`
macro_rules! spelled {
    ($ty:ty, $doc:literal, $( $variant:path => $text:literal ),+ $(,)?) => {
        impl $ty {
            #[doc = $doc]
            pub fn as_str(self) -> &'static str {
                match self { $( $variant => $text, )+ }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod alarm;
pub mod budget;
pub mod config;
pub mod ids;
pub mod ivs;
pub mod ledger;
pub mod meter;
pub mod modes;
pub mod pacing;
pub mod policy;
pub mod pool;
pub mod presence;
pub mod regions;
pub mod replication;
pub mod sigv4;
pub mod summary;
pub mod tags;
pub mod ticket;
pub mod time;
pub mod token;
