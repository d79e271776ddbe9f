//! Slurm batch scripts for a sharded sweep (`hvsim sweep --emit-slurm DIR`): an array job
//! with one task per shard, and a merge job to run after it. Nothing is run or submitted.

use std::path::Path;

/// The generated scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripts {
    /// `sweep.sbatch`: the array job, task K runs shard K of N.
    pub sweep: String,
    /// `merge.sbatch`: merges the shard directories and checks the expectations.
    pub merge: String,
}

/// `s` as one shell word: unchanged when it only holds characters the shell leaves alone,
/// otherwise in single quotes.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The scripts for running `scenario` in `shards` shards with results under `dir`.
/// `name` names the jobs; `workdir` is the directory the jobs start in (relative paths are
/// relative to it); the `hvsim` executable is `$HVSIM`, default `hvsim` on the PATH.
pub fn scripts(name: &str, scenario: &Path, dir: &Path, shards: usize, workdir: &Path) -> Scripts {
    let n = shards.max(1);
    let sc = shell_word(&scenario.display().to_string());
    let d = shell_word(&dir.display().to_string());
    let wd = workdir.display();
    let job: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let sweep = format!(
        "#!/bin/bash\n\
# hvsim sweep of {sc} in {n} shards: array task K runs the runs whose index modulo {n}\n\
# is K and writes {d}/shard-K. Submit it, then merge.sbatch once every task has ended:\n\
#   jid=$(sbatch --parsable {d}/sweep.sbatch)\n\
#   sbatch --dependency=afterany:$jid {d}/merge.sbatch\n\
# Set HVSIM to the hvsim executable if it is not on the PATH of the compute nodes.\n\
#SBATCH --job-name=hvsim-{job}\n\
#SBATCH --array=0-{last}\n\
#SBATCH --cpus-per-task=1\n\
#SBATCH --chdir={wd}\n\
#SBATCH --output={d}/logs/shard-%a.out\n\
set -euo pipefail\n\
HVSIM=\"${{HVSIM:-hvsim}}\"\n\
\"$HVSIM\" sweep {sc} --shard $SLURM_ARRAY_TASK_ID/{n} --output {d}/shard-$SLURM_ARRAY_TASK_ID --quiet --jobs \"${{SLURM_CPUS_PER_TASK:-1}}\"\n",
        last = n - 1,
    );
    let merge = format!(
        "#!/bin/bash\n\
# Merges the {n} shard directories of {d}/sweep.sbatch into {d}/merged (identical to a\n\
# single run's results) and checks the scenario's expectations. Submit it to start after\n\
# the array job, whatever its tasks' exit status (merge reports missing runs):\n\
#   sbatch --dependency=afterany:<array job id> {d}/merge.sbatch\n\
# (--dependency=afterok:<id> instead skips the merge when any shard had a failed run.)\n\
#SBATCH --job-name=hvsim-{job}-merge\n\
#SBATCH --cpus-per-task=1\n\
#SBATCH --chdir={wd}\n\
#SBATCH --output={d}/logs/merge.out\n\
set -euo pipefail\n\
HVSIM=\"${{HVSIM:-hvsim}}\"\n\
\"$HVSIM\" merge {d}/shard-* --output {d}/merged && \"$HVSIM\" check {d}/merged\n"
    );
    Scripts { sweep, merge }
}

/// Writes `sweep.sbatch` and `merge.sbatch` (executable) and the `logs/` directory into
/// `dir`; returns the scripts' paths.
pub fn write(dir: &Path, s: &Scripts) -> Result<[std::path::PathBuf; 2], String> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let paths = [dir.join("sweep.sbatch"), dir.join("merge.sbatch")];
    for (p, text) in paths.iter().zip([&s.sweep, &s.merge]) {
        std::fs::write(p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(paths)
}
