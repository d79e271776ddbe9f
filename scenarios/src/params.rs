//! Parameter paths: the dotted names a scenario's `[machine] overrides` and `[sweep]` use.
//!
//! A machine profile's parameters are the leaves of its TOML tree (`core.cost.div`,
//! `mmu.tlb.stlb.entries`, ...); overrides are applied to that tree *before* it is
//! deserialised into a [`MachineProfile`], so a misspelt path is rejected by name. The
//! scenario-level parameters (`guest.vcpus`, `guest.args.1`, `budget.max_instructions`,
//! ...) are listed in [`SCENARIO_PARAMS`].

use crate::suggest::did_you_mean;
use serde::Deserialize;
use sim_core::MachineProfile;
use std::path::Path;

/// A scenario-level sweepable parameter: (path, type, what it sets).
pub const SCENARIO_PARAMS: &[(&str, &str, &str)] = &[
    ("machine.profile", "string", "machine profile name or file"),
    (
        "machine.interrupts.rate",
        "integer",
        "NIC received events per second (0: no NIC)",
    ),
    (
        "machine.interrupts.itr",
        "integer",
        "NIC interrupts per second per queue at most (0: unthrottled)",
    ),
    (
        "machine.net.peer.rate_pps",
        "integer",
        "frames per second a source peer offers (runs whose peer is a source)",
    ),
    (
        "machine.net.path",
        "string",
        "network path: auto, emulated, pv, passthrough or direct (runs with a network)",
    ),
    (
        "machine.net.rx",
        "string",
        "the split driver's receive path: copy or flip (runs with a network)",
    ),
    (
        "machine.blk.path",
        "string",
        "block path: auto, emulated or pv (runs with a disk)",
    ),
    (
        "machine.blk.access_ns",
        "integer",
        "the disk's random-access time, ns (runs with a disk)",
    ),
    (
        "machine.blk.mb_per_s",
        "integer",
        "the disk's transfer rate, MB/s (runs with a disk)",
    ),
    ("guest.workload", "string", "workload run by every guest"),
    ("guest.args", "array of strings", "the workload's arguments"),
    (
        "guest.args.N",
        "string or integer",
        "argument N (from 0) of the workload",
    ),
    ("guest.vcpus", "integer", "vCPUs of every guest (1..=64)"),
    (
        "guest.memory_mib",
        "integer",
        "memory of every guest in MiB (16..=65536)",
    ),
    (
        "budget.max_instructions",
        "integer",
        "instruction budget of each run",
    ),
    ("seed", "integer", "seed recorded with each run"),
];

/// Profile leaves that are labels, not parameters.
const NOT_PARAMS: &[&str] = &["name", "description"];

/// Whether `path` names a scenario-level parameter (`guest.args.3` included).
pub fn is_scenario_param(path: &str) -> bool {
    if let Some(i) = path.strip_prefix("guest.args.") {
        return i.parse::<usize>().is_ok();
    }
    SCENARIO_PARAMS.iter().any(|(p, _, _)| *p == path)
}

/// Reads a profile's TOML text: a built-in name, or a file (relative paths are tried
/// against `base_dir` first, then the current directory). Returns (origin, text).
pub fn profile_text(name_or_path: &str, base_dir: &Path) -> Result<(String, String), String> {
    if let Some((n, text)) = sim_core::profile::BUILTIN
        .iter()
        .find(|(n, _)| *n == name_or_path)
    {
        return Ok((format!("built-in profile {n}"), (*text).to_string()));
    }
    let in_base = base_dir.join(name_or_path);
    let path = if in_base.exists() {
        in_base
    } else {
        Path::new(name_or_path).to_path_buf()
    };
    if path.exists() {
        return std::fs::read_to_string(&path)
            .map(|t| (name_or_path.to_string(), t))
            .map_err(|e| format!("cannot read profile {name_or_path}: {e}"));
    }
    let names: Vec<&str> = MachineProfile::builtin_names().collect();
    Err(format!(
        "unknown profile '{name_or_path}'{} (built-in profiles: {}; or a path to a TOML file)",
        did_you_mean(name_or_path, names.iter().copied()),
        names.join(", ")
    ))
}

/// Parses profile text into its TOML tree.
pub fn profile_tree(text: &str, origin: &str) -> Result<toml::Table, String> {
    text.parse::<toml::Table>()
        .map_err(|e| format!("profile {origin}: {e}"))
}

