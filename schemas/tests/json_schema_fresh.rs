//! The committed JSON Schema files equal the ones generated from the types. A stale file is
//! rewritten and the test fails, so the change shows up in review.

use std::path::Path;

#[test]
fn committed_json_schemas_are_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    std::fs::create_dir_all(&dir).expect("create schemas/json");
    let mut stale = Vec::new();
    for (name, text) in hermes_schemas::json_schema::all() {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, &text).expect("write schema");
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schema files rewritten, commit them: {stale:?}"
    );
}
