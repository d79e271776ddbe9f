//! The scenario file: a strict TOML schema (every table rejects unknown fields), its
//! validation (before any run starts), and the fully resolved form written beside the
//! results. Errors name the file, line, column and field, list the valid choices and
//! suggest the closest one.

use crate::modes;
use crate::params::{self, apply_override, build_profile, is_scenario_param, value_text};
use crate::suggest::did_you_mean;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Profile used when `[machine] profile` is not given.
pub const DEFAULT_PROFILE: &str = "nehalem-x5570";
/// Output directory used when `output` is not given.
pub const DEFAULT_OUTPUT: &str = "hvsim-results";
/// Instruction budget used when `[budget] max_instructions` is not given.
pub const DEFAULT_MAX_INSTRUCTIONS: u64 = 2_000_000_000;
/// Largest sweep accepted without `--yes`.
pub const MAX_RUNS_WITHOUT_CONFIRMATION: u64 = 10_000;
/// Longest kernel command line (workload and arguments) the boot protocol carries.
pub const MAX_CMDLINE: usize = 255;

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Modes every guest runs under (default `["native"]`).
    #[serde(default = "default_modes")]
    pub modes: Vec<String>,
    /// Seed recorded with every run (randomness, when a model needs it, derives from it).
    #[serde(default)]
    pub seed: u64,
    /// Directory the results are written to (relative to the current directory).
    #[serde(default = "default_output")]
    pub output: String,
    /// Name and description.
    #[serde(default)]
    pub meta: Meta,
    /// The machine: profile and overrides.
    #[serde(default)]
    pub machine: MachineSpec,
    /// A single guest (shorthand for one `[[guests]]` entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestSpec>,
    /// The guests; each runs in its own run (the machine hosts one domain today).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guests: Vec<GuestSpec>,
    /// Limits of each run.
    #[serde(default)]
    pub budget: Budget,
    /// Parameter sweep.
    #[serde(default)]
    pub sweep: Sweep,
    /// Expectations `hvsim check` evaluates.
    #[serde(default, rename = "expect", skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<Expect>,
}

fn default_modes() -> Vec<String> {
    vec![modes::BASELINE.to_string()]
}

fn default_output() -> String {
    DEFAULT_OUTPUT.to_string()
}

/// `[meta]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Short name (default: the file name without `.toml`).
    #[serde(default)]
    pub name: String,
    /// What the scenario measures.
    #[serde(default)]
    pub description: String,
}

/// `[machine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    /// Built-in profile name or path of a profile TOML file (relative to the scenario).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Dotted paths into the profile and their new values.
    #[serde(default)]
    pub overrides: BTreeMap<String, toml::Value>,
    /// `[machine.interrupts]`: the NIC and its interrupt source (`rate` events/s over one
    /// queue per vCPU, `itr` interrupts/s per queue at most); absent: no NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<sim_core::irq_path::InterruptConfig>,
    /// `[machine.net]`: the network path (`path`: auto, emulated or pv) and the peer on
    /// the far end of the wire (`[machine.net.peer]`, see docs/io.md); absent: no network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<sim_core::net::NetConfig>,
    /// `[machine.blk]`: a disk (`size_mib`, `access_ns`, `mb_per_s`) and its path
    /// (`path`: auto, emulated or pv; see docs/io.md section 7); absent: no disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blk: Option<sim_core::blk::BlkConfig>,
    /// `[machine.host]`: for guests with a partner, the physical CPUs the two domains share
    /// (`pcpus`) and the vCPU scheduler (`[machine.host.scheduler] policy = "credit"` or
    /// `"bvt"`); absent: a physical CPU per vCPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<sim_core::host::HostConfig>,
}

fn default_profile() -> String {
    DEFAULT_PROFILE.to_string()
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            profile: default_profile(),
            overrides: BTreeMap::new(),
            interrupts: None,
            net: None,
            blk: None,
            host: None,
        }
    }
}