/// Every parameter leaf of a profile tree as (dotted path, value), in tree order.
pub fn leaves(tree: &toml::Table) -> Vec<(String, toml::Value)> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) => walk(&path, sub, out),
                _ if prefix.is_empty() && NOT_PARAMS.contains(&k.as_str()) => {}
                _ => out.push((path, v.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// A TOML value's type as the docs name it.
pub fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "string",
        toml::Value::Integer(_) => "integer",
        toml::Value::Float(_) => "float",
        toml::Value::Boolean(_) => "boolean",
        toml::Value::Datetime(_) => "datetime",
        toml::Value::Array(_) => "array",
        toml::Value::Table(_) => "table",
    }
}

/// A value as one short piece of text (strings without quotes).
pub fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets the leaf at `path` to `value`; the path must exist and the type must match
/// (an integer is accepted where a float is expected).
pub fn apply_override(
    tree: &mut toml::Table,
    path: &str,
    value: &toml::Value,
) -> Result<(), String> {
    let unknown = |tree: &toml::Table| {
        let all: Vec<String> = leaves(tree).into_iter().map(|(p, _)| p).collect();
        format!(
            "unknown parameter path '{path}'{} (see `hvsim list` for every path)",
            did_you_mean(path, all.iter().map(String::as_str))
        )
    };
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() == 1 && NOT_PARAMS.contains(&path) {
        return Err(unknown(tree));
    }
    let (last, inner) = match parts.split_last() {
        Some(x) => x,
        None => return Err(unknown(tree)),
    };
    let mut node: &toml::Table = tree;
    for p in inner {
        match node.get(*p) {
            Some(toml::Value::Table(t)) => node = t,
            _ => return Err(unknown(tree)),
        }
    }
    let old = match node.get(*last) {
        Some(toml::Value::Table(_)) | None => return Err(unknown(tree)),
        Some(v) => v.clone(),
    };
    let new = match (&old, value) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
        (o, n) if std::mem::discriminant(o) == std::mem::discriminant(n) => n.clone(),
        (o, n) => {
            return Err(format!(
                "parameter '{path}' is {} {}, got {} {}",
                article(type_name(o)),
                type_name(o),
                article(type_name(n)),
                type_name(n)
            ))
        }
    };
    // Walk again mutably (the immutable walk above proved the path).
    let mut node: &mut toml::Table = tree;
    for p in inner {
        match node.get_mut(*p) {
            Some(toml::Value::Table(t)) => node = t,
            _ => return Err(unknown(&toml::Table::new())),
        }
    }
    node.insert((*last).to_string(), new);
    Ok(())
}

fn article(t: &str) -> &'static str {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Deserialises and validates a (possibly overridden) profile tree.
pub fn build_profile(tree: &toml::Table, origin: &str) -> Result<MachineProfile, String> {
    // Deserialising the value first gives type and range errors without the line numbers
    // of re-serialised text; `from_toml` then runs the profile's own validation.
    MachineProfile::deserialize(toml::Value::Table(tree.clone()))
        .map_err(|e| e.message().trim().to_string())?;
    let text = toml::to_string(tree).map_err(|e| e.to_string())?;
    MachineProfile::from_toml(&text, origin).map_err(|e| match e {
        sim_core::SimError::Profile { message, .. } => message,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree() -> toml::Table {
        let (o, t) = profile_text("nehalem-x5570", Path::new(".")).unwrap();
        profile_tree(&t, &o).unwrap()
    }

    #[test]
    fn leaves_include_inline_tables_and_skip_labels() {
        let l = leaves(&tree());
        assert!(l.iter().any(|(p, _)| p == "core.cost.div"));
        assert!(l.iter().any(|(p, _)| p == "mmu.tlb.stlb.entries"));
        assert!(!l.iter().any(|(p, _)| p == "name"));
    }

    #[test]
    fn override_sets_known_paths_and_rejects_unknown_ones() {
        let mut t = tree();
        apply_override(&mut t, "mmu.tlb.stlb.entries", &toml::Value::Integer(1024)).unwrap();
        let p = build_profile(&t, "x").unwrap();
        assert_eq!(p.mmu.tlb.stlb.entries, 1024);
        let e = apply_override(&mut t, "core.cost.dvi", &toml::Value::Integer(3)).unwrap_err();
        assert!(e.contains("did you mean 'core.cost.div'"), "{e}");
        let e =
            apply_override(&mut t, "core.cost.div", &toml::Value::String("x".into())).unwrap_err();
        assert!(e.contains("integer"), "{e}");
    }
}
