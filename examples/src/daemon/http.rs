//! The HTTP API: the query side (balances, tiers, recent activity, history,
//! explain), simulate, redeem, and the admin endpoints (reload, rollback,
//! adjustments, cache rebuild), plus `/health`, `/ready` and `/metrics`.
//!
//! - **Auth.** Everything but `/health`, `/ready` and `/metrics` needs
//!   `Authorization: Bearer TOKEN`; admin endpoints an admin token. Tokens
//!   are compared as SHA-256 digests in constant time, against every
//!   configured token (no early exit), so neither the length nor the
//!   position of a match leaks through timing. Missing or unknown token:
//!   401; a valid non-admin token on an admin endpoint: 403.
//! - **Limits.** Bodies over `http.max_body_bytes` are refused with 413
//!   before they are buffered; at most `http.max_concurrent_requests` are
//!   handled at once (the rest wait, like mini-redis's connection
//!   semaphore); a request over `http.request_timeout_ms` gets 408.
//! - **Errors** are JSON: `{"code": "...", "message": "..."}`, with the
//!   status the code implies; a member never seen is 404 `member_not_found`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use rewards_core::ledger::{Adjustment, EntryKind, Receipt, Redemption};
use rewards_core::store::MAX_PAGE_ROWS;
use rewards_core::{
    Error as StoreError, ErrorKind, LedgerStore, MemberId, MemberView, Points, Transaction, TxId,
};

use rewards_runtime::{Disposition, SubmitError, Submitter};

use super::config::Secret;
use super::journal::Journal;
use super::metrics::{CacheFigures, DaemonMetrics};
use super::rules::{Programs, ReloadError};
use super::CacheControl;

/// Everything the handlers share.
pub struct AppState {
    /// The store the pipeline writes through (journalling).
    pub store: Arc<dyn LedgerStore>,
    /// The same store without the journal wrapper (simulations read here,
    /// so they never touch the journal's view capture).
    pub plain_store: Arc<dyn LedgerStore>,
    /// The programs.
    pub programs: Arc<Programs>,
    /// The runtime's metrics.
    pub runtime_metrics: Arc<rewards_runtime::Metrics>,
    /// The daemon's metrics.
    pub metrics: Arc<DaemonMetrics>,
    /// The explain journal.
    pub journal: Arc<Journal>,
    /// The cache, in full mode.
    pub cache: Option<Arc<dyn CacheControl>>,
    /// Token digests.
    pub auth: Auth,
    /// True once started and until shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// Submits transactions to the HTTP ingestion pipeline.
    pub submitter: Submitter,
    /// `embedded` or `full`.
    pub mode: &'static str,
    /// When the daemon started.
    pub started: Instant,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The configured tokens, as SHA-256 digests.
#[derive(Clone)]
pub struct Auth {
    users: Vec<[u8; 32]>,
    admins: Vec<[u8; 32]>,
    ingest: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.len())
            .field("admins", &self.admins.len())
            .finish()
    }
}

/// Who a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No or an unknown token.
    Anonymous,
    /// A query token.
    User,
    /// A token that may only submit transactions.
    Ingest,
    /// An admin token.
    Admin,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Auth {
    /// Digests of the configured tokens.
    pub fn new(users: &[Secret], admins: &[Secret], ingest: &[Secret]) -> Auth {
        let digests = |list: &[Secret]| -> Vec<[u8; 32]> {
            list.iter().map(|t| digest(t.expose().as_bytes())).collect()
        };
        Auth {
            users: digests(users),
            admins: digests(admins),
            ingest: digests(ingest),
        }
    }

    /// The role of a presented token, compared in constant time against
    /// every configured token.
    pub fn role(&self, presented: Option<&[u8]>) -> Role {
        let Some(presented) = presented else {
            return Role::Anonymous;
        };
        let d = digest(presented);
        let any = |list: &[[u8; 32]]| {
            list.iter()
                .fold(subtle::Choice::from(0u8), |acc, t| acc | t.ct_eq(&d))
        };
        let admin = any(&self.admins);
        let user = any(&self.users);
        let ingest = any(&self.ingest);
        if bool::from(admin) {
            Role::Admin
        } else if bool::from(user) {
            Role::User
        } else if bool::from(ingest) {
            Role::Ingest
        } else {
            Role::Anonymous
        }
    }
}

