//! An API failure as it goes on the wire: `[CODE, params...]`. Built only
//! through the generated constructors in [`crate::generated::errors`]
//! (`errors::handle_invalid(class, r)`, `ErrorCode::X.with(&[..])`), so a
//! code is never a string literal at a call site.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub Vec<String>);

impl ApiError {
    /// For the generated constructors.
    pub(crate) fn from_code(code: &str, params: &[&str]) -> ApiError {
        let mut v = vec![code.to_string()];
        v.extend(params.iter().map(|s| s.to_string()));
        ApiError(v)
    }
    pub fn code(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }
}