/// `[guest]` or one `[[guests]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// Label in tables and charts (default: the workload and its arguments).
    #[serde(default)]
    pub name: String,
    /// Embedded workload (see `hvsim list`).
    pub workload: String,
    /// Its arguments (strings or integers).
    #[serde(default, deserialize_with = "de_args")]
    pub args: Vec<String>,
    /// vCPUs (1..=64).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory in MiB (16..=65536).
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// `[guests.net]`: this guest's network path and peer, instead of `[machine.net]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<sim_core::net::NetConfig>,
    /// `[guests.blk]`: this guest's disk and its path, instead of `[machine.blk]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blk: Option<sim_core::blk::BlkConfig>,
    /// `[guests.partner]`: a second domain on the same host, in the same mode, whose
    /// network is the far end of this guest's (then the net table names no peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<PartnerSpec>,
    /// `[[guests.neighbours]]`: more domains on the same host, in the same mode, each
    /// running its own workload with its own disk (the guest's disk settings) and no
    /// network: they share the host's physical CPUs (`[machine.host]`) and its service
    /// domain with the guest (and its partner).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<PartnerSpec>,
    /// Only these of the scenario's modes for this guest (default: every mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<Vec<String>>,
}

/// `[guests.partner]`: the other domain of a two-domain host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSpec {
    /// Embedded workload (see `hvsim list`).
    pub workload: String,
    /// Its arguments (strings or integers).
    #[serde(default, deserialize_with = "de_args")]
    pub args: Vec<String>,
    /// vCPUs (1..=64).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory in MiB (16..=65536).
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
}

/// A guest's network against its far end: a partner needs a network without a peer, a
/// network without a partner needs a peer, the direct channel needs a partner. Err names
/// the field and says why.
fn check_guest_network(s: &Scenario, g: &GuestSpec) -> Result<(), (&'static str, String)> {
    use sim_core::net::NetPath;
    let net = g.net.as_ref().or(s.machine.net.as_ref());
    match (net, &g.partner) {
        // A partner without a network shares the host's CPUs only.
        (None, Some(_)) => Ok(()),
        (Some(n), Some(_)) if n.peer.is_some() => Err((
            "net",
            "names a peer but the guest has a partner: the partner is the far end, drop \
             the peer"
                .into(),
        )),
        (Some(n), None) if n.peer.is_none() => Err((
            "net",
            "has no far end: give [..net.peer] (a host on the wire) or [guests.partner] \
             (another domain)"
                .into(),
        )),
        (Some(n), None) if n.path == NetPath::Direct => Err((
            "net",
            "path = \"direct\" is a channel between two domains: give [guests.partner]".into(),
        )),
        _ => Ok(()),
    }
}

fn default_vcpus() -> u32 {
    1
}

fn default_memory() -> u64 {
    256
}

fn de_args<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = Vec::<toml::Value>::deserialize(d)?;
    raw.iter()
        .map(|v| arg_text(v).map_err(serde::de::Error::custom))
        .collect()
}

/// A workload argument from a TOML value (string or integer).
pub fn arg_text(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => {
            Ok(s.clone())
        }
        toml::Value::String(s) => Err(format!(
            "argument {s:?} must be one non-empty word without spaces"
        )),
        toml::Value::Integer(i) => Ok(i.to_string()),
        other => Err(format!(
            "arguments are strings or integers, not {}",
            params::type_name(other)
        )),
    }
}

/// `[budget]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Instructions per run, all vCPUs together (1..=10^13); a run that reaches it fails.
    #[serde(default = "default_budget")]
    pub max_instructions: u64,
}

fn default_budget() -> u64 {
    DEFAULT_MAX_INSTRUCTIONS
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_instructions: default_budget(),
        }
    }
}

/// `[sweep]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Cartesian product: every combination of these values.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<toml::Value>>,
    /// Lists advanced together (all the same length), crossed with the grid.
    #[serde(default)]
    pub zip: BTreeMap<String, Vec<toml::Value>>,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// measured < value
    Lt,
    /// measured <= value
    Le,
    /// measured > value
    Gt,
    /// measured >= value
    Ge,
    /// measured == value
    Eq,
    /// |measured - value| <= tolerance * |value|
    Within,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Within => "within",
        })
    }
}