/// A JSON error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(details) = self.details {
            body["details"] = details;
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rewards\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code) = match e.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::InsufficientBalance => {
                (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_balance")
            }
            ErrorKind::InvalidReference => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_reference"),
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "store error");
        }
        ApiError::new(status, code, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, buffered within the body limit; an empty body is `T::default()`
/// when `T` allows it (see [`OptionalBody`]). Errors are JSON [`ApiError`]s.
pub struct JsonBody<T>(pub T);

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the limit",
            )
        } else {
            ApiError::bad_request("bad_body", rejection.body_text())
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

/// Like [`JsonBody`], but an empty body means `T::default()`.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        Ok(OptionalBody(parse_json(&bytes)?))
    }
}

/// Raw body bytes within the limit.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(RawBody(read_body(req, state).await?))
    }
}

/// Builds the router over `state`.
pub fn router(
    state: Arc<AppState>,
    max_body_bytes: usize,
    max_concurrent: usize,
    timeout: Duration,
) -> Router {
    let user = Router::new()
        .route("/v1/members/{id}/balance", get(balance))
        .route("/v1/members/{id}/tier", get(tier))
        .route("/v1/members/{id}/recent", get(recent))
        .route("/v1/members/{id}/history", get(history))
        .route("/v1/members/{id}/redeem", post(redeem))
        .route("/v1/transactions/{id}/explain", get(explain))
        .route("/v1/simulate", post(simulate))
        .route("/v1/programs", get(programs))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_user));
    let ingest = Router::new()
        .route("/v1/transactions", post(submit))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_ingest,
        ));
    let admin = Router::new()
        .route("/v1/admin/reload", post(reload))
        .route("/v1/admin/rollback", post(rollback))
        .route("/v1/admin/programs", get(programs))
        .route("/v1/admin/adjustments", post(adjust))
        .route("/v1/admin/cache/rebuild", post(cache_rebuild))
        .route("/v1/admin/reconcile", post(reconcile))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(user)
        .merge(ingest)
        .merge(admin)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(max_concurrent))
        .with_state(state)
}

async fn count_responses(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    state.metrics.http_response(response.status().as_u16());
    response
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let token = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))?;
    Some(token.trim_ascii())
}

async fn require_user(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match state.auth.role(bearer(req.headers())) {
        Role::User | Role::Admin => next.run(req).await,
        Role::Ingest => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an ingest token may only submit transactions",
        )
        .into_response(),
        Role::Anonymous => unauthorized(),
    }
}

async fn require_ingest(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match state.auth.role(bearer(req.headers())) {
        Role::Ingest | Role::Admin => next.run(req).await,
        Role::User => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "submitting transactions needs an ingest or admin token",
        )
        .into_response(),
        Role::Anonymous => unauthorized(),
    }
}

async fn require_admin(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match state.auth.role(bearer(req.headers())) {
        Role::Admin => next.run(req).await,
        Role::User | Role::Ingest => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this endpoint needs an admin token",
        )
        .into_response(),
        Role::Anonymous => unauthorized(),
    }
}

fn unauthorized() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required",
    )
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint")
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "mode": state.mode,
        "uptime_secs": state.started.elapsed().as_secs(),
    }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.load(Ordering::Acquire);
    let breaker_open = state.runtime_metrics.breaker_open.load(Ordering::Relaxed) > 0;
    if ready && !breaker_open {
        Json(json!({"ready": true})).into_response()
    } else {
        let reason = if !ready {
            "starting or shutting down"
        } else {
            "the store is unavailable (circuit breaker open)"
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.runtime_metrics.render_prometheus();
    let figures: Option<CacheFigures> = state.cache.as_ref().map(|c| c.figures());
    state.metrics.render(
        &mut text,
        &state.programs.stamps(),
        figures.as_ref(),
        state.ready.load(Ordering::Acquire),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

fn member_id(raw: &str) -> ApiResult<MemberId> {
    MemberId::new(raw).map_err(|e| ApiError::bad_request("invalid_member", e.to_string()))
}

fn member_not_found(member: &MemberId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "member_not_found",
        format!("member {member} has never been seen"),
    )
}

/// The member's balance row, 404 when never seen.
async fn known_member(
    state: &AppState,
    member: &MemberId,
) -> ApiResult<rewards_core::ledger::MemberBalance> {
    match state.store.balance(member).await {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(member_not_found(member)),
        Err(e) => Err(e.into()),
    }
}

async fn balance(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let member = member_id(&id)?;
    let b = known_member(&state, &member).await?;
    Ok(Json(json!({
        "member": b.member,
        "available": b.balances.available,
        "pending": b.balances.pending,
        "tier": b.tier,
        "version": b.version,
    })))
}

async fn tier(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let member = member_id(&id)?;
    let b = known_member(&state, &member).await?;
    Ok(Json(
        json!({"member": b.member, "tier": b.tier, "version": b.version}),
    ))
}

/// `?limit=N` (and `after_seq` for history).
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    limit: Option<usize>,
    after_seq: Option<u64>,
}

fn limit(page: &Page, default: usize) -> ApiResult<usize> {
    match page.limit {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE_ROWS).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_PAGE_ROWS}"),
        )),
    }
}

