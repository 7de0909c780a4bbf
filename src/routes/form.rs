//! The form body of the OAuth endpoints (`application/x-www-form-urlencoded`, RFC 6749 §3.2 and
//! Appendix B), parsed strictly: bounded size, valid UTF-8 after decoding, every parameter at
//! most once (RFC 6749 §3.1), and a parameter sent without a value treated as omitted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use crate::error::ApiError;

/// A parsed form: each parameter once, non-empty values only.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `application/x-www-form-urlencoded` bytes, strictly.
    pub fn parse(bytes: &[u8]) -> Result<Form, ApiError> {
        let mut params = HashMap::new();
        for pair in bytes.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if params.contains_key(&name) {
                return Err(ApiError::invalid_request(format!(
                    "the parameter {name:?} appears more than once"
                )));
            }
            if !value.is_empty() {
                params.insert(name, value);
            }
        }
        Ok(Form(params))
    }
}

/// Percent-decodes one name or value (`+` is a space), refusing anything but UTF-8.
pub fn decode(raw: &[u8]) -> Result<String, ApiError> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    let text =
        String::from_utf8(bytes).map_err(|_| ApiError::invalid_request("the form is not UTF-8"))?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ApiError::invalid_request(
            "the form holds control characters",
        ));
    }
    Ok(text)
}

impl FromRequest for Form {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| {
                essence
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_form {
                return Err(ApiError::invalid_request(
                    "the body must be application/x-www-form-urlencoded",
                ));
            }
            let bytes = body.await.map_err(|e| match e.as_error::<PayloadError>() {
                Some(PayloadError::Overflow) => ApiError::payload_too_large(),
                _ => ApiError::invalid_request("invalid body"),
            })?;
            Form::parse(&bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_form_parsing() {
        let form = Form::parse(b"grant_type=refresh_token&scope=a+b%20c&empty=&x").unwrap();
        assert_eq!(form.get("grant_type"), Some("refresh_token"));
        assert_eq!(form.get("scope"), Some("a b c"));
        assert_eq!(form.get("empty"), None);
        assert_eq!(form.get("x"), None);
        for bad in [&b"a=1&a=2"[..], b"a=1&a=", b"a=%ff%fe", b"a=%00"] {
            assert!(Form::parse(bad).is_err(), "{bad:?}");
        }
    }
}
