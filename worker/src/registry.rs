//! The `Registry` Durable Object (a single instance): which broadcasts exist, and the ARN of
//! stagefan's public key in IVS.
//!
//! The public key is imported lazily and once: `ListPublicKeys`, `GetPublicKey` of each to find
//! one whose PEM is ours, else `ImportPublicKey`. The lookup runs inside
//! `blockConcurrencyWhile`, so concurrent first requests make one set of IVS calls (IVS allows
//! 3 per second for these operations and 3 keys per region).

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use stagefan_core::ivs::{
    GetPublicKeyRequest, GetPublicKeyResponse, ImportPublicKeyRequest, ImportPublicKeyResponse,
    ListPublicKeysRequest, ListPublicKeysResponse, Operation, TAG_MANAGED,
};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use crate::calls::{self, Broadcasts, Exists, KeyArn, RegistryCall};
use crate::error::{AppError, AppResult};
use crate::ivs_client::{IvsClient, Retry};
use crate::settings::Settings;
use crate::tokens;

const REGISTRY_NAME: &str = "registry";

#[durable_object]
pub struct Registry {
    state: State,
    env: Env,
    sql: SqlStorage,
    ready: RefCell<bool>,
    /// The key's ARN per region, with the PEM it is of.
    key_arn: RefCell<std::collections::BTreeMap<String, (String, String)>>,
}

impl DurableObject for Registry {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        Registry {
            state,
            env,
            sql,
            ready: RefCell::new(false),
            key_arn: RefCell::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let result = match calls::receive::<RegistryCall>(&mut req, "registry").await {
            Ok(call) => self.handle(call).await,
            Err(e) => Err(e),
        };
        calls::answer(result)
    }
}

impl Registry {
    async fn handle(&self, call: RegistryCall) -> AppResult<Value> {
        self.schema()?;
        Ok(match call {
            RegistryCall::Register { broadcast, now } => {
                self.sql.exec(
                    "INSERT INTO broadcasts (id, created_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
                    vec![broadcast.clone().into(), (now as i64).into()],
                )?;
                json!({"broadcast": broadcast})
            }
            RegistryCall::List => {
                let rows: Vec<IdRow> = self
                    .sql
                    .exec("SELECT id FROM broadcasts ORDER BY id", None)?
                    .to_array()?;
                serde_json::to_value(Broadcasts::of(rows))?
            }
            RegistryCall::Has { broadcast } => {
                #[derive(Deserialize)]
                struct Row {
                    n: i64,
                }
                let rows: Vec<Row> = self
                    .sql
                    .exec(
                        "SELECT count(*) AS n FROM broadcasts WHERE id = ?",
                        vec![broadcast.into()],
                    )?
                    .to_array()?;
                serde_json::to_value(Exists {
                    exists: rows.first().is_some_and(|r| r.n > 0),
                })?
            }
            RegistryCall::Page { after, limit } => {
                let rows: Vec<IdRow> = self
                    .sql
                    .exec(
                        "SELECT id FROM broadcasts WHERE id > ? ORDER BY id LIMIT ?",
                        vec![after.into(), i64::from(limit.clamp(1, 100)).into()],
                    )?
                    .to_array()?;
                serde_json::to_value(Broadcasts::of(rows))?
            }
            RegistryCall::PublicKey { pem, region } => serde_json::to_value(KeyArn {
                arn: self.public_key(pem, region).await?,
            })?,
        })
    }

    /// The ARN of our key (`pem`) in `region` (`None`: the primary), imported once per
    /// region: concurrent first requests wait for the one lookup (`blockConcurrencyWhile`).
    async fn public_key(&self, pem: String, region: Option<String>) -> AppResult<String> {
        let settings = Settings::from_env(&self.env)?;
        let config = &settings.config;
        let region = region.unwrap_or_else(|| config.ivs_region.clone());
        let endpoint = config
            .region(&region)
            .ok_or_else(|| {
                AppError::bad_field(
                    "region",
                    format!("{region:?} is not a region of this deployment"),
                )
            })?
            .endpoint
            .clone();
        if let Some((cached_pem, arn)) = self.key_arn.borrow().get(&region) {
            if *cached_pem == pem {
                return Ok(arn.clone());
            }
        }
        let sql = self.sql.clone();
        let env = self.env.clone();
        let pem2 = pem.clone();
        let primary = region == config.ivs_region;
        let target = (region.clone(), endpoint);
        let arn = self
            .state
            .block_concurrency_while(async move {
                ensure_public_key(&sql, &env, &pem2, &target, primary)
                    .await
                    .map_err(|e| worker::Error::RustError(format!("{e:?}")))
            })
            .await
            .map_err(|e| AppError::Upstream(format!("public key import in {region}: {e}")))?;
        self.key_arn.borrow_mut().insert(region, (pem, arn.clone()));
        Ok(arn)
    }

    fn schema(&self) -> AppResult<()> {
        if *self.ready.borrow() {
            return Ok(());
        }
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS broadcasts (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL)",
            None,
        )?;
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS public_keys (pem TEXT PRIMARY KEY, arn TEXT NOT NULL)",
            None,
        )?;
        // The key's ARN in the regions other than the primary (whose stays in `public_keys`,
        // as before there were several).
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS region_public_keys (region TEXT NOT NULL, pem TEXT NOT NULL, \
             arn TEXT NOT NULL, PRIMARY KEY (region, pem))",
            None,
        )?;
        *self.ready.borrow_mut() = true;
        Ok(())
    }
}

