//! Prints the OpenAPI document (`cargo run -p coinalarm-api --example openapi > openapi.json`).

fn main() {
    let (_, document) = coinalarm_api::api_router();
    match document.to_pretty_json() {
        Ok(json) => println!("{json}"),
        Err(error) => eprintln!("cannot render the document: {error}"),
    }
}
