//! The success envelope `{"status":"ok","result":…,"time":…}` (spec §1.1).

use std::convert::Infallible;

use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, Responder};
use serde::Serialize;
use serde_json::{Map, Value};

pub use crate::telemetry::request::elapsed_secs;

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

/// The success envelope around a `result` that a job already encoded as JSON. Large results
/// (a 100 MB file, an unlimited grep) are serialized on the pool, never on an HTTP worker, and
/// sent as three chunks without another copy.
pub fn encoded_ok(result: Vec<u8>) -> HttpResponse {
    encoded_ok_with(result, &[])
}

/// [`encoded_ok`] with extra top-level keys (`has_more`).
pub fn encoded_ok_with(result: Vec<u8>, top: &[(&str, Value)]) -> HttpResponse {
    encoded_ok_holding(result, top, ())
}

/// [`encoded_ok_with`] keeping `hold` (a budget charge) alive until the body was sent or the
/// client went away.
pub fn encoded_ok_holding(
    result: Vec<u8>,
    top: &[(&str, Value)],
    hold: impl Sized + 'static,
) -> HttpResponse {
    let encoded = Bytes::from(result);
    let head = Bytes::from_static(br#"{"status":"ok","result":"#);
    let mut tail = String::new();
    for (k, v) in top {
        tail.push_str(&format!(",{}:{v}", Value::from(*k)));
    }
    tail.push_str(&format!(r#","time":{}}}"#, elapsed_secs()));
    let tail = Bytes::from(tail);
    let len = (head.len() + encoded.len() + tail.len()) as u64;
    let chunks = std::iter::once(head)
        .chain(slices(encoded))
        .chain(std::iter::once(tail));
    HttpResponse::Ok()
        .content_type("application/json")
        .body(SizedStream::new(
            len,
            futures_util::stream::iter(chunks.map(move |chunk| {
                let _held = &hold;
                Ok::<_, Infallible>(chunk)
            })),
        ))
}

/// Size of the pieces a large body is sent in.
const SEND_CHUNK: usize = 64 * 1024;

/// Zero-copy 64 KiB views of `body`. The HTTP/1 encoder copies each chunk it is given into
/// its write buffer in one go; handing it a 100 MB chunk would mean a second 100 MB copy and a
/// worker busy with one memcpy while its other connections wait. Small pieces keep the buffer
/// small and let the worker interleave connections under backpressure.
pub fn slices(body: Bytes) -> impl Iterator<Item = Bytes> {
    let len = body.len();
    (0..len.div_ceil(SEND_CHUNK)).map(move |i| {
        let start = i * SEND_CHUNK;
        body.slice(start..(start + SEND_CHUNK).min(len))
    })
}
