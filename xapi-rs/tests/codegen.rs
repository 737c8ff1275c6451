//! The checked-in generated datamodel is what the generator makes of the
//! reference's definition. CI lays the definition out beside the clone
//! (`../shared/reference/xenapi-datamodel.json`); without it the test says
//! it skipped.

use std::path::Path;

#[test]
fn codegen_is_current() {
    let krate = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(def) = xapi_codegen::find_definition(krate) else {
        println!("skipped: codegen_is_current (no reference definition)");
        eprintln!("skipped: codegen_is_current (no reference definition)");
        return;
    };
    let text = std::fs::read_to_string(&def).unwrap();
    let files = xapi_codegen::generate(&text).expect("generate");
    let out = krate.join(xapi_codegen::OUT_DIR);
    let mut stale = vec![];
    for (name, want) in &files {
        let have = std::fs::read_to_string(out.join(name)).unwrap_or_default();
        if &have != want {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what {} gives: run `cargo run --release -p xapi-codegen`",
        def.display()
    );
}