async fn recent(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let member = member_id(&id)?;
    let n = limit(&page, 20)?;
    known_member(&state, &member).await?;
    let entries = state.store.recent(&member, n).await?;
    Ok(Json(json!({"member": member, "entries": entries})))
}

async fn history(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let member = member_id(&id)?;
    let n = limit(&page, 100)?;
    known_member(&state, &member).await?;
    let after = page.after_seq.unwrap_or(0);
    let postings = state.store.history(&member, after, n).await?;
    let next = (postings.len() == n).then(|| postings.last().map(|p| p.seq));
    Ok(Json(json!({
        "member": member,
        "postings": postings,
        "next_after_seq": next.flatten(),
    })))
}

async fn programs(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!(state.programs.status().await))
}

/// Evaluates `tx` with an explain trace on `plan`, reading the member view
/// from the plain store (nothing is posted).
async fn evaluate_now(
    state: &AppState,
    plan: &Arc<dyn rewards_core::Evaluator>,
    tx: &Transaction,
) -> ApiResult<(MemberView, rewards_core::Outcome)> {
    let mut keys = Vec::new();
    plan.counter_keys(tx, &mut keys);
    let view = state.plain_store.member_view(&tx.member, &keys).await?;
    let outcome = plan.explain(tx, &view).map_err(|f| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "evaluation_failed",
            f.to_string(),
        )
    })?;
    Ok((view, outcome))
}

fn outcome_json(outcome: &rewards_core::Outcome) -> Value {
    let total = outcome.total_points().map(|p| p.get()).ok();
    json!({
        "points": total,
        "components": outcome.components,
        "counters": outcome.counters,
        "budgets": outcome.budgets,
        "tier_change": outcome.tier_change,
        "lot": outcome.lot,
        "explain": outcome.explain.as_ref().map(|t| &t.lines),
    })
}

const REFERRING_NOTE: &str = "refunds, settlements, reversals and chargebacks are scaled by the ledger from the original's stored awards; the components above are not what it posts";

async fn simulate(
    State(state): State<Arc<AppState>>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let tx = Transaction::from_json_bytes(&body).map_err(|e| {
        ApiError::bad_request("invalid_transaction", e.to_string())
            .with_details(json!({"field": e.field}))
    })?;
    let plan = state
        .programs
        .resolve(tx.program.as_deref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_program",
                format!(
                    "program {:?} is not loaded",
                    tx.program
                        .as_deref()
                        .unwrap_or(state.programs.default_program())
                ),
            )
        })?;
    let (view, outcome) = evaluate_now(&state, &plan, &tx).await?;
    state.metrics.simulation();
    let mut body = json!({
        "posted": false,
        "transaction": tx.id,
        "member": tx.member,
        "program": tx.program.as_deref().unwrap_or(state.programs.default_program()),
        "ruleset": plan.stamp(),
        "member_view": {"tier": view.tier, "balance": view.balance},
        "outcome": outcome_json(&outcome),
    });
    if tx.kind.needs_original() {
        body["note"] = json!(REFERRING_NOTE);
    }
    Ok(Json(body))
}