/// The ARN of the key whose public PEM is `pem` in the region `(name, endpoint)`: stored,
/// found in IVS, or imported. `primary`: the primary region, stored in `public_keys`.
async fn ensure_public_key(
    sql: &SqlStorage,
    env: &Env,
    pem: &str,
    (region, endpoint): &(String, String),
    primary: bool,
) -> AppResult<String> {
    #[derive(Deserialize)]
    struct Row {
        arn: String,
    }
    let stored: Vec<Row> = if primary {
        sql.exec(
            "SELECT arn FROM public_keys WHERE pem = ?",
            vec![pem.into()],
        )?
        .to_array()?
    } else {
        sql.exec(
            "SELECT arn FROM region_public_keys WHERE region = ? AND pem = ?",
            vec![region.as_str().into(), pem.into()],
        )?
        .to_array()?
    };
    if let Some(row) = stored.into_iter().next() {
        return Ok(row.arn);
    }
    let settings = Settings::from_env(env)?;
    let client = IvsClient::new(endpoint, region, settings.credentials()?.clone());
    let upstream = |e: crate::ivs_client::CallError| AppError::Upstream(e.to_string());
    let mut found = None;
    let mut next_token = None;
    'pages: loop {
        let page: ListPublicKeysResponse = client
            .call(
                Operation::ListPublicKeys,
                &ListPublicKeysRequest {
                    next_token: next_token.take(),
                    max_results: Some(100),
                },
                Retry::DEFAULT,
            )
            .await
            .map_err(upstream)?;
        for summary in &page.public_keys {
            let Some(arn) = summary.arn.clone() else {
                continue;
            };
            let got: GetPublicKeyResponse = client
                .call(
                    Operation::GetPublicKey,
                    &GetPublicKeyRequest { arn: arn.clone() },
                    Retry::DEFAULT,
                )
                .await
                .map_err(upstream)?;
            let material = got
                .public_key
                .and_then(|k| k.public_key_material)
                .unwrap_or_default();
            if tokens::same_pem(&material, pem) {
                found = Some(arn);
                break 'pages;
            }
        }
        match page.next_token {
            Some(t) if !t.is_empty() => next_token = Some(t),
            _ => break,
        }
    }
    let arn = match found {
        Some(arn) => arn,
        None => {
            let imported: ImportPublicKeyResponse = client
                .call(
                    Operation::ImportPublicKey,
                    &ImportPublicKeyRequest {
                        public_key_material: pem.to_string(),
                        name: Some("stagefan".into()),
                        tags: Some([(TAG_MANAGED.to_string(), "true".to_string())].into()),
                    },
                    Retry::DEFAULT,
                )
                .await
                .map_err(upstream)?;
            imported
                .public_key
                .and_then(|k| k.arn)
                .ok_or_else(|| AppError::Upstream("ImportPublicKey returned no ARN".into()))?
        }
    };
    if primary {
        sql.exec(
            "INSERT INTO public_keys (pem, arn) VALUES (?, ?) ON CONFLICT(pem) DO UPDATE SET arn = excluded.arn",
            vec![pem.into(), arn.clone().into()],
        )?;
    } else {
        sql.exec(
            "INSERT INTO region_public_keys (region, pem, arn) VALUES (?, ?, ?) \
             ON CONFLICT(region, pem) DO UPDATE SET arn = excluded.arn",
            vec![region.as_str().into(), pem.into(), arn.clone().into()],
        )?;
    }
    Ok(arn)
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

impl Broadcasts {
    fn of(rows: Vec<IdRow>) -> Broadcasts {
        Broadcasts {
            broadcasts: rows.into_iter().map(|r| r.id).collect(),
        }
    }
}

/// Calls the registry.
async fn call<T: DeserializeOwned>(env: &Env, call: RegistryCall) -> AppResult<T> {
    let what = format!("registry {}", call.name());
    calls::send_for(
        env,
        "REGISTRY",
        REGISTRY_NAME,
        &format!("https://registry/{}", call.name()),
        &call,
        &what,
    )
    .await
}

/// Records that `broadcast` exists.
pub async fn register(env: &Env, broadcast: &str, now: u64) -> AppResult<()> {
    let broadcast = broadcast.to_string();
    let _: Value = call(env, RegistryCall::Register { broadcast, now }).await?;
    Ok(())
}

/// Every broadcast, sorted.
pub async fn list(env: &Env) -> AppResult<Vec<String>> {
    let list: Broadcasts = call(env, RegistryCall::List).await?;
    Ok(list.broadcasts)
}

/// Whether a broadcast exists (its pool was made): asked before any public request reaches a
/// pool, so that a request for an unknown broadcast creates no Durable Object at all.
pub async fn has(env: &Env, broadcast: &str) -> AppResult<bool> {
    let broadcast = broadcast.to_string();
    Ok(call::<Exists>(env, RegistryCall::Has { broadcast })
        .await?
        .exists)
}

/// Up to `limit` broadcasts after `after`, sorted (a page of the public list).
pub async fn page(env: &Env, after: &str, limit: u32) -> AppResult<Vec<String>> {
    let after = after.to_string();
    let page: Broadcasts = call(env, RegistryCall::Page { after, limit }).await?;
    Ok(page.broadcasts)
}

/// The public-key ARN for our key in `region` (`None`: the primary; imported into IVS on
/// first use).
pub async fn public_key_arn(
    env: &Env,
    public_pem: &str,
    region: Option<&str>,
) -> AppResult<String> {
    let pem = public_pem.to_string();
    let region = region.map(str::to_string);
    Ok(call::<KeyArn>(env, RegistryCall::PublicKey { pem, region })
        .await?
        .arn)
}
