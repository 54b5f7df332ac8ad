//! Fuzzes the HTTP request reader: no input may panic it, a request it accepts
//! lies within the input, parses the same from exactly its own bytes, and is still
//! incomplete one byte short.
#![no_main]

use libfuzzer_sys::fuzz_target;
use userbus::http::parse_request;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(req)) = parse_request(data) else {
        return;
    };
    assert!(req.len > 0 && req.len <= data.len());
    assert!(req.body.len() <= userbus::http::MAX_BODY_BYTES);
    let own = &data[..req.len];
    let again = parse_request(own)
        .expect("a request parses from its own bytes")
        .expect("a request is complete in its own bytes");
    assert_eq!(again.len, req.len);
    assert_eq!(again.body, req.body);
    assert_eq!(again.path, req.path);
    assert!(matches!(parse_request(&data[..req.len - 1]), Ok(None)));
    let _ = userbus::http::query_param(&req.query, "cursor");
    let _ = userbus::http::percent_decode(&req.path, false);
});