/// `ratio_to = { mode = "native" }`, `ratio_to = { guest = "rr-dom0" }` or both: the run
/// (same sweep point) whose metric is the denominator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioTo {
    /// The denominator's mode (default: the same mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The denominator's guest (default: the same guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
}

impl RatioTo {
    /// "hvm-ept's", "rr-dom0's", "rr-dom0 / hvm-ept's".
    pub fn describe(&self) -> String {
        match (&self.guest, &self.mode) {
            (Some(g), Some(m)) => format!("{g} / {m}'s"),
            (Some(g), None) => format!("{g}'s"),
            (None, Some(m)) => format!("{m}'s"),
            (None, None) => "itself".into(),
        }
    }
}

/// One `[[expect]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Metric path: a summary column (`cycles`, `syscalls`, ...) or a dotted path into the
    /// run result (`cycles.guest_kernel`, `per_vcpu.0.cpu.syscalls`).
    pub metric: String,
    /// Comparison.
    pub op: Op,
    /// The value compared against (a ratio when `ratio_to` is given).
    pub value: f64,
    /// Compare the ratio of the metric to the same run in another mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_to: Option<RatioTo>,
    /// Relative tolerance of `within` (0.05 = 5%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Only runs of this guest (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// Only runs of this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Only runs in this mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A scenario problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The scenario file.
    pub file: String,
    /// 1-based line and column, when the field is written in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted field path (`guests[0].workload`, `sweep.grid."core.cost.div"[1]`).
    pub field: String,
    /// What is wrong, with the valid choices.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// A path segment into the TOML document.
#[derive(Debug, Clone)]
pub enum Seg {
    /// A key.
    Key(String),
    /// An array index.
    Index(usize),
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

fn field_name(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if k.contains('.') || k.is_empty() => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(&format!("\"{k}\""));
            }
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The source text of a scenario, for locating fields in errors.
pub struct Source {
    file: String,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

impl Source {
    /// Wraps a file's text (`file` is how errors name it).
    pub fn new(file: &str, text: &str) -> Self {
        Source {
            file: file.to_string(),
            text: text.to_string(),
            doc: toml_edit::ImDocument::parse(text.to_string()).ok(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map_or(before.len(), |i| before.len() - i - 1)
            + 1;
        (line, col)
    }

    /// Span of the value (or key, for the last segment when `key` is set) at `path`.
    fn span(&self, path: &[Seg]) -> Option<std::ops::Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for (i, seg) in path.iter().enumerate() {
            let next = match seg {
                Seg::Key(key) => {
                    if i + 1 == path.len() {
                        if let Some((kk, _)) =
                            item.as_table_like().and_then(|t| t.get_key_value(key))
                        {
                            if let Some(s) = kk.span() {
                                return Some(s);
                            }
                        }
                    }
                    item.get(key.as_str())
                }
                Seg::Index(n) => item.get(*n),
            };
            match next {
                Some(it) => {
                    if let Some(s) = it.span() {
                        best = Some(s);
                    }
                    item = it;
                }
                None => break,
            }
        }
        best
    }

    /// An error at `path` (located at the deepest part of the path written in the file).
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.clone(),
            position: self.span(path).map(|s| self.line_col(s.start)),
            field: field_name(path),
            message: message.into(),
        }
    }

    /// The dotted path of the deepest key whose entry contains `offset`.
    fn path_at(&self, offset: usize) -> Vec<Seg> {
        fn walk(item: &toml_edit::Item, offset: usize, out: &mut Vec<Seg>) {
            if let Some(t) = item.as_table_like() {
                for (key, child) in t.iter() {
                    let (kk, _) = match t.get_key_value(key) {
                        Some(x) => x,
                        None => continue,
                    };
                    let in_key = kk.span().is_some_and(|s| s.contains(&offset));
                    let in_val = child.span().is_some_and(|s| s.contains(&offset));
                    let table_contains = child.is_table() || child.is_array_of_tables();
                    if in_key || in_val || table_contains {
                        let before = out.len();
                        out.push(Seg::Key(key.to_string()));
                        if in_key {
                            return;
                        }
                        walk(child, offset, out);
                        if in_val || out.len() > before + 1 {
                            return;
                        }
                        out.truncate(before);
                    }
                }
            } else if let Some(a) = item.as_array_of_tables() {
                for (i, t) in a.iter().enumerate() {
                    let before = out.len();
                    out.push(Seg::Index(i));
                    let it = toml_edit::Item::Table(t.clone());
                    walk(&it, offset, out);
                    if out.len() > before + 1 || t.span().is_some_and(|s| s.contains(&offset)) {
                        return;
                    }
                    out.truncate(before);
                }
            } else if let Some(a) = item.as_array() {
                for (i, v) in a.iter().enumerate() {
                    if v.span().is_some_and(|s| s.contains(&offset)) {
                        out.push(Seg::Index(i));
                        return;
                    }
                }
            }
        }
        let mut out = Vec::new();
        if let Some(doc) = &self.doc {
            walk(doc.as_item(), offset, &mut out);
        }
        out
    }

