//! The API description is committed and current, and every non-public operation in it refuses
//! a request without credentials — so a new endpoint cannot ship unprotected.

use crate::harness::Server;

#[test]
fn committed_openapi_document_is_current() {
    let doc = serde_json::to_string_pretty(&strata_control::openapi::document()).unwrap() + "\n";
    expect_test::expect_file!["../../../../docs/openapi.json"].assert_eq(&doc);
}

#[test]
fn every_endpoint_refuses_requests_without_credentials() {
    let s = Server::start();
    let ops = strata_control::openapi::operations();
    assert!(ops.len() > 40, "the registry lists the API");
    let before = s.running().app.store.revision().unwrap();
    let mut checked = 0;
    for op in ops {
        let path = op
            .path
            .replace("{subscriptionId}", &s.sub())
            .replace("{resourceGroupName}", "rg1")
            .replace("{scope}", &format!("subscriptions/{}", s.sub()))
            .replace("{vaultName}", "probe")
            .replace("{name}", "probe");
        let method = op.method.to_ascii_uppercase();
        let body = serde_json::json!({ "properties": {} });
        let (status, v, _) = s.req(&method, &path, None, op.has_body.then_some(&body), &[]);
        if op.public {
            assert_ne!(status, 401, "{method} {path} is public");
        } else {
            assert_eq!(status, 401, "{method} {path} must require a token: {v}");
            assert_eq!(v["error"]["code"], "AuthenticationFailed");
            checked += 1;
        }
    }
    assert!(checked > 40);
    assert_eq!(
        s.running().app.store.revision().unwrap(),
        before,
        "nothing was written"
    );
}
