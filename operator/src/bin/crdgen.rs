//! Prints every netdx CRD as multi-document YAML: `cargo run -p netdx-operator --bin crdgen > crds/crds.yaml`.

fn main() -> anyhow::Result<()> {
    print!("{}", netdx_operator::crdgen::render()?);
    Ok(())
}
