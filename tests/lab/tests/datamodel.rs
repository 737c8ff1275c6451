//! Black-box check of the generated datamodel against the reference's
//! definition, on the running daemon: every class's `get_all_records`
//! returns records with exactly the definition's field names and wire
//! types, and every method `system.listMethods` names exists in the
//! definition. Reads the definition from `shared/reference/` above the
//! checkout; without it the test says it skipped.
//! By hand: `lab up`, then
//! `cargo test -p lab --test datamodel -- --ignored --test-threads=1`.

use lab::testing::{lab, login, rpc};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use xapi_codegen::Ty;

/// Each call: the largest answer here is get_all_records of a class.
const RPC: Duration = Duration::from_secs(60);

/// Why `v` is not a wire value of type `t`, if it is not.
fn type_error(
    v: &serde_json::Value,
    t: &Ty,
    enums: &BTreeMap<String, Vec<String>>,
) -> Option<String> {
    use serde_json::Value as J;
    let ok = match (t, v) {
        (Ty::String | Ty::DateTime, J::String(_)) => true,
        (Ty::Ref(_), J::String(s)) => s.starts_with("OpaqueRef:"),
        (Ty::Int, J::Number(n)) => n.is_i64(),
        (Ty::Float, J::Number(_)) | (Ty::Bool, J::Bool(_)) => true,
        (Ty::Enum(e), J::String(s)) => enums.get(e).is_some_and(|vals| vals.contains(s)),
        (Ty::Set(et), J::Array(items)) => {
            return items.iter().find_map(|i| type_error(i, et, enums))
        }
        (Ty::Map(_, vt), J::Object(m)) => return m.values().find_map(|x| type_error(x, vt, enums)),
        (Ty::Option(x), v) => return type_error(v, x, enums),
        (Ty::Any | Ty::Record(_), _) => true,
        _ => false,
    };
    (!ok).then(|| format!("{v} is not a {t:?}"))
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn records_and_methods_match_the_definition() {
    let Some(def) = xapi_codegen::find_definition(Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!("skipped: records_and_methods_match_the_definition (no reference definition)");
        eprintln!("skipped: records_and_methods_match_the_definition (no reference definition)");
        return;
    };
    let (classes, enums) = xapi_codegen::model(&std::fs::read_to_string(def).unwrap()).unwrap();
    let st = lab("lab up");
    let s = login(&st, RPC);

    let mut checked = 0;
    let mut records = 0;
    for c in classes
        .iter()
        .filter(|c| c.messages.iter().any(|m| m == "get_all_records"))
    {
        let v = rpc(
            &st,
            &format!("{}.get_all_records", c.name),
            serde_json::json!([s]),
            RPC,
        );
        let all = v["result"]
            .as_object()
            .unwrap_or_else(|| panic!("{}.get_all_records: {v}", c.name));
        for (r, rec) in all {
            let rec = rec.as_object().unwrap();
            let mut have: Vec<&str> = rec.keys().map(String::as_str).collect();
            let mut want: Vec<&str> = c.fields.iter().map(|(n, _)| n.as_str()).collect();
            have.sort();
            want.sort();
            assert_eq!(have, want, "{} {r}: field names", c.name);
            for (n, t) in &c.fields {
                if let Some(e) = type_error(&rec[n], t, &enums) {
                    panic!("{} {r}: field {n}: {e}", c.name);
                }
            }
            records += 1;
        }
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} classes have get_all_records");
    assert!(records > 0, "no records at all");

    let v = rpc(&st, "system.listMethods", serde_json::json!([]), RPC);
    let methods = v["result"]
        .as_array()
        .unwrap_or_else(|| panic!("listMethods: {v}"));
    let known: std::collections::HashSet<String> = classes
        .iter()
        .flat_map(|c| c.messages.iter().map(move |m| format!("{}.{m}", c.name)))
        .collect();
    for m in methods {
        let m = m.as_str().unwrap();
        if m.starts_with("system.") {
            continue;
        }
        let plain = m.strip_prefix("Async.").unwrap_or(m);
        assert!(
            known.contains(plain),
            "{m} is listed but not in the definition"
        );
    }
    // A message of the definition nobody implements yet answers NOT_IMPLEMENTED.
    let v = rpc(&st, "VM.get_all_records", serde_json::json!([s]), RPC);
    assert!(v["result"].is_object(), "{v}");
    let v = rpc(
        &st,
        "VM.checkpoint",
        serde_json::json!([s, "OpaqueRef:NULL", "c"]),
        RPC,
    );
    assert_eq!(v["error"]["message"], "NOT_IMPLEMENTED", "{v}");
    println!(
        "{checked} classes, {records} records, {} methods checked",
        methods.len()
    );
}
