//! The OpenAPI document, generated from the action registry so that it cannot drift.

use serde_json::{Map, Value, json};

pub fn document() -> Value {
    let mut paths = Map::new();
    for action in control::ACTIONS {
        let (service, name) = action.name.split_once(':').expect("action names have a colon");
        paths.insert(
            format!("/api/{service}/{name}"),
            json!({
                "post": {
                    "operationId": format!("{service}{name}"),
                    "summary": action.summary,
                    "tags": [service],
                    "security": [{ "bearer": [] }],
                    "requestBody": { "required": false, "content": { "application/json": { "schema": { "type": "object" } } } },
                    "responses": {
                        "200": { "description": "The action's result, with AWS's member names", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "default": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    },
                }
            }),
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "DataSandbox API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["Code", "Message", "RequestId"],
                    "properties": { "Code": { "type": "string" }, "Message": { "type": "string" }, "RequestId": { "type": "string" } },
                }
            },
        },
    })
}
