//! Replays every input of the corpus (tests/fuzz/corpus/<target>/, the crashes found included)
//! through its target, without the fuzzer: a regression fails the normal test suite.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    let mut failed = Vec::new();
    for (name, target) in flowlens_fuzz::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{}: no input", dir.display());
        for path in &inputs {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            if outcome.is_err() {
                failed.push(format!("{name}: {}", path.display()));
            }
        }
        eprintln!("{name}: {} inputs", inputs.len());
        total += inputs.len();
    }
    assert!(
        failed.is_empty(),
        "inputs that fail:\n{}",
        failed.join("\n")
    );
    assert!(total >= flowlens_fuzz::TARGETS.len());
}

#[test]
fn every_target_has_a_corpus_and_nothing_else_is_there() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = flowlens_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(dirs, names);
}