    /// Turns a deserialisation error into a located one, with a suggestion for an
    /// unknown field.
    fn locate_toml_error(&self, e: &toml::de::Error) -> ScenarioError {
        let mut message = e.message().trim().to_string();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some((name, tail)) = rest.split_once('`') {
                let choices: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
                message.push_str(&did_you_mean(name, choices));
            }
        }
        let (position, field) = match e.span() {
            Some(s) => (
                Some(self.line_col(s.start)),
                field_name(&self.path_at(s.start)),
            ),
            None => (None, String::new()),
        };
        ScenarioError {
            file: self.file.clone(),
            position,
            field,
            message,
        }
    }
}

/// A scenario read from a file, validated and resolved (every default filled in).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The resolved scenario.
    pub scenario: Scenario,
    /// The file name errors use.
    pub file: String,
    /// Directory relative profile paths are resolved against.
    pub base_dir: PathBuf,
}

/// Reads, parses, validates and resolves a scenario file.
pub fn load(path: &Path, allow_large: bool) -> Result<Loaded, ScenarioError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        position: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    load_str(&text, &file, &stem, &base, allow_large)
}

/// Parses, validates and resolves scenario text; `name` is the default `meta.name`.
pub fn load_str(
    text: &str,
    file: &str,
    name: &str,
    base_dir: &Path,
    allow_large: bool,
) -> Result<Loaded, ScenarioError> {
    let src = Source::new(file, text);
    let raw: Scenario = toml::from_str(text).map_err(|e| src.locate_toml_error(&e))?;
    let scenario = resolve(raw, name, &src)?;
    validate(&scenario, &src, base_dir, allow_large)?;
    Ok(Loaded {
        scenario,
        file: file.to_string(),
        base_dir: base_dir.to_path_buf(),
    })
}

/// Parses and resolves scenario text without validating it against the simulator (for
/// a results directory's `scenario.resolved.toml`, whose runs already happened).
pub fn parse_only(text: &str, file: &str, base_dir: &Path) -> Result<Loaded, ScenarioError> {
    let src = Source::new(file, text);
    let raw: Scenario = toml::from_str(text).map_err(|e| src.locate_toml_error(&e))?;
    let name = raw.meta.name.clone();
    Ok(Loaded {
        scenario: resolve(raw, &name, &src)?,
        file: file.to_string(),
        base_dir: base_dir.to_path_buf(),
    })
}

