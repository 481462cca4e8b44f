//! Tags on stages and public keys.

use super::*;

impl Store {
    pub(super) fn tags_mut(&mut self, arn: &str) -> Result<&mut Tags, IvsError> {
        let parsed = Arn::parse(arn).map_err(|e| validation(e.to_string()))?;
        match parsed.resource_type {
            ResourceType::Stage => {
                let id = self.stage_id_of(arn)?;
                Ok(&mut self.stages.get_mut(&id).expect("checked").tags)
            }
            ResourceType::PublicKey => {
                let i = self.key_index(arn)?;
                Ok(&mut self.keys[i].tags)
            }
        }
    }

    /// TagResource.
    pub fn tag_resource(&mut self, arn: &str, tags: Tags) -> Result<(), IvsError> {
        ivs::validate_tags(&tags).map_err(validation)?;
        let current = self.tags_mut(arn)?;
        let mut merged = current.clone();
        merged.extend(tags);
        ivs::validate_tags(&merged).map_err(validation)?;
        *current = merged;
        Ok(())
    }

    /// UntagResource.
    pub fn untag_resource(&mut self, arn: &str, keys: &[String]) -> Result<(), IvsError> {
        if keys.is_empty() || keys.len() > ivs::MAX_TAGS {
            return Err(validation("tagKeys must have 1 to 50 members"));
        }
        let current = self.tags_mut(arn)?;
        for k in keys {
            current.remove(k);
        }
        Ok(())
    }

    /// ListTagsForResource.
    pub fn list_tags(&mut self, arn: &str) -> Result<Tags, IvsError> {
        Ok(self.tags_mut(arn)?.clone())
    }
}