async fn explain(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tx_id = TxId::new(id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let entry = state
        .journal
        .get(&tx_id)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "journal_unreadable",
                e.to_string(),
            )
        })?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "transaction_not_found",
                format!("transaction {tx_id} was not applied by this daemon's pipeline"),
            )
        })?;
    let tx = Transaction::from_json_value(&entry.tx).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal_unreadable",
            e.to_string(),
        )
    })?;
    let stored_points = entry
        .awards
        .iter()
        .try_fold(Points::ZERO, |sum, (_, p)| sum.checked_add(*p))
        .map(Points::get)
        .ok();
    let mut body = json!({
        "transaction": entry.tx,
        "ruleset": entry.ruleset,
        "applied_at": entry.applied_at,
        "stored": {"points": stored_points, "awards": entry.awards, "member_version": entry.version},
    });
    let Some(plan) = state.programs.plan_by_hash(&entry.ruleset.hash) else {
        body["replayed"] = json!(false);
        body["reason"] = json!(format!(
            "ruleset {} version {} (hash {}) that produced this transaction is no longer loaded",
            entry.ruleset.id, entry.ruleset.version, entry.ruleset.hash
        ));
        return Ok(Json(body));
    };
    let view: MemberView = entry.view.clone().map(MemberView::from).unwrap_or_default();
    let outcome = plan.explain(&tx, &view).map_err(|f| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "evaluation_failed",
            f.to_string(),
        )
    })?;
    let evaluated = outcome.total_points().map(|p| p.get()).ok();
    body["replayed"] = json!(true);
    body["view_captured"] = json!(entry.view.is_some());
    body["reproduced"] = json!(evaluated == stored_points);
    body["evaluation"] = outcome_json(&outcome);
    if tx.kind.needs_original() {
        body["note"] = json!(REFERRING_NOTE);
    }
    Ok(Json(body))
}

/// `POST /v1/transactions`: one transaction in the wire format, through
/// the same pipeline as the file or Kafka input (decode, plan, evaluate,
/// append; dead letters with the reason). Answers once it is durable.
async fn submit(State(state): State<Arc<AppState>>, RawBody(body): RawBody) -> ApiResult<Response> {
    match state.submitter.submit_bytes(body.to_vec()).await {
        Ok(Disposition::Applied(receipt)) => {
            let status = if receipt.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                status,
                Json(json!({
                    "status": "applied",
                    "id": receipt.id,
                    "member": receipt.member,
                    "duplicate": receipt.duplicate,
                    "version": receipt.version,
                    "awards": receipt.awards,
                    "trimmed": receipt.trimmed,
                    "delta": {"available": receipt.delta.available, "pending": receipt.delta.pending},
                    "balance": {"available": receipt.balances.available, "pending": receipt.balances.pending},
                    "tier": receipt.tier,
                })),
            )
                .into_response())
        }
        Ok(Disposition::DeadLettered(reason)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "dead_lettered",
            reason.message.clone(),
        )
        .with_details(
            json!({"stage": reason.stage.as_str(), "code": reason.code, "field": reason.field}),
        )),
        Err(SubmitError::Closed | SubmitError::Abandoned) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is stopping; submit again later",
        )),
    }
}

/// Body of `POST /v1/members/{id}/redeem`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// Points to spend (> 0).
    pub points: i64,
    /// What they were spent on.
    #[serde(default)]
    pub reference: Option<String>,
    /// When (default: now).
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

/// Most characters of a client idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 100;

fn idempotency_key(headers: &HeaderMap, prefix: &str) -> ApiResult<TxId> {
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::bad_request(
                "idempotency_key_required",
                "the Idempotency-Key header is required",
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be visible ASCII",
            )
        })?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters"),
        ));
    }
    TxId::new(format!("{prefix}:{key}"))
        .map_err(|e| ApiError::bad_request("invalid_idempotency_key", e.to_string()))
}

fn receipt_json(receipt: &Receipt, key: &str) -> Value {
    json!({
        "id": key,
        "member": receipt.member,
        "duplicate": receipt.duplicate,
        "version": receipt.version,
        "delta": {"available": receipt.delta.available, "pending": receipt.delta.pending},
        "balance": {"available": receipt.balances.available, "pending": receipt.balances.pending},
    })
}

