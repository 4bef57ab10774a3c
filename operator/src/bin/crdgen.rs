//! Prints every netdx CRD as multi-document YAML: `cargo run -p netdx-operator --bin crdgen > crds/crds.yaml`;
//! with `--reference`, their fields as Markdown (docs/crd-reference.md).

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => print!("{}", netdx_operator::crdgen::render()?),
        Some("--reference") => print!("{}", netdx_operator::crdgen::reference()),
        Some(other) => anyhow::bail!("unknown argument {other:?}: expected nothing or --reference"),
    }
    Ok(())
}
