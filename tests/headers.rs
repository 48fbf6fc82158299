//! The committed headers in include/ are exactly what build.rs generates
//! from the current sources. When this fails, run `make headers` and commit.

use std::fs;
use std::path::Path;

#[test]
fn committed_headers_match_a_fresh_generation() {
    let generated = Path::new(env!("PYMALLOC_GENERATED_INCLUDE"));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let mut compared = 0;
    for name in ["pymalloc.h", "pymalloc/pymem.h", "pymalloc/objimpl.h"] {
        let fresh = fs::read_to_string(generated.join(name)).expect("generated header");
        let stored = fs::read_to_string(committed.join(name))
            .unwrap_or_else(|e| panic!("include/{name}: {e}; run `make headers`"));
        assert!(
            fresh == stored,
            "include/{name} is stale: it differs from what build.rs generates now. \
             Run `make headers` and commit the result."
        );
        compared += 1;
    }
    assert_eq!(compared, 3);
}