/// Fills in every default: one `[guest]` becomes `[[guests]]`, names are set.
fn resolve(mut s: Scenario, name: &str, src: &Source) -> Result<Scenario, ScenarioError> {
    if s.meta.name.is_empty() {
        s.meta.name = name.to_string();
    }
    match (s.guest.take(), s.guests.is_empty()) {
        (Some(_), false) => {
            return Err(src.error(
                &[k("guest")],
                "give either one [guest] or a list of [[guests]], not both",
            ))
        }
        (Some(g), true) => s.guests.push(g),
        (None, true) => {
            return Err(src.error(&[], "no guest: add a [guest] table or [[guests]] entries"))
        }
        (None, false) => {}
    }
    for g in &mut s.guests {
        if g.name.is_empty() {
            g.name = std::iter::once(g.workload.as_str())
                .chain(g.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    Ok(s)
}

/// Path of guest `i` in the file (`[guest]` or `[[guests]]`).
fn guest_path(src: &Source, i: usize, field: &str) -> Vec<Seg> {
    let single = src
        .doc
        .as_ref()
        .is_some_and(|d| d.as_table().contains_key("guest"));
    if single {
        vec![k("guest"), k(field)]
    } else {
        vec![k("guests"), Seg::Index(i), k(field)]
    }
}

fn check_vcpus(v: i64) -> Result<(), String> {
    if (1..=64).contains(&v) {
        Ok(())
    } else {
        Err(format!("vcpus = {v} is out of range (1..=64)"))
    }
}

fn check_memory(v: i64) -> Result<(), String> {
    if (16..=65536).contains(&v) {
        Ok(())
    } else {
        Err(format!("memory_mib = {v} is out of range (16..=65536)"))
    }
}

fn check_budget(v: i64) -> Result<(), String> {
    if (1..=10_000_000_000_000).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "max_instructions = {v} is out of range (1..=10^13)"
        ))
    }
}

fn check_workload(w: &str) -> Result<(), String> {
    let names: Vec<&str> = crate::guest::programs().iter().map(|(n, _)| *n).collect();
    if names.contains(&w) {
        Ok(())
    } else {
        Err(format!(
            "unknown workload '{w}'{} (workloads: {})",
            did_you_mean(w, names.iter().copied()),
            names.join(", ")
        ))
    }
}

fn check_cmdline(workload: &str, args: &[String]) -> Result<(), String> {
    let len = workload.len() + args.iter().map(|a| a.len() + 1).sum::<usize>();
    if len > MAX_CMDLINE {
        return Err(format!(
            "workload and arguments are {len} characters; the kernel command line holds {MAX_CMDLINE}"
        ));
    }
    Ok(())
}

fn int(v: &toml::Value) -> Result<i64, String> {
    v.as_integer()
        .ok_or_else(|| format!("expected an integer, got {}", params::type_name(v)))
}

/// Checks one sweep value of a scenario-level parameter.
fn check_scenario_param(path: &str, v: &toml::Value) -> Result<(), String> {
    match path {
        "machine.profile" | "guest.workload" => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a string, got {}", params::type_name(v)))?;
            if path == "guest.workload" {
                check_workload(s)?;
            }
            Ok(())
        }
        "guest.args" => match v {
            toml::Value::Array(a) => a.iter().try_for_each(|x| arg_text(x).map(|_| ())),
            other => Err(format!(
                "expected an array of arguments, got {}",
                params::type_name(other)
            )),
        },
        "guest.vcpus" => check_vcpus(int(v)?),
        "machine.interrupts.rate" | "machine.interrupts.itr" => int(v).and_then(|i| {
            if i >= 0 {
                Ok(())
            } else {
                Err(format!("{path} = {i} must not be negative"))
            }
        }),
        "machine.net.peer.rate_pps" => int(v).and_then(|i| {
            if i > 0 {
                Ok(())
            } else {
                Err(format!("{path} = {i} must be positive"))
            }
        }),
        "machine.net.path" => match v.as_str() {
            Some(p) if ["auto", "emulated", "pv", "passthrough", "direct"].contains(&p) => Ok(()),
            _ => Err(format!(
                "{path}: expected one of \"auto\", \"emulated\", \"pv\", \"passthrough\", \"direct\", got {v}"
            )),
        },
        "machine.net.rx" => match v.as_str() {
            Some(p) if ["copy", "flip"].contains(&p) => Ok(()),
            _ => Err(format!(
                "{path}: expected one of \"copy\", \"flip\", got {v}"
            )),
        },
        "machine.blk.path" => match v.as_str() {
            Some(p) if ["auto", "emulated", "pv"].contains(&p) => Ok(()),
            _ => Err(format!(
                "{path}: expected one of \"auto\", \"emulated\", \"pv\", got {v}"
            )),
        },
        "machine.blk.access_ns" => int(v).and_then(|i| {
            if (0..=1_000_000_000).contains(&i) {
                Ok(())
            } else {
                Err(format!("{path} = {i} is outside 0..=1000000000"))
            }
        }),
        "machine.blk.mb_per_s" => int(v).and_then(|i| {
            if i > 0 {
                Ok(())
            } else {
                Err(format!("{path} = {i} must be positive"))
            }
        }),
        "guest.memory_mib" => check_memory(int(v)?),
        "budget.max_instructions" => check_budget(int(v)?),
        "seed" => int(v).and_then(|i| {
            if i >= 0 {
                Ok(())
            } else {
                Err(format!("seed = {i} must not be negative"))
            }
        }),
        _ => arg_text(v).map(|_| ()), // guest.args.N
    }
}

