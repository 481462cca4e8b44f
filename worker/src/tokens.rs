//! Minting ES384 participant tokens with stagefan's P-384 key.
//!
//! Two signers of the same signature: WebCrypto (`crypto.subtle.sign`, native code in workerd)
//! and pure-Rust `p384` compiled to wasm. `TOKEN_SIGNER` picks one (`webcrypto`, the default,
//! or `rust`); `make bench` measures both (see docs/benchmarks.md).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use p384::ecdsa::SigningKey;
use p384::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use stagefan_core::token::UnsignedToken;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::{AppError, AppResult};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(catch, js_namespace = ["crypto", "subtle"], js_name = importKey)]
    fn subtle_import_key(
        format: &str,
        key_data: &Uint8Array,
        algorithm: &JsValue,
        extractable: bool,
        usages: &Array,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(catch, js_namespace = ["crypto", "subtle"], js_name = verify)]
    fn subtle_verify(
        algorithm: &JsValue,
        key: &JsValue,
        signature: &Uint8Array,
        data: &Uint8Array,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(catch, js_namespace = ["crypto", "subtle"], js_name = sign)]
    fn subtle_sign(
        algorithm: &JsValue,
        key: &JsValue,
        data: &Uint8Array,
    ) -> Result<Promise, JsValue>;
}

/// Which implementation signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignerKind {
    WebCrypto,
    Rust,
}

impl SignerKind {
    pub fn parse(value: Option<&str>) -> AppResult<Self> {
        match value.map(str::trim) {
            None | Some("") | Some("webcrypto") => Ok(SignerKind::WebCrypto),
            Some("rust") => Ok(SignerKind::Rust),
            Some(other) => Err(AppError::Internal(format!(
                "TOKEN_SIGNER must be `webcrypto` or `rust`, got {other:?}"
            ))),
        }
    }
}

/// The private key in both forms, made once per isolate.
pub struct TokenKey {
    rust: SigningKey,
    /// The `CryptoKey` (imported lazily on first WebCrypto use).
    webcrypto: RefCell<Option<JsValue>>,
    pkcs8_der: Vec<u8>,
    /// The public key as SPKI PEM: what `ImportPublicKey` takes.
    pub public_pem: String,
}

impl TokenKey {
    /// Parses a PKCS#8 PEM private key (`TOKEN_PRIVATE_KEY`). Literal `\n` sequences are taken
    /// as newlines, so the PEM can travel in a one-line variable.
    pub fn from_pem(pem: &str) -> AppResult<Rc<TokenKey>> {
        let pem = pem.replace("\\n", "\n");
        let rust = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
            AppError::Internal(format!("TOKEN_PRIVATE_KEY is not a PKCS#8 P-384 key: {e}"))
        })?;
        let pkcs8_der = pem_body_der(&pem)?;
        let public_pem = rust
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| AppError::Internal(format!("public key: {e}")))?;
        Ok(Rc::new(TokenKey {
            rust,
            webcrypto: RefCell::new(None),
            pkcs8_der,
            public_pem,
        }))
    }

    /// Signs `token` and returns the JWT.
    pub async fn sign(&self, token: UnsignedToken, kind: SignerKind) -> AppResult<String> {
        match kind {
            SignerKind::Rust => Ok(token.sign(&self.rust)),
            SignerKind::WebCrypto => {
                let key = self.crypto_key().await?;
                let data = Uint8Array::from(token.signing_input().as_bytes());
                let promise = subtle_sign(&ecdsa_params(true), &key, &data).map_err(js_err)?;
                let sig = JsFuture::from(promise).await.map_err(js_err)?;
                let sig = Uint8Array::new(&sig).to_vec();
                token
                    .finish(&sig)
                    .map_err(|e| AppError::Internal(format!("webcrypto signature: {e}")))
            }
        }
    }

    async fn crypto_key(&self) -> AppResult<JsValue> {
        if let Some(key) = self.webcrypto.borrow().as_ref() {
            return Ok(key.clone());
        }
        let der = Uint8Array::from(self.pkcs8_der.as_slice());
        let usages = Array::of1(&JsValue::from_str("sign"));
        let promise = subtle_import_key("pkcs8", &der, &ecdsa_params(false), false, &usages)
            .map_err(js_err)?;
        let key = JsFuture::from(promise).await.map_err(js_err)?;
        *self.webcrypto.borrow_mut() = Some(key.clone());
        Ok(key)
    }
}

