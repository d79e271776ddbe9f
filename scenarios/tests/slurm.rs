//! `hvsim sweep --emit-slurm`: the generated array and merge scripts.
#![allow(clippy::unwrap_used)]

use scenarios::slurm;
use std::path::Path;

#[test]
fn the_scripts_run_one_shard_per_array_task_and_merge_them() {
    let s = slurm::scripts(
        "ci-smoke",
        Path::new("scenarios/ci-smoke.toml"),
        Path::new("out/slurm"),
        3,
        Path::new("/project"),
    );
    assert!(s.sweep.starts_with("#!/bin/bash\n"));
    assert!(s.sweep.contains("#SBATCH --array=0-2\n"), "{}", s.sweep);
    assert!(s.sweep.contains("#SBATCH --job-name=hvsim-ci-smoke\n"));
    assert!(s.sweep.contains("#SBATCH --chdir=/project\n"));
    assert!(
        s.sweep.contains(
            "\"$HVSIM\" sweep scenarios/ci-smoke.toml --shard $SLURM_ARRAY_TASK_ID/3 \
             --output out/slurm/shard-$SLURM_ARRAY_TASK_ID --quiet"
        ),
        "{}",
        s.sweep
    );
    assert!(s.merge.contains("--dependency=afterany:"), "{}", s.merge);
    assert!(s
        .merge
        .lines()
        .filter(|l| l.contains("--dependency"))
        .all(|l| l.starts_with('#')));
    assert!(
        s.merge.contains(
            "\"$HVSIM\" merge out/slurm/shard-* --output out/slurm/merged && \
             \"$HVSIM\" check out/slurm/merged\n"
        ),
        "{}",
        s.merge
    );
    assert!(!s.merge.contains("--array"));
    // Paths with spaces or quotes stay one shell word.
    assert_eq!(slurm::shell_word("a b"), "'a b'");
    assert_eq!(slurm::shell_word("it's"), "'it'\\''s'");
    assert_eq!(slurm::shell_word("x/y-1.toml"), "x/y-1.toml");
}

#[test]
fn cli_writes_the_scripts_without_running_anything() {
    let d = std::env::temp_dir().join(format!("hvsim-slurm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci-smoke.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hvsim"))
        .arg("sweep")
        .arg(&scenario)
        .arg("--emit-slurm")
        .arg(&d)
        .args(["--shards", "5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sweep = std::fs::read_to_string(d.join("sweep.sbatch")).unwrap();
    assert!(sweep.contains("#SBATCH --array=0-4\n"));
    assert!(sweep.contains("--shard $SLURM_ARRAY_TASK_ID/5 "));
    assert!(std::fs::read_to_string(d.join("merge.sbatch"))
        .unwrap()
        .contains("check "));
    assert!(d.join("logs").is_dir());
    // Nothing ran: no results anywhere under DIR.
    assert!(!d.join("shard-0").exists() && !d.join("merged").exists());
    let _ = std::fs::remove_dir_all(d);
}
