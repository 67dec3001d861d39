//! `GET /openapi.json`: served, OpenAPI 3.1, and covering every route with its errors.
//! (CI also validates it with openapi-spec-validator and fuzzes the service against it:
//! `scripts/fuzz-api.sh`.)

use chat_proxy::demo::MockKnobs;
use serde_json::Value;

use crate::helpers::spawn_app_with;

const ROUTES: [(&str, &str); 17] = [
    ("post", "/answer"),
    ("post", "/v1/chat/completions"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{id}"),
    ("post", "/ocr"),
    ("post", "/ocr_handler"),
    ("get", "/ocr/{id}"),
    ("patch", "/ocr/{id}"),
    ("post", "/ocr/jobs"),
    ("get", "/ocr/jobs/{id}"),
    ("delete", "/ocr/jobs/{id}"),
    ("get", "/health"),
    ("get", "/actuator/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_spec_documents_every_route_its_bodies_and_errors() {
    let app = spawn_app_with(MockKnobs::default(), |_| {}).await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().expect("paths");
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().expect("operations").len())
        .sum();
    assert_eq!(documented, ROUTES.len(), "exactly the routes: {paths:?}");
    for (method, path) in ROUTES {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        let responses = operation["responses"].as_object().expect("responses");
        if !path.contains("health") {
            assert!(responses.contains_key("401"), "{method} {path} names 401");
        }
        // Every route the spec names is served (a path parameter reaches its handler).
        let url = app.url(&path.replace("{id}", "no-such-id"));
        let response = app
            .client
            .request(method.to_uppercase().parse().expect("method"), url)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        assert!(
            responses.contains_key(&status.to_string()),
            "{method} {path} answered {status}, which the spec lists"
        );
    }
    let answer = &spec["paths"]["/answer"]["post"];
    for status in ["200", "400", "413", "429", "502", "503", "504"] {
        assert!(answer["responses"][status].is_object(), "/answer {status}");
    }
    let content = &answer["responses"]["200"]["content"];
    assert!(content["text/event-stream"].is_object());
    assert!(content["application/json"].is_object());
    let completions = &spec["paths"]["/v1/chat/completions"]["post"];
    for status in [
        "200", "400", "401", "404", "413", "429", "502", "503", "504",
    ] {
        assert!(
            completions["responses"][status].is_object(),
            "/v1/chat/completions {status}"
        );
    }
    let schemas = spec["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "ChatCompletionBody",
        "ChatCompletion",
        "OpenAiErrorBody",
        "ModelList",
        "AnswerBody",
        "AnswerReply",
        "AnswerStreamEvent",
        "ErrorBody",
        "OcrResult",
        "OcrResultView",
        "Job",
        "HealthReport",
    ] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
    // Each fund says why its share is null.
    let warnings = &schemas["Fund"]["properties"]["warnings"];
    assert_eq!(warnings["type"], "array", "{warnings}");
    assert!(
        warnings["description"]
            .as_str()
            .is_some_and(|d| d.contains("only_available_share")),
        "{warnings}"
    );
    assert_eq!(
        spec["components"]["securitySchemes"]["client_key"]["scheme"],
        "bearer"
    );
}
