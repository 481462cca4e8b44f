//! The paginated `ListStages` pass, carried across rounds.

use stagefan_core::ivs::StageSummary;
use tokio::time::Instant;

use crate::ivs::{CallError, IvsClient};

/// A paginated `ListStages` pass, carried across rounds.
#[derive(Debug, Default)]
pub(super) struct Listing {
    next_token: Option<String>,
    pages: Vec<StageSummary>,
}

/// What the last `ListStages` page showed of a stage: its active session, and when.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub(super) session: Option<String>,
    pub(super) at: Instant,
}

pub(super) struct ListOutcome {
    pub(super) complete: Option<Vec<StageSummary>>,
    pub(super) seen: Vec<(String, Listed)>,
    pub(super) deferred: bool,
}

/// Continues the `ListStages` pass; returns the full list when its last page arrives, and
/// every stage's active session as the pages showed it.
pub(super) async fn list_step(
    ivs: &IvsClient,
    listing: &mut Listing,
    deadline: Instant,
) -> ListOutcome {
    let mut out = ListOutcome {
        complete: None,
        seen: Vec::new(),
        deferred: false,
    };
    loop {
        match ivs.list_stages(listing.next_token.clone(), deadline).await {
            Ok(page) => {
                let at = Instant::now();
                for st in &page.stages {
                    out.seen.push((
                        st.arn.clone(),
                        Listed {
                            session: st.active_session_id.clone().filter(|s| !s.is_empty()),
                            at,
                        },
                    ));
                }
                listing.pages.extend(page.stages);
                match page.next_token {
                    Some(t) => listing.next_token = Some(t),
                    None => {
                        listing.next_token = None;
                        out.complete = Some(std::mem::take(&mut listing.pages));
                        return out;
                    }
                }
            }
            Err(CallError::Deferred(..)) => {
                out.deferred = true;
                return out;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ListStages failed; the pass goes on next round");
                return out;
            }
        }
    }
}
