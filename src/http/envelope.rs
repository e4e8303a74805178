//! The success envelope `{"status":"ok","result":…,"time":…}` (spec §1.1).

use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, Responder};
use serde::Serialize;
use serde_json::{Map, Value};

tokio::task_local! {
    /// When the current request started; set by the request middleware.
    pub static REQUEST_START: Instant;
}

/// Seconds since the current request started (0 outside a request).
pub fn elapsed_secs() -> f64 {
    REQUEST_START
        .try_with(|start| start.elapsed().as_secs_f64())
        .unwrap_or(0.0)
}

/// A successful API answer.
pub struct ApiOk {
    status: StatusCode,
    result: Value,
    extra: Map<String, Value>,
}

pub type ApiResult = Result<ApiOk, crate::error::ServiceError>;

impl ApiOk {
    /// 200 with `result` serialized.
    pub fn new<T: Serialize>(result: T) -> Self {
        let result = serde_json::to_value(result).unwrap_or(Value::Null);
        ApiOk {
            status: StatusCode::OK,
            result,
            extra: Map::new(),
        }
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// A top-level key beside `result` (e.g. `has_more`).
    pub fn top(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl Responder for ApiOk {
    type Body = BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        let mut body = Map::new();
        body.insert("status".into(), "ok".into());
        body.insert("result".into(), self.result);
        for (k, v) in self.extra {
            body.insert(k, v);
        }
        body.insert("time".into(), elapsed_secs().into());
        HttpResponse::build(self.status).json(Value::Object(body))
    }
}
