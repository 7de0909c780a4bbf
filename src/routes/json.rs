//! The JSON body extractor of the first-party API: `Content-Type: application/json`, bounded
//! size, and a top-level JSON *object*. serde would read a struct from an array positionally
//! (`["alice","pw"]` as a login), so anything but an object is refused as malformed.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Request bodies on this API are small; anything larger is refused before parsing.
pub const MAX_JSON_BODY: usize = 16 * 1024;

/// A request body that is a JSON object deserialized into `T`.
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| {
                let essence = essence.trim();
                essence.eq_ignore_ascii_case("application/json")
                    || (essence.len() > 5
                        && essence
                            .get(essence.len() - 5..)
                            .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
            });
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::unsupported_media_type());
            }
            let bytes = body.await.map_err(|e| match e.as_error::<PayloadError>() {
                Some(PayloadError::Overflow) => ApiError::payload_too_large(),
                _ => ApiError::invalid_request("invalid body"),
            })?;
            parse(&bytes).map(JsonObject)
        })
    }
}

/// A JSON object body, or `T::default()` when the body is empty (a cookie client's refresh and
/// logout carry nothing but the cookie).
pub struct OptionalJsonObject<T>(pub T);

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJsonObject<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let object = JsonObject::<T>::from_request(req, payload);
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
            || (req.headers().get(header::CONTENT_LENGTH).is_none()
                && req.headers().get(header::TRANSFER_ENCODING).is_none());
        Box::pin(async move {
            if empty {
                return Ok(OptionalJsonObject(T::default()));
            }
            object.await.map(|JsonObject(t)| OptionalJsonObject(t))
        })
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::invalid_request(
            "invalid body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's messages can quote the offending value (a password sent as a number, say),
        // so only the kinds that name a field pass through.
        let msg = e.to_string();
        let names_a_field = msg.starts_with("missing field") || msg.starts_with("unknown field");
        ApiError::invalid_request(match (e.classify(), names_a_field) {
            (_, true) => format!(
                "invalid body: {}",
                msg.split(" at line").next().unwrap_or("")
            ),
            (serde_json::error::Category::Data, false) => {
                "invalid body: a field has the wrong type or value".into()
            }
            _ => "invalid body: not well-formed JSON".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Login {
        #[allow(dead_code)]
        username: String,
    }

    #[test]
    fn only_a_json_object_is_accepted() {
        assert!(parse::<Login>(br#" {"username": "a"}"#).is_ok());
        for bad in [&br#"["a"]"#[..], b"\"a\"", b"1", b"null", b"", b"  "] {
            let err = parse::<Login>(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{bad:?}");
        }
    }
}
