//! Lambda: the example API's backend behind the authorizer (REST API proxy integration). It answers
//! the routes of [`meter_example_api::Route`] and prints one usage line per request to stdout, which
//! Lambda sends to its log group, where the usage subscription picks it up.
//!
//! Configuration (environment): `METER_LOG` (default `info`).

use meter_lambda::runtime as lambda;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    lambda::serve(|event: serde_json::Value| async move {
        let answer = meter_example_api::handle_proxy_event(&event, chrono::Utc::now());
        if let Some(line) = &answer.usage_line {
            println!("{line}");
        }
        Ok::<_, lambda::Failure>(answer.response)
    })
    .await
}
