//! Rebuilds the crate when a migration is added: `embed_migrations!` only tracks files that exist.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
