//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint, generated from the
//! handlers' `#[utoipa::path]` attributes and the request and response types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{answer, health, metrics, ocr, ocr_jobs, ocr_results, openai};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat-proxy",
        description = "Streams a model's answers to chatbot front ends through a fair queue, with an OCR tool for fund screenshots."
    ),
    paths(
        answer::answer,
        openai::chat_completions,
        openai::list_models,
        openai::get_model,
        ocr::recognize,
        ocr::recognize_handler,
        ocr_results::get,
        ocr_results::correct,
        ocr_jobs::create_job,
        ocr_jobs::get_job,
        ocr_jobs::cancel_job,
        health::health,
        health::actuator_health,
        health::live,
        health::ready,
        metrics::metrics,
        openapi,
    ),
    // Referenced by the `IntoResponses` lists, which do not register them themselves.
    components(schemas(
        health::HealthReport,
        health::Readiness,
        crate::ocr::OcrResult,
        crate::error::ErrorBody
    )),
    modifiers(&ClientKey),
    tags(
        (name = "answer", description = "The model's answers, streamed"),
        (name = "openai", description = "The same answers through the OpenAI-compatible API (also served without the `/v1` prefix)"),
        (name = "ocr", description = "Fund screenshots to text and fields"),
        (name = "operations", description = "Health, metrics and this description"),
    )
)]
pub struct ApiDoc;

/// The `Authorization: Bearer KEY` scheme; each operation says it is optional, since the proxy
/// can run without keys on a loopback bind.
struct ClientKey;

impl Modify for ClientKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A key from `auth.keys` or the `auth.keys_env` variable, when any is configured",
                    ))
                    .build(),
            ),
        );
    }
}

/// This API's OpenAPI description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
        (status = 401, description = "Missing or wrong client API key", body = crate::error::ErrorBody),
        (status = 403, description = "From a web page of another origin (`origin_not_allowed`)", body = crate::error::ErrorBody),
    ),
    security((), ("client_key" = [])),
)]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
