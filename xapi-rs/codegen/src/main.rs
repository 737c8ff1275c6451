//! `xapi-codegen [DEFINITION]`: writes xapi-rs/src/generated/*.rs from the
//! reference's xenapi-datamodel.json (default: found by walking up from the
//! crate to `shared/reference/xenapi-datamodel.json`).

use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        eprintln!("xapi-codegen: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no xapi-rs directory")?
        .to_path_buf();
    let def: PathBuf = match std::env::args().nth(1) {
        Some(p) => p.into(),
        None => xapi_codegen::find_definition(&crate_dir).ok_or_else(|| {
            format!(
                "no {} above {}; pass its path",
                xapi_codegen::DEFINITION,
                crate_dir.display()
            )
        })?,
    };
    let text = std::fs::read_to_string(&def).map_err(|e| format!("{}: {e}", def.display()))?;
    let out = crate_dir.join(xapi_codegen::OUT_DIR);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for (name, src) in xapi_codegen::generate(&text)? {
        let p = out.join(&name);
        std::fs::write(&p, src).map_err(|e| format!("{}: {e}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
