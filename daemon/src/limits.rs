//! Oversize requests: tonic rejects a message over the decoding limit with
//! OUT_OF_RANGE before reading its body. keyhaven promises RESOURCE_EXHAUSTED
//! for every limit, so this response mapper rewrites exactly that status,
//! naming the setting that sets the limit.

use tonic::codegen::http;

/// Rewrites tonic's "decoded message length too large" OUT_OF_RANGE into
/// RESOURCE_EXHAUSTED. Other responses pass through untouched.
pub fn map_oversize<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::OutOfRange
        || !status.message().contains("message length too large")
    {
        return response;
    }
    let rewritten = tonic::Status::resource_exhausted(format!(
        "request too large: {} (the limit is max_secret_bytes plus 16 KiB for the key and label)",
        status
            .message()
            .trim_start_matches("Error, decoded message length too large: ")
    ));
    if rewritten.add_header(response.headers_mut()).is_err() {
        tracing::warn!("could not rewrite an oversize-request status");
    }
    response
}