/// Every parameter path valid for a sweep, for suggestions.
fn all_param_paths(tree: &toml::Table) -> Vec<String> {
    let mut v: Vec<String> = SCENARIO_PATHS.iter().map(|s| s.to_string()).collect();
    v.extend(params::leaves(tree).into_iter().map(|(p, _)| p));
    v
}

const SCENARIO_PATHS: &[&str] = &[
    "machine.profile",
    "machine.interrupts.rate",
    "machine.interrupts.itr",
    "machine.net.peer.rate_pps",
    "machine.net.path",
    "machine.net.rx",
    "machine.blk.path",
    "machine.blk.access_ns",
    "machine.blk.mb_per_s",
    "guest.workload",
    "guest.args",
    "guest.args.0",
    "guest.args.1",
    "guest.vcpus",
    "guest.memory_mib",
    "budget.max_instructions",
    "seed",
];

/// Number of runs a scenario expands to (saturating).
pub fn run_count(s: &Scenario) -> u64 {
    let grid: u64 = s
        .sweep
        .grid
        .values()
        .fold(1u64, |acc, v| acc.saturating_mul(v.len() as u64));
    let zip = s.sweep.zip.values().next().map_or(1, |v| v.len() as u64);
    grid.saturating_mul(zip)
        .saturating_mul(s.guests.len() as u64)
        .saturating_mul(s.modes.len() as u64)
}