/// `{name: "ECDSA", namedCurve: "P-384"}` to import, `{name: "ECDSA", hash: "SHA-384"}` to sign.
fn ecdsa_params(for_sign: bool) -> JsValue {
    let params = Object::new();
    let _ = Reflect::set(&params, &"name".into(), &"ECDSA".into());
    if for_sign {
        let _ = Reflect::set(&params, &"hash".into(), &"SHA-384".into());
    } else {
        let _ = Reflect::set(&params, &"namedCurve".into(), &"P-384".into());
    }
    params.unchecked_into()
}

fn pem_body_der(pem: &str) -> AppResult<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| AppError::Internal(format!("TOKEN_PRIVATE_KEY base64: {e}")))
}

fn js_err(err: JsValue) -> AppError {
    AppError::Internal(format!("webcrypto: {err:?}"))
}

/// Whether two PEM texts hold the same key material (whitespace and line breaks aside).
pub fn same_pem(a: &str, b: &str) -> bool {
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect()
    };
    let (a, b) = (strip(a), strip(b));
    !a.is_empty() && a == b
}

/// Verifies an ES256 or RS256 viewer ticket's signature through WebCrypto with the operator's
/// public keys of its algorithm (several while a key is rotated): `Ok(true)` if one of them
/// accepts it. An error for a key WebCrypto cannot import (a configuration error).
pub async fn verify_ticket(
    keys: &[stagefan_core::ticket::PublicKey],
    ticket: &stagefan_core::ticket::Ticket,
) -> AppResult<bool> {
    for key in keys.iter().filter(|k| k.alg == ticket.alg) {
        if verify_with(&key.spki, ticket).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn verify_with(spki: &[u8], ticket: &stagefan_core::ticket::Ticket) -> AppResult<bool> {
    use stagefan_core::ticket::TicketAlg;
    let (import_alg, verify_alg) = match ticket.alg {
        TicketAlg::Es256 => {
            let import = Object::new();
            set(&import, "name", &"ECDSA".into())?;
            set(&import, "namedCurve", &"P-256".into())?;
            let verify = Object::new();
            set(&verify, "name", &"ECDSA".into())?;
            set(&verify, "hash", &"SHA-256".into())?;
            (import, verify)
        }
        TicketAlg::Rs256 => {
            let import = Object::new();
            set(&import, "name", &"RSASSA-PKCS1-v1_5".into())?;
            set(&import, "hash", &"SHA-256".into())?;
            let verify = Object::new();
            set(&verify, "name", &"RSASSA-PKCS1-v1_5".into())?;
            (import, verify)
        }
        TicketAlg::Hs256 => return Ok(false),
    };
    let usages = Array::of1(&"verify".into());
    let key = JsFuture::from(
        subtle_import_key("spki", &Uint8Array::from(spki), &import_alg, false, &usages)
            .map_err(js_err)?,
    )
    .await
    .map_err(|e| {
        AppError::Internal(format!(
            "VIEWER_TICKET_PUBLIC_KEY: WebCrypto refused a {} key: {e:?}",
            ticket.alg.name()
        ))
    })?;
    let ok = JsFuture::from(
        subtle_verify(
            &verify_alg,
            &key,
            &Uint8Array::from(ticket.signature.as_slice()),
            &Uint8Array::from(ticket.signing_input.as_bytes()),
        )
        .map_err(js_err)?,
    )
    .await
    .map_err(js_err)?;
    Ok(ok.as_bool().unwrap_or(false))
}

fn set(target: &Object, key: &str, value: &JsValue) -> AppResult<()> {
    Reflect::set(target, &key.into(), value)
        .map(|_| ())
        .map_err(js_err)
}
