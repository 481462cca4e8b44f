//! The pool's IVS calls: creates, deletes, disconnects and lookups, each attempt in its slot
//! of the account-wide budget (`slots`), retried by one loop ([`Budgeted`]).

use std::rc::Rc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use stagefan_core::ivs::{
    CreateStageRequest, CreateStageResponse, DeleteStageRequest, DisconnectParticipantRequest,
    EmptyResponse, GetStageRequest, GetStageResponse, ListStagesRequest, ListStagesResponse,
    Operation,
};
use stagefan_core::pool::{
    CreateIntent, DeleteIntent, PoolError, StageEndpoints, StageId, Stranger, TAG_BROADCAST,
};

use super::{replication, Shared};
use crate::error::AppResult;
use crate::ivs_client::{CallError, IvsClient, Retry};
use crate::runtime;

/// Attempts of one `CreateStage` intent before it is given up.
const CREATE_ATTEMPTS: u32 = 6;
/// Attempts of a `DeleteStage`, `GetStage`, `DisconnectParticipant` or
/// `StopParticipantReplication` (each in its own budget slot).
pub(super) const BUDGETED_ATTEMPTS: u32 = 4;
/// The reason IVS's participant list shows for a viewer disconnected without a seat.
const STRANGER_REASON: &str = "stagefan: no seat on this stage (lease lapsed or given back)";

/// The attempts of one budgeted IVS call: each waits for its slot in the account-wide budget
/// (a throttled attempt tells the budget when it asks for the next); 5xx and no answer are
/// retried with backoff (a throttle is paced by the budget), up to `attempts` in all.
struct Budgeted<'a> {
    shared: &'a Shared,
    op: Operation,
    attempts: u32,
    attempt: u32,
    throttled: bool,
    /// The create that waits, so that viewers learn when its stage can come.
    create: Option<StageId>,
}

impl<'a> Budgeted<'a> {
    fn new(shared: &'a Shared, op: Operation, attempts: u32) -> Self {
        Budgeted {
            shared,
            op,
            attempts,
            attempt: 1,
            throttled: false,
            create: None,
        }
    }

    /// One attempt, in its slot.
    async fn send<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        client: &IvsClient,
        body: &Req,
    ) -> Result<Resp, CallError> {
        self.shared
            .wait_for_slot(self.op, self.throttled, self.create)
            .await;
        client.call(self.op, body, Retry::NONE).await
    }

    /// Whether the call may be made again after `e` (then after the backoff it needs).
    async fn retry_after(&mut self, e: &CallError) -> bool {
        if self.attempt >= self.attempts || !e.is_retryable() {
            return false;
        }
        self.throttled = e.is_throttling();
        if !self.throttled {
            let wait = Retry::DEFAULT.backoff(self.attempt, runtime::random_fraction());
            worker::Delay::from(wait.max(Duration::from_millis(50))).await;
        }
        self.attempt += 1;
        true
    }
}

/// Calls a budgeted IVS operation ([`Budgeted`]). Only for operations that are safe to
/// repeat.
pub(super) async fn call_budgeted<Req: Serialize, Resp: DeserializeOwned>(
    shared: &Shared,
    client: &IvsClient,
    op: Operation,
    body: &Req,
    attempts: u32,
) -> Result<Resp, CallError> {
    let mut call = Budgeted::new(shared, op, attempts);
    loop {
        match call.send(client, body).await {
            Err(e) if call.retry_after(&e).await => {}
            result => return result,
        }
    }
}

/// Carries out one create intent: `CreateStage` once, retried only when it surely did not
/// happen (throttled, or IVS has no stage by its name); after an answer that may hide a
/// create (5xx, no answer) the stage is looked up by its name before anything else.
pub(super) async fn create_stage(shared: Rc<Shared>, intent: CreateIntent) {
    let client = match shared.ivs() {
        Ok(c) => c,
        Err(e) => {
            worker::console_error!("create {}: {e:?}", intent.name);
            record_create(&shared, &intent, None);
            return;
        }
    };
    let request = CreateStageRequest {
        name: Some(intent.name.clone()),
        tags: Some(intent.tags.clone()),
        ..Default::default()
    };
    let mut call = Budgeted::new(&shared, Operation::CreateStage, CREATE_ATTEMPTS);
    call.create = Some(intent.stage);
    let outcome = loop {
        let e = match call.send::<_, CreateStageResponse>(&client, &request).await {
            Ok(resp) => break resp.stage,
            Err(e) => e,
        };
        let again = call.retry_after(&e).await;
        if !again {
            worker::console_error!("CreateStage {}: {e}", intent.name);
        }
        if e.outcome_unknown() {
            match find_stage_by_name(&shared, &client, &intent).await {
                Ok(Some(stage)) => break Some(stage),
                // IVS surely has no such stage: the create may be sent again.
                Ok(None) => {}
                // Not known either way: never send the create again. The intent stays
                // `creating` and the maintenance alarm resolves it by name
                // (`policy::stale_creates`).
                Err(lookup) => {
                    worker::console_error!(
                        "CreateStage {}: outcome unknown ({e}) and the lookup failed \
                         ({lookup}); left to the maintenance alarm",
                        intent.name
                    );
                    shared
                        .inner
                        .borrow_mut()
                        .failed_lookups
                        .insert(intent.stage, runtime::now_ms());
                    shared.create_done.notify();
                    return;
                }
            }
        }
        if !again {
            break None;
        }
    };
    record_create(&shared, &intent, outcome);
}