fn validate(
    s: &Scenario,
    src: &Source,
    base_dir: &Path,
    allow_large: bool,
) -> Result<(), ScenarioError> {
    // Modes.
    if s.modes.is_empty() {
        return Err(src.error(
            &[k("modes")],
            format!("no modes (available: {})", modes::MODES.join(", ")),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, m) in s.modes.iter().enumerate() {
        if !modes::is_known(m) {
            return Err(src.error(
                &[k("modes"), Seg::Index(i)],
                format!(
                    "unknown mode '{m}'{} (available: {})",
                    did_you_mean(m, modes::MODES.iter().copied()),
                    modes::MODES.join(", ")
                ),
            ));
        }
        if !seen.insert(m) {
            return Err(src.error(
                &[k("modes"), Seg::Index(i)],
                format!("mode '{m}' is listed twice"),
            ));
        }
    }
    if s.output.trim().is_empty() {
        return Err(src.error(&[k("output")], "must not be empty"));
    }
    // Guests.
    let mut names = BTreeSet::new();
    for (i, g) in s.guests.iter().enumerate() {
        let at = |f: &str| guest_path(src, i, f);
        check_workload(&g.workload).map_err(|e| src.error(&at("workload"), e))?;
        check_vcpus(i64::from(g.vcpus)).map_err(|e| src.error(&at("vcpus"), e))?;
        check_memory(i64::try_from(g.memory_mib).unwrap_or(i64::MAX))
            .map_err(|e| src.error(&at("memory_mib"), e))?;
        check_cmdline(&g.workload, &g.args).map_err(|e| src.error(&at("args"), e))?;
        if let Some(p) = g.net.as_ref().and_then(|n| n.peer.as_ref()) {
            p.validate()
                .map_err(|e| src.error(&at("net"), e.to_string()))?;
        }
        check_guest_network(s, g).map_err(|(f, e)| src.error(&at(f), e))?;
        if let Some(b) = &g.blk {
            b.validate().map_err(|e| src.error(&at("blk"), e))?;
        }
        let others = g.partner.iter().map(|p| (p, "partner".to_string())).chain(
            g.neighbours
                .iter()
                .enumerate()
                .map(|(j, p)| (p, format!("neighbours[{j}]"))),
        );
        for (p, field) in others {
            let e = |m: String| src.error(&at(&field), m);
            check_workload(&p.workload).map_err(e)?;
            check_vcpus(i64::from(p.vcpus)).map_err(e)?;
            check_memory(i64::try_from(p.memory_mib).unwrap_or(i64::MAX)).map_err(e)?;
            check_cmdline(&p.workload, &p.args).map_err(e)?;
        }
        for m in g.modes.iter().flatten() {
            if !s.modes.contains(m) {
                return Err(src.error(
                    &at("modes"),
                    format!(
                        "mode '{m}' is not one of the scenario's modes{} ({})",
                        did_you_mean(m, s.modes.iter().map(String::as_str)),
                        s.modes.join(", ")
                    ),
                ));
            }
        }
        if !names.insert(g.name.clone()) {
            return Err(src.error(
                &at("name"),
                format!(
                    "two guests are named '{}': give them distinct names",
                    g.name
                ),
            ));
        }
    }
    check_budget(i64::try_from(s.budget.max_instructions).unwrap_or(i64::MAX))
        .map_err(|e| src.error(&[k("budget"), k("max_instructions")], e))?;
    if let Some(p) = s.machine.net.as_ref().and_then(|n| n.peer.as_ref()) {
        p.validate()
            .map_err(|e| src.error(&[k("machine"), k("net"), k("peer")], e.to_string()))?;
    }
    if let Some(b) = &s.machine.blk {
        b.validate()
            .map_err(|e| src.error(&[k("machine"), k("blk")], e))?;
    }
    // The profile and its overrides.
    let prof_path = [k("machine"), k("profile")];
    let (origin, text) =
        params::profile_text(&s.machine.profile, base_dir).map_err(|e| src.error(&prof_path, e))?;
    let base_tree = params::profile_tree(&text, &origin).map_err(|e| src.error(&prof_path, e))?;
    let mut tree = base_tree.clone();
    for (p, v) in &s.machine.overrides {
        apply_override(&mut tree, p, v)
            .map_err(|e| src.error(&[k("machine"), k("overrides"), k(p)], e))?;
    }
    build_profile(&tree, &origin).map_err(|e| src.error(&[k("machine"), k("overrides")], e))?;
    // Sweep parameters, each value on its own.
    let all = all_param_paths(&base_tree);
    let mut zip_len = None;
    for (table, map) in [("grid", &s.sweep.grid), ("zip", &s.sweep.zip)] {
        for (p, values) in map {
            let here = [k("sweep"), k(table), k(p)];
            if table == "zip" {
                if s.sweep.grid.contains_key(p) {
                    return Err(src.error(&here, "a parameter is either in grid or in zip"));
                }
                match zip_len {
                    None => zip_len = Some(values.len()),
                    Some(n) if n != values.len() => {
                        return Err(src.error(
                            &here,
                            format!(
                                "zip lists advance together and must have the same length ({} here, {n} before)",
                                values.len()
                            ),
                        ))
                    }
                    _ => {}
                }
            }
            let scenario_param = is_scenario_param(p);
            if !scenario_param
                && apply_override(&mut base_tree.clone(), p, &toml::Value::Integer(0))
                    .is_err_and(|e| e.starts_with("unknown parameter path"))
            {
                return Err(src.error(
                    &here,
                    format!(
                        "unknown parameter path '{p}'{} (parameters: the profile's paths as listed by `hvsim list`, and {})",
                        did_you_mean(p, all.iter().map(String::as_str)),
                        params::SCENARIO_PARAMS
                            .iter()
                            .map(|(p, _, _)| *p)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            for (j, v) in values.iter().enumerate() {
                let at = [k("sweep"), k(table), k(p), Seg::Index(j)];
                if scenario_param {
                    check_scenario_param(p, v).map_err(|e| src.error(&at, e))?;
                    if p == "machine.profile" {
                        if let Some(name) = v.as_str() {
                            params::profile_text(name, base_dir).map_err(|e| src.error(&at, e))?;
                        }
                    }
                } else {
                    let mut t = tree.clone();
                    apply_override(&mut t, p, v).map_err(|e| src.error(&at, e))?;
                    build_profile(&t, &origin)
                        .map_err(|e| src.error(&at, format!("{} = {}: {e}", p, value_text(v))))?;
                }
            }
        }
    }
    // Expectations.
    for (i, e) in s.expect.iter().enumerate() {
        let at = |f: &str| vec![k("expect"), Seg::Index(i), k(f)];
        if e.metric.trim().is_empty() {
            return Err(src.error(&at("metric"), "must name a metric"));
        }
        if e.ratio_to
            .as_ref()
            .is_some_and(|r| r.mode.is_none() && r.guest.is_none())
        {
            return Err(src.error(
                &at("ratio_to"),
                "names neither a mode nor a guest: give `mode`, `guest` or both",
            ));
        }
        if let Some(g) = e.ratio_to.as_ref().and_then(|r| r.guest.as_ref()) {
            if !s.guests.iter().any(|x| &x.name == g) {
                return Err(src.error(
                    &at("ratio_to"),
                    format!(
                        "no guest named '{g}'{}",
                        did_you_mean(g, s.guests.iter().map(|x| x.name.as_str()))
                    ),
                ));
            }
        }
        for m in e
            .mode
            .iter()
            .chain(e.ratio_to.iter().filter_map(|r| r.mode.as_ref()))
        {
            if !s.modes.contains(m) {
                let f = if e.mode.as_ref() == Some(m) {
                    "mode"
                } else {
                    "ratio_to"
                };
                return Err(src.error(
                    &at(f),
                    format!(
                        "mode '{m}' is not one of the scenario's modes{} ({})",
                        did_you_mean(m, s.modes.iter().map(String::as_str)),
                        s.modes.join(", ")
                    ),
                ));
            }
        }
        if let Some(g) = &e.guest {
            if !s.guests.iter().any(|x| &x.name == g) {
                return Err(src.error(
                    &at("guest"),
                    format!(
                        "no guest named '{g}'{} (guests: {})",
                        did_you_mean(g, s.guests.iter().map(|x| x.name.as_str())),
                        s.guests
                            .iter()
                            .map(|x| x.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if let Some(w) = &e.workload {
            check_workload(w).map_err(|m| src.error(&at("workload"), m))?;
        }
        match (e.op, e.tolerance) {
            (Op::Within, None) => {
                return Err(src.error(&at("op"), "op = \"within\" needs a tolerance"))
            }
            (Op::Within, Some(t)) if !(t >= 0.0 && t.is_finite()) => {
                return Err(src.error(&at("tolerance"), format!("tolerance = {t} must be >= 0")))
            }
            (op, Some(_)) if op != Op::Within => {
                return Err(src.error(
                    &at("tolerance"),
                    "tolerance only applies to op = \"within\"",
                ))
            }
            _ => {}
        }
        if !e.value.is_finite() {
            return Err(src.error(&at("value"), "must be a finite number"));
        }
    }
    // Size of the sweep.
    let n = run_count(s);
    if !allow_large && (n == 0 || n > MAX_RUNS_WITHOUT_CONFIRMATION) {
        return Err(src.error(
            &[k("sweep")],
            format!(
                "the scenario expands to {n} runs; more than 0 and at most {MAX_RUNS_WITHOUT_CONFIRMATION} run without --yes"
            ),
        ));
    }
    // Every combination (guest parameters and profiles together).
    let specs = crate::runner::expand(s);
    let mut profiles_seen = BTreeSet::new();
    for spec in &specs {
        let at = [k("sweep")];
        check_workload(&spec.workload).map_err(|e| src.error(&at, e))?;
        check_cmdline(&spec.workload, &spec.args)
            .map_err(|e| src.error(&at, format!("run {}: {e}", spec.index)))?;
        let key = (spec.profile.clone(), format!("{:?}", spec.overrides));
        if profiles_seen.insert(key) {
            crate::runner::profile_for(spec, base_dir).map_err(|e| {
                src.error(&at, format!("run {} ({}): {e}", spec.index, spec.label()))
            })?;
        }
    }
    Ok(())
}

impl Scenario {
    /// The scenario as TOML (for `scenario.resolved.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }
}
