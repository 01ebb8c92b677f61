//! Replays every committed seed (`seeds/<target>/`) and every past finding
//! (`regressions/<target>/`) through its target's check, without libFuzzer:
//! `cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for (target, run) in tern_fuzz::TARGETS {
        for path in inputs(&root.join(kind).join(target)) {
            let data = std::fs::read(&path).expect("readable input");
            // Printed before the run so a failure names its input.
            eprintln!("{target}: {}", path.display());
            run(&data);
            count += 1;
        }
    }
    count
}

#[test]
fn seeds_pass_every_check() {
    let n = replay("seeds");
    assert!(n > 0, "no seeds found: run fuzz/make-seeds.sh");
}

#[test]
fn regressions_stay_fixed() {
    replay("regressions");
}
