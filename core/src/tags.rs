//! The tags stagefan puts on every stage it creates: how a stage is found to be stagefan's,
//! whose broadcast it serves, and which deployment made it (so one deployment's orphan
//! collector never touches another's stages on the same AWS account).

/// The tag every stagefan stage carries with its broadcast id.
pub const TAG_BROADCAST: &str = "stagefan:broadcast";
/// The tag that marks a stage as created and managed by stagefan (`"true"`).
pub const TAG_MANAGED: &str = "stagefan:managed";
/// The tag key naming the deployment (`STAGEFAN_DEPLOYMENT`) whose pool made a stage: an
/// orphan collector only ever looks at its own deployment's stages.
pub const TAG_DEPLOYMENT: &str = "stagefan:deployment";
