//! cargo fuzz run operator_auth — what an API client presents: the Authorization header
//! and the DER of its client certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_aggregator::auth::token::parse_authorization;
use wardline_aggregator::pki::operator_identity;

fuzz_target!(|data: &[u8]| {
    let _ = parse_authorization(data);
    let _ = operator_identity(data);
});