/// After a conflict on an idempotency key: is the stored request the same
/// debit (a retry whose server-side time differs)? Looks for its audit event.
async fn find_earlier(
    state: &AppState,
    member: &MemberId,
    id: &TxId,
    kind: EntryKind,
    available_delta: i64,
) -> ApiResult<Option<Value>> {
    let mut after = 0;
    loop {
        let events = state.store.audit(member, after, MAX_PAGE_ROWS).await?;
        let Some(last) = events.last() else {
            return Ok(None);
        };
        after = last.seq;
        if let Some(e) = events.iter().find(|e| &e.source == id && e.kind == kind) {
            if e.delta.available.get() == available_delta {
                return Ok(Some(json!({
                    "member": member,
                    "duplicate": true,
                    "version": e.seq,
                    "delta": {"available": e.delta.available, "pending": e.delta.pending},
                    "balance": {"available": e.balances.available, "pending": e.balances.pending},
                })));
            }
            return Ok(None);
        }
        if events.len() < MAX_PAGE_ROWS {
            return Ok(None);
        }
    }
}

fn key_reused(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        format!("Idempotency-Key {key:?} was already used for a different request"),
    )
}

async fn redeem(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RedeemRequest>,
) -> ApiResult<Response> {
    let member = member_id(&id)?;
    let request_id = idempotency_key(&headers, "redeem")?;
    let key = request_id
        .as_str()
        .trim_start_matches("redeem:")
        .to_string();
    if body.points <= 0 {
        return Err(ApiError::bad_request(
            "invalid_points",
            "points must be a whole number above 0",
        ));
    }
    if body
        .reference
        .as_ref()
        .is_some_and(|r| r.len() > rewards_core::limits::MAX_TEXT_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_reference",
            "reference is too long",
        ));
    }
    known_member(&state, &member).await?;
    let redemption = Redemption {
        id: request_id.clone(),
        member: member.clone(),
        points: Points(body.points),
        time: body.time.unwrap_or_else(Utc::now),
        reference: body.reference,
    };
    match state.store.redeem(&redemption).await {
        Ok(receipt) => {
            if !receipt.duplicate {
                state.metrics.redemption();
                tracing::info!(member = %member, points = body.points, key = %key, "redeemed");
            }
            let status = if receipt.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut value = receipt_json(&receipt, &key);
            value["points"] = json!(body.points);
            Ok((status, Json(value)).into_response())
        }
        Err(e) if e.kind() == ErrorKind::Conflict => {
            match find_earlier(
                &state,
                &member,
                &request_id,
                EntryKind::Redemption,
                -body.points,
            )
            .await?
            {
                Some(mut value) => {
                    value["id"] = json!(key);
                    value["points"] = json!(body.points);
                    Ok((StatusCode::OK, Json(value)).into_response())
                }
                None => Err(key_reused(&key)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Body of `POST /v1/admin/reload`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// One program (default: all).
    #[serde(default)]
    pub program: Option<String>,
    /// Activate at this instant instead of now.
    #[serde(default)]
    pub activate_at: Option<DateTime<Utc>>,
}

fn reload_error(e: ReloadError) -> ApiError {
    match e {
        ReloadError::Rejected(rejections) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rules_rejected",
            "the new rules were refused; the previous version keeps serving",
        )
        .with_details(json!(rejections)),
        ReloadError::UnknownProgram(name) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_program",
            format!("no program named {name:?}"),
        ),
        ReloadError::NoPreviousVersion(name) => ApiError::new(
            StatusCode::CONFLICT,
            "no_previous_version",
            format!("program {name:?} has no earlier version"),
        ),
    }
}

async fn reload(
    State(state): State<Arc<AppState>>,
    OptionalBody(body): OptionalBody<ReloadRequest>,
) -> ApiResult<Json<Value>> {
    let outcomes = state
        .programs
        .reload(body.program.as_deref(), body.activate_at)
        .await
        .map_err(reload_error)?;
    Ok(Json(json!({"programs": outcomes})))
}

/// Body of `POST /v1/admin/rollback`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The program (default: the default program).
    #[serde(default)]
    pub program: Option<String>,
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    OptionalBody(body): OptionalBody<RollbackRequest>,
) -> ApiResult<Json<Value>> {
    let outcome = state
        .programs
        .rollback(body.program.as_deref())
        .await
        .map_err(reload_error)?;
    Ok(Json(json!({"programs": [outcome]})))
}

