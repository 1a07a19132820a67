//! `sqlx::migrate!` embeds `migrations/` at compile time; this makes a new
//! migration file trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