/// Records how a create intent ended: the stage IVS has for it, or none (failed), and wakes
/// the viewers waiting for it.
pub(super) fn record_create(
    shared: &Shared,
    intent: &CreateIntent,
    stage: Option<stagefan_core::ivs::Stage>,
) {
    shared
        .inner
        .borrow_mut()
        .failed_lookups
        .remove(&intent.stage);
    let result = shared.mutate(|pool, now| {
        Ok(match stage {
            Some(stage) => {
                let endpoints = stage.endpoints.unwrap_or_default();
                pool.created(
                    intent.stage,
                    &stage.arn,
                    StageEndpoints {
                        whip: endpoints.whip.unwrap_or_default(),
                        events: endpoints.events.unwrap_or_default(),
                    },
                    now,
                )
            }
            None => pool.create_failed(intent.stage, now),
        })
    });
    shared.create_done.notify();
    if let Ok(Err(e)) | Err(e) = result.map_err(|e| PoolError::Corrupt(format!("{e:?}"))) {
        worker::console_error!("recording create of {}: {e}", intent.name);
    }
}

/// The stage of a create intent, if IVS has it (by name and broadcast tag).
pub(super) async fn find_stage_by_name(
    shared: &Shared,
    client: &IvsClient,
    intent: &CreateIntent,
) -> Result<Option<stagefan_core::ivs::Stage>, CallError> {
    // Every page in its slot of the account-wide budget: a lookup pages through all of the
    // account's stages (10 pages at 1,000), which unpaced exceeded IVS's 5 per second.
    let mut next_token = None;
    let found = loop {
        let page: ListStagesResponse = call_budgeted(
            shared,
            client,
            Operation::ListStages,
            &ListStagesRequest {
                next_token: next_token.take(),
                max_results: Some(100),
            },
            BUDGETED_ATTEMPTS,
        )
        .await?;
        let found = page
            .stages
            .iter()
            .find(|s| {
                s.name.as_deref() == Some(intent.name.as_str())
                    && s.tags.as_ref().and_then(|t| t.get(TAG_BROADCAST))
                        == intent.tags.get(TAG_BROADCAST)
            })
            .map(|s| s.arn.clone());
        match (found, page.next_token) {
            (Some(arn), _) => break Some(arn),
            (None, Some(t)) if !t.is_empty() => next_token = Some(t),
            (None, _) => break None,
        }
    };
    let Some(arn) = found else {
        return Ok(None);
    };
    let got: GetStageResponse = call_budgeted(
        shared,
        client,
        Operation::GetStage,
        &GetStageRequest { arn },
        BUDGETED_ATTEMPTS,
    )
    .await?;
    Ok(got.stage)
}

/// Carries out a delete intent: `DeleteStage` (idempotent in effect: a stage already gone is
/// deleted too), then records it.
pub(super) async fn delete_stage(
    shared: &Rc<Shared>,
    intent: DeleteIntent,
) -> Result<(), PoolError> {
    replication::stop_before_delete(shared, &intent).await;
    let client = shared
        .ivs()
        .map_err(|e| PoolError::Corrupt(format!("{e:?}")))?;
    let result: Result<EmptyResponse, CallError> = call_budgeted(
        shared,
        &client,
        Operation::DeleteStage,
        &DeleteStageRequest {
            arn: intent.arn.clone(),
        },
        BUDGETED_ATTEMPTS,
    )
    .await;
    let gone = match &result {
        Ok(_) => true,
        Err(CallError::Ivs(e)) => e.status == 404,
        Err(_) => false,
    };
    if !gone {
        worker::console_error!(
            "DeleteStage {}: {}",
            intent.arn,
            result.err().map(|e| e.to_string()).unwrap_or_default()
        );
        return Err(PoolError::Corrupt(
            "DeleteStage failed; retried by the next action".into(),
        ));
    }
    shared
        .mutate(|pool, now| Ok(pool.deleted(intent.stage, now)))
        .map_err(|e| PoolError::Corrupt(format!("{e:?}")))?
        .map(|_evicted| ())
}

/// Disconnects participants connected to a stage without a seat there (their lease lapsed or
/// was given back, or they never had one), each call in its slot of the account-wide budget.
pub(super) async fn disconnect_strangers(shared: &Rc<Shared>, strangers: Vec<Stranger>) {
    let Ok(client) = shared.ivs() else {
        return;
    };
    for stranger in strangers {
        let request = DisconnectParticipantRequest {
            stage_arn: stranger.stage_arn.clone(),
            participant_id: stranger.participant_id.clone(),
            reason: Some(STRANGER_REASON.to_string()),
        };
        let result: Result<EmptyResponse, CallError> = call_budgeted(
            shared,
            &client,
            Operation::DisconnectParticipant,
            &request,
            BUDGETED_ATTEMPTS,
        )
        .await;
        match result {
            Ok(_) => worker::console_log!(
                "disconnected {} from {}: no seat there",
                stranger.participant_id,
                stranger.stage_arn
            ),
            Err(e) => worker::console_error!(
                "DisconnectParticipant {} on {}: {e}",
                stranger.participant_id,
                stranger.stage_arn
            ),
        }
    }
}

impl Shared {
    pub(super) fn ivs(&self) -> AppResult<IvsClient> {
        let settings = self.settings()?;
        let (region, endpoint) = self.region()?;
        Ok(IvsClient::new(
            &endpoint,
            &region,
            settings.credentials()?.clone(),
        ))
    }
}
