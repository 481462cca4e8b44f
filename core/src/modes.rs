//! The three modes of a deployment: how participant tokens are made ([`TokenMode`]), how the
//! host's stream reaches every stage ([`FanoutMode`]) and where media flows ([`MediaMode`]).

use serde::{Deserialize, Serialize};

use crate::ids::InvalidField;

/// How participant tokens are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TokenMode {
    /// ES384 JWTs minted at the edge with stagefan's own key (no AWS call per viewer).
    #[default]
    SelfSigned,
    /// `CreateParticipantToken` over SigV4.
    Api,
}

/// How the host's stream reaches every stage of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FanoutMode {
    /// The host page publishes to every stage itself.
    #[default]
    MultiPublish,
    /// The host publishes to origin stages only; IVS replicates it into up to 5 more each.
    Replicate,
}

/// Where media flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaMode {
    /// Through `ivs-local`'s WHIP/WHEP-style signaling on this machine.
    Local,
    /// Through Amazon IVS with the IVS Web Broadcast SDK.
    Ivs,
}

/// A mode's spelling ([`spelled!`]: `as_str`, `Display`) and its parse from configuration,
/// whose error names the variable and the spellings it takes.
macro_rules! mode_text {
    ($ty:ty, $field:literal, $( $variant:path => $text:literal ),+ $(,)?) => {
        spelled!($ty, "The spelling used in configuration and JSON.", $( $variant => $text ),+);

        impl $ty {
            /// Parses the configuration spelling (exact, lower case).
            pub fn parse(value: &str) -> Result<Self, InvalidField> {
                match value.trim() {
                    $( $text => Ok($variant), )+
                    other => Err(InvalidField::new(
                        $field,
                        format!(
                            "must be one of {}, got {:?}",
                            [$( concat!("`", $text, "`") ),+].join(" or "),
                            other
                        ),
                    )),
                }
            }
        }
    };
}

mode_text!(TokenMode, "TOKEN_MODE", TokenMode::SelfSigned => "self-signed", TokenMode::Api => "api");
mode_text!(FanoutMode, "FANOUT_MODE", FanoutMode::MultiPublish => "multi-publish", FanoutMode::Replicate => "replicate");
mode_text!(MediaMode, "MEDIA_MODE", MediaMode::Local => "local", MediaMode::Ivs => "ivs");
