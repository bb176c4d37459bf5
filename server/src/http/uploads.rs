//! `/v2/<name>/blobs/uploads/`: POST (a session, a monolithic upload or a
//! cross-repository mount); `/v2/<name>/blobs/uploads/<uuid>`: GET (where
//! it stands), PATCH (a chunk), PUT (the last chunk and the digest),
//! DELETE.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;

use super::events;
use super::request::{Req, chunk_start, digest_param};
use super::response::{blob_created, empty, location, upload_response};
use super::{ApiError, AppState};
use crate::registry::{RegistryError, RepoName, parse_upload_id};

/// A request on the upload endpoint of a repository.
pub(super) async fn handle_start(
    state: &AppState,
    name: &RepoName,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    match req.method {
        Method::POST => start_upload(state, name, req, body).await,
        ref m => Err(ApiError::method_not_allowed(m, "the upload endpoint")),
    }
}

/// A request on one upload session.
pub(super) async fn handle(
    state: &AppState,
    name: &RepoName,
    uuid: &str,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let uuid = parse_upload_id(uuid)?;
    let uuid = uuid.as_str();
    let reg = &state.registry;
    match req.method {
        Method::GET => {
            let status = reg.upload_status(name, uuid).await?;
            Ok(upload_response(
                state,
                StatusCode::NO_CONTENT,
                name,
                uuid,
                status.size,
            ))
        }
        Method::PATCH => patch_upload(state, name, uuid, req, body).await,
        Method::PUT => put_upload(state, name, uuid, req, body).await,
        Method::DELETE => {
            reg.cancel_upload(name, uuid).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ref m => Err(ApiError::method_not_allowed(m, "an upload")),
    }
}

async fn start_upload(
    state: &AppState,
    name: &RepoName,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let reg = &state.registry;
    if let (Some(mount), Some(from)) = (req.param("mount"), req.param("from")) {
        let d = digest_param(mount)?;
        if let Ok(from) = RepoName::parse(from)
            && let Some(info) = reg.mount_blob(name, &from, &d).await?
        {
            events::blob_mounted(state, req, name, &from, &d, info.size);
            return Ok(blob_created(state, name, &d));
        }
    }
    if let Some(d) = req.param("digest") {
        let d = digest_param(d)?;
        let info = reg.put_blob(name, &d, body.into_data_stream()).await?;
        events::blob_pushed(state, req, name, &info.digest, info.size);
        return Ok(blob_created(state, name, &info.digest));
    }
    // The id carries its start time: nothing is stored until bytes come.
    let uuid = crate::registry::new_upload_id();
    Ok(upload_response(state, StatusCode::ACCEPTED, name, &uuid, 0))
}

/// The API error for `e`; a chunk that does not start where the upload
/// stands (416) also says where the upload is, so the client can go on.
fn upload_error(state: &AppState, name: &RepoName, uuid: &str, e: RegistryError) -> ApiError {
    match e {
        RegistryError::RangeInvalid { .. } => ApiError::from(e).header(
            header::LOCATION,
            location(state, &format!("/v2/{name}/blobs/uploads/{uuid}")),
        ),
        e => e.into(),
    }
}

async fn patch_upload(
    state: &AppState,
    name: &RepoName,
    uuid: &str,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let start = chunk_start(req)?;
    let status = state
        .registry
        .append_upload(name, uuid, start, body.into_data_stream())
        .await
        .map_err(|e| upload_error(state, name, uuid, e))?;
    Ok(upload_response(
        state,
        StatusCode::ACCEPTED,
        name,
        uuid,
        status.size,
    ))
}

async fn put_upload(
    state: &AppState,
    name: &RepoName,
    uuid: &str,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(d) = req.param("digest") else {
        return Err(RegistryError::DigestInvalid(
            "the final PUT of an upload needs ?digest=<digest>".into(),
        )
        .into());
    };
    let d = digest_param(d)?;
    let start = chunk_start(req)?;
    let info = state
        .registry
        .complete_upload(name, uuid, &d, start, body.into_data_stream())
        .await
        .map_err(|e| upload_error(state, name, uuid, e))?;
    events::blob_pushed(state, req, name, &info.digest, info.size);
    Ok(blob_created(state, name, &info.digest))
}
