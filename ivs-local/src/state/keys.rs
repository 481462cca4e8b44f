//! Imported public keys (the keys participant tokens are verified with).

use super::*;

impl Store {
    /// ImportPublicKey.
    pub fn import_public_key(
        &mut self,
        pem: &str,
        name: Option<String>,
        tags: Option<Tags>,
        random_id: &[u8; 12],
    ) -> Result<PublicKey, IvsError> {
        let name = name.unwrap_or_default();
        ivs::validate_name(&name).map_err(validation)?;
        let tags = tags.unwrap_or_default();
        ivs::validate_tags(&tags).map_err(validation)?;
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(validation(
                "publicKeyMaterial must be a PEM-encoded public key (BEGIN PUBLIC KEY)",
            ));
        }
        let key = token::verifying_key_from_pem(pem).map_err(|_| {
            validation("publicKeyMaterial must be an ECDSA public key on curve P-384")
        })?;
        let fingerprint = token::fingerprint(&key);
        if self.keys.iter().any(|k| k.fingerprint == fingerprint) {
            return Err(IvsError::new(
                ErrorKind::Conflict,
                "This public key has already been imported",
            ));
        }
        if self.keys.len() >= 3 {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                "Public key quota exceeded: at most 3 public keys per region",
            ));
        }
        let id = ivs::resource_id(random_id);
        let arn = Arn::public_key(&self.cfg.region, &self.cfg.account_id, &id).to_string();
        let rec = KeyRec {
            arn,
            name,
            pem: pem.to_string(),
            fingerprint,
            key,
            tags,
        };
        let view = Self::key_view(&rec);
        self.keys.push(rec);
        Ok(view)
    }

    pub(super) fn key_view(k: &KeyRec) -> PublicKey {
        PublicKey {
            arn: Some(k.arn.clone()),
            name: Some(k.name.clone()),
            public_key_material: Some(k.pem.clone()),
            fingerprint: Some(k.fingerprint.clone()),
            tags: Some(k.tags.clone()),
        }
    }

    pub(super) fn key_index(&self, arn: &str) -> Result<usize, IvsError> {
        let parsed = Arn::parse(arn).map_err(|e| validation(e.to_string()))?;
        if parsed.resource_type != ResourceType::PublicKey {
            return Err(validation(format!("not a public-key ARN: {arn}")));
        }
        self.keys
            .iter()
            .position(|k| k.arn == arn)
            .ok_or_else(|| not_found("PublicKey", arn))
    }

    /// GetPublicKey.
    pub fn get_public_key(&self, arn: &str) -> Result<PublicKey, IvsError> {
        Ok(Self::key_view(&self.keys[self.key_index(arn)?]))
    }

    /// DeletePublicKey.
    pub fn delete_public_key(&mut self, arn: &str) -> Result<(), IvsError> {
        let i = self.key_index(arn)?;
        self.keys.remove(i);
        Ok(())
    }

    /// ListPublicKeys.
    pub fn list_public_keys(
        &self,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<PublicKeySummary>, Option<String>), IvsError> {
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all: Vec<PublicKeySummary> = self
            .keys
            .iter()
            .map(|k| PublicKeySummary {
                arn: Some(k.arn.clone()),
                name: Some(k.name.clone()),
                tags: Some(k.tags.clone()),
            })
            .collect();
        paginate(&all, next_token, page)
    }

    /// The imported key whose ARN is `kid`.
    pub fn imported_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys.iter().find(|k| k.arn == kid).map(|k| k.key)
    }
}
