//! gRPC over HTTP/2 (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>): the call
//! named by `:path`, and the status codes the trailers carry.

/// `/package.Service/Method` split into service and method; None for any other shape.
pub fn service_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') || method.contains('?') {
        return None;
    }
    Some((service, method))
}

/// The canonical name of a status code (`grpc::StatusCode`), for `error.type`.
pub fn status_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => return None,
    })
}

/// Whether a server span with this status is an error (OTel gRPC conventions: only codes that
/// mean the server failed, not that the caller asked for something wrong).
pub fn server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Whether a client span with this status is an error: anything but OK.
pub fn client_error(code: u32) -> bool {
    code != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            service_method("/tracewire.test.Echo/Unary"),
            Some(("tracewire.test.Echo", "Unary"))
        );
        assert_eq!(
            service_method("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        for bad in ["", "/", "//M", "/S/", "/S/M/x", "S/M", "/S/M?x=1"] {
            assert_eq!(service_method(bad), None, "{bad}");
        }
    }

    #[test]
    fn error_rules() {
        let server: Vec<u32> = (0..17).filter(|c| server_error(*c)).collect();
        assert_eq!(server, [2, 4, 12, 13, 14, 15]);
        assert!(!client_error(0) && client_error(5));
        assert_eq!(status_name(5), Some("NOT_FOUND"));
        assert_eq!(status_name(17), None);
    }
}