/// Body of `POST /v1/admin/adjustments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// The member.
    pub member: String,
    /// Signed points (≠ 0).
    pub points: i64,
    /// Why.
    pub reason: String,
    /// Who (default `admin-api`).
    #[serde(default)]
    pub actor: Option<String>,
    /// When (default: now).
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
    /// Expiry of a credit's lot.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

async fn adjust(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AdjustRequest>,
) -> ApiResult<Response> {
    let member = member_id(&body.member)?;
    let request_id = idempotency_key(&headers, "adjust")?;
    let key = request_id
        .as_str()
        .trim_start_matches("adjust:")
        .to_string();
    if body.points == 0
        || body.points.unsigned_abs() > rewards_core::limits::MAX_ADJUSTMENT_POINTS.unsigned_abs()
    {
        return Err(ApiError::bad_request(
            "invalid_points",
            "points must be non-zero and within the adjustment limit",
        ));
    }
    let text_ok = |s: &str| !s.trim().is_empty() && s.len() <= rewards_core::limits::MAX_TEXT_BYTES;
    if !text_ok(&body.reason) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "reason is required (at most 1024 bytes)",
        ));
    }
    let actor = body.actor.unwrap_or_else(|| "admin-api".into());
    if !text_ok(&actor) {
        return Err(ApiError::bad_request(
            "invalid_actor",
            "actor must be 1-1024 bytes",
        ));
    }
    let adjustment = Adjustment {
        id: request_id.clone(),
        member: member.clone(),
        points: Points(body.points),
        reason: body.reason,
        actor,
        time: body.time.unwrap_or_else(Utc::now),
        expires_at: body.expires_at,
    };
    match state.store.adjust(&adjustment).await {
        Ok(receipt) => {
            if !receipt.duplicate {
                state.metrics.adjustment();
                tracing::info!(member = %member, points = body.points, key = %key, actor = %adjustment.actor, "adjusted");
            }
            let status = if receipt.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut value = receipt_json(&receipt, &key);
            value["points"] = json!(body.points);
            Ok((status, Json(value)).into_response())
        }
        Err(e) if e.kind() == ErrorKind::Conflict => {
            match find_earlier(
                &state,
                &member,
                &request_id,
                EntryKind::Adjustment,
                body.points,
            )
            .await?
            {
                Some(mut value) => {
                    value["id"] = json!(key);
                    value["points"] = json!(body.points);
                    Ok((StatusCode::OK, Json(value)).into_response())
                }
                None => Err(key_reused(&key)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Body of `POST /v1/admin/cache/rebuild`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Members to rebuild (default: drop everything; reads refill it).
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

async fn cache_rebuild(
    State(state): State<Arc<AppState>>,
    OptionalBody(body): OptionalBody<RebuildRequest>,
) -> ApiResult<Json<Value>> {
    let Some(cache) = &state.cache else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_cache",
            "this daemon runs without a cache (embedded mode): nothing to rebuild",
        ));
    };
    let members = match body.members {
        Some(list) => {
            if list.len() > MAX_PAGE_ROWS {
                return Err(ApiError::bad_request(
                    "too_many_members",
                    format!("at most {MAX_PAGE_ROWS} members per call"),
                ));
            }
            Some(
                list.iter()
                    .map(|m| member_id(m))
                    .collect::<ApiResult<Vec<_>>>()?,
            )
        }
        None => None,
    };
    let report = cache.rebuild(members).await?;
    Ok(Json(report))
}

async fn reconcile(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let report = state.store.reconcile().await?;
    Ok(Json(json!({
        "clean": report.is_clean(),
        "members": report.members,
        "postings": report.postings,
        "drift": report.drift,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_roles() {
        let auth = Auth::new(
            &[Secret::new("user-token-0123456789")],
            &[Secret::new("admin-token-0123456789")],
            &[Secret::new("ingest-token-0123456789")],
        );
        assert_eq!(auth.role(Some(b"ingest-token-0123456789")), Role::Ingest);
        assert_eq!(auth.role(None), Role::Anonymous);
        assert_eq!(auth.role(Some(b"nope")), Role::Anonymous);
        assert_eq!(auth.role(Some(b"user-token-0123456789")), Role::User);
        assert_eq!(auth.role(Some(b"admin-token-0123456789")), Role::Admin);
        assert_eq!(auth.role(Some(b"user-token-012345678")), Role::Anonymous);
    }

    #[test]
    fn bearer_headers_are_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc "),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
