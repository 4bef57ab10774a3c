//! Embeds operator/model/model.json when it exists, so a missing model is a fallback to the
//! rule tree rather than a build failure.

use std::path::Path;

fn main() {
    // A directory is scanned as a whole, so adding model.json later re-runs this script.
    println!("cargo:rerun-if-changed=model");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/model.json");
    let code = if model.is_file() {
        format!("Some(include_str!({:?}))", model.display().to_string())
    } else {
        "None".to_string()
    };
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("embedded_model.rs");
    std::fs::write(out, format!("/// The model shipped in operator/model/model.json, when there is one.\npub const EMBEDDED_MODEL: Option<&str> = {code};\n"))
        .expect("writing embedded_model.rs");
}
