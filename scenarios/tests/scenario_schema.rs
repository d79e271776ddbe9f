//! Scenario files: round trip of the resolved form, and located errors with suggestions.
#![allow(clippy::unwrap_used)]

use scenarios::schema::{self, load_str, ScenarioError};
use std::path::Path;

fn load(text: &str) -> Result<schema::Loaded, ScenarioError> {
    load_str(text, "t.toml", "t", Path::new("."), false)
}

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

const GUEST: &str = "[guest]\nworkload = \"null_syscall\"\nargs = [100]\n";

#[test]
fn resolved_scenario_round_trips() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ci-smoke.toml")).unwrap();
    let a = load(&text).unwrap().scenario;
    let resolved = a.to_toml();
    let b = load_str(&resolved, "r.toml", "other", Path::new("."), false)
        .unwrap()
        .scenario;
    assert_eq!(a, b);
    assert_eq!(resolved, b.to_toml());
    // Every default is written out.
    for field in [
        "seed = 0",
        "vcpus = 1",
        "memory_mib = 64",
        "max_instructions",
    ] {
        assert!(resolved.contains(field), "{field} missing in\n{resolved}");
    }
}

#[test]
fn single_guest_and_defaults_resolve() {
    let s = load(GUEST).unwrap().scenario;
    assert_eq!(s.guests.len(), 1);
    assert_eq!(s.guests[0].name, "null_syscall 100");
    assert_eq!(s.modes, vec!["native"]);
    assert_eq!(s.machine.profile, schema::DEFAULT_PROFILE);
    assert_eq!(s.meta.name, "t");
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let e = err(&format!("{GUEST}vcpu = 2\n"));
    assert!(e.starts_with("t.toml:4:1: guest.vcpu:"), "{e}");
    assert!(
        e.contains("unknown field `vcpu`") && e.contains("did you mean 'vcpus'"),
        "{e}"
    );
}

#[test]
fn unknown_mode_is_located_and_suggested() {
    let e = err(&format!("modes = [\"native\", \"natve\"]\n{GUEST}"));
    assert!(e.starts_with("t.toml:1:20: modes[1]:"), "{e}");
    assert!(
        e.contains("unknown mode 'natve'") && e.contains("did you mean 'native'"),
        "{e}"
    );
    assert!(e.contains("available: native"), "{e}");
}

#[test]
fn unknown_workload_and_profile_are_suggested() {
    let e = err("[guest]\nworkload = \"null_sycall\"\n");
    assert!(e.starts_with("t.toml:2:1: guest.workload:"), "{e}");
    assert!(e.contains("did you mean 'null_syscall'"), "{e}");
    let e = err(&format!("[machine]\nprofile = \"nehalem-x557\"\n{GUEST}"));
    assert!(e.starts_with("t.toml:2:1: machine.profile:"), "{e}");
    assert!(e.contains("did you mean 'nehalem-x5570'"), "{e}");
}

#[test]
fn unknown_parameter_path_is_located_and_suggested() {
    let e = err(&format!(
        "{GUEST}[sweep]\ngrid = {{ \"core.cost.dvi\" = [1, 2] }}\n"
    ));
    assert!(
        e.starts_with("t.toml:5:10: sweep.grid.\"core.cost.dvi\":"),
        "{e}"
    );
    assert!(e.contains("did you mean 'core.cost.div'"), "{e}");
    let e = err(&format!(
        "[machine]\noverrides = {{ \"mmu.tlb.stlb.entrys\" = 1024 }}\n{GUEST}"
    ));
    assert!(
        e.starts_with("t.toml:2:15: machine.overrides.\"mmu.tlb.stlb.entrys\":"),
        "{e}"
    );
    assert!(e.contains("did you mean 'mmu.tlb.stlb.entries'"), "{e}");
}

#[test]
fn out_of_range_values_are_rejected_before_running() {
    let e = err("[guest]\nworkload = \"hello\"\nvcpus = 0\n");
    assert!(e.starts_with("t.toml:3:1: guest.vcpus:"), "{e}");
    assert!(e.contains("out of range (1..=64)"), "{e}");
    // A sweep value the profile refuses (STLB entries must stay a power of two).
    let e = err(&format!(
        "{GUEST}[sweep]\ngrid = {{ \"mmu.tlb.stlb.entries\" = [512, 1000] }}\n"
    ));
    assert!(e.starts_with("t.toml:5:"), "{e}");
    assert!(e.contains("sweep.grid.\"mmu.tlb.stlb.entries\"[1]"), "{e}");
    let e = err(&format!(
        "{GUEST}[sweep]\ngrid = {{ \"guest.memory_mib\" = [64, 1] }}\n"
    ));
    assert!(
        e.contains("sweep.grid.\"guest.memory_mib\"[1]") && e.contains("16..=65536"),
        "{e}"
    );
    let e = err(&format!(
        "{GUEST}[[expect]]\nmetric = \"cycles\"\nop = \"within\"\nvalue = 1\n"
    ));
    assert!(e.starts_with("t.toml:6:1: expect[0].op:"), "{e}");
}

#[test]
fn zip_lists_must_match_and_sweep_size_is_bounded() {
    let e = err(&format!(
        "{GUEST}[sweep]\nzip = {{ \"core.cost.div\" = [1, 2], \"core.cost.mul\" = [1] }}\n"
    ));
    assert!(e.contains("same length"), "{e}");
    let big = format!(
        "{GUEST}[sweep]\ngrid = {{ \"core.cost.div\" = [{}], \"core.cost.mul\" = [{}] }}\n",
        (1..=101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
        (1..=100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let e = err(&big);
    assert!(e.contains("10100 runs") && e.contains("--yes"), "{e}");
    let empty = format!("{GUEST}[sweep]\ngrid = {{ \"core.cost.div\" = [] }}\n");
    assert!(err(&empty).contains("0 runs"));
    assert!(load_str(&empty, "t.toml", "t", Path::new("."), true).is_ok());
}

#[test]
fn sweep_expands_in_a_stable_order() {
    let s = load(
        "modes = [\"native\"]\n[[guests]]\nworkload = \"hello\"\n[[guests]]\nworkload = \"true_\"\n\
         [sweep]\ngrid = { \"core.cost.div\" = [10, 20], \"guest.vcpus\" = [1, 2] }\n\
         zip = { \"guest.args.0\" = [5, 6], \"seed\" = [7, 8] }\n",
    )
    .unwrap()
    .scenario;
    let specs = scenarios::runner::expand(&s);
    assert_eq!(specs.len(), 2 * 2 * 2 * 2);
    assert!(specs.iter().enumerate().all(|(i, r)| r.index == i));
    let first = &specs[0];
    assert_eq!(first.guest, "hello");
    assert_eq!(first.overrides["core.cost.div"].as_integer(), Some(10));
    assert_eq!(
        (first.vcpus, first.seed, first.args.clone()),
        (1, 7, vec!["5".to_string()])
    );
    let second = &specs[1];
    assert_eq!(second.guest, "true_");
    let third = &specs[2];
    assert_eq!((third.seed, third.args.clone()), (8, vec!["6".to_string()]));
    assert_eq!(specs[4].vcpus, 2);
    assert_eq!(specs[8].overrides["core.cost.div"].as_integer(), Some(20));
}

#[test]
fn network_settings_are_checked_with_their_location() {
    const NET: &str = "[guest]\nworkload = \"net_rr\"\nargs = [10, 64]\n";
    // A peer the wire cannot carry.
    let e = err(&format!(
        "{NET}[guest.net.peer]\nmode = \"source\"\nrate_pps = 1000\nframe_bytes = 59\n"
    ));
    assert!(e.contains("net") && e.contains("frame_bytes = 59"), "{e}");
    // A network with no far end, a partner whose guest names a peer, a direct channel
    // without a partner.
    let e = err(&format!("{NET}[guest.net]\npath = \"pv\"\n"));
    assert!(e.contains("has no far end"), "{e}");
    let e = err(&format!(
        "{NET}[guest.net.peer]\nmode = \"sink\"\n[guest.partner]\nworkload = \"net_echo\"\n"
    ));
    assert!(e.contains("drop the peer"), "{e}");
    let e = err(&format!(
        "{NET}[guest.net]\npath = \"direct\"\n[guest.net.peer]\nmode = \"sink\"\n"
    ));
    assert!(e.contains("give [guests.partner]"), "{e}");
    // Sweeps over the network: bad values are located.
    let e = err(&format!(
        "{NET}[guest.net.peer]\nmode = \"sink\"\n[sweep]\ngrid = {{ \"machine.net.path\" = [\"auto\", \"wifi\"] }}\n"
    ));
    assert!(
        e.contains("sweep.grid.\"machine.net.path\"[1]") && e.contains("wifi"),
        "{e}"
    );
    let e = err(&format!(
        "{NET}[guest.net.peer]\nmode = \"sink\"\n[sweep]\ngrid = {{ \"machine.net.peer.rate_pps\" = [0] }}\n"
    ));
    assert!(e.contains("must be positive"), "{e}");
    // A ratio to a guest that does not exist.
    let e = err(&format!(
        "{NET}[guest.net.peer]\nmode = \"sink\"\n[[expect]]\nmetric = \"cycles\"\nop = \"lt\"\nvalue = 1\nratio_to = {{ guest = \"nope\" }}\n"
    ));
    assert!(
        e.contains("expect[0].ratio_to") && e.contains("no guest named 'nope'"),
        "{e}"
    );
}

#[test]
fn disk_settings_are_checked_with_their_location() {
    const DD: &str = "[guest]\nworkload = \"dd\"\nargs = [\"read\", 4, 10]\n";
    // An unknown field names its table and line.
    let e = err(&format!("{DD}[guest.blk]\nsize_gib = 4\n"));
    assert!(e.contains("size_gib") && e.contains(":5:"), "{e}");
    // Out-of-range values name the field.
    let e = err(&format!("{DD}[guest.blk]\nsize_mib = 0\n"));
    assert!(e.contains("guest.blk") && e.contains("size_mib = 0"), "{e}");
    let e = err(&format!("[machine.blk]\nmb_per_s = 0\n{DD}"));
    assert!(
        e.contains("machine.blk") && e.contains("mb_per_s = 0"),
        "{e}"
    );
    let e = err(&format!("{DD}[guest.blk]\npath = \"nvme\"\n"));
    assert!(e.contains("nvme"), "{e}");
    // Sweeps over the disk: bad values are located.
    let e = err(&format!(
        "[machine.blk]\n{DD}[sweep]\ngrid = {{ \"machine.blk.path\" = [\"pv\", \"scsi\"] }}\n"
    ));
    assert!(
        e.contains("sweep.grid.\"machine.blk.path\"[1]") && e.contains("scsi"),
        "{e}"
    );
    let e = err(&format!(
        "[machine.blk]\n{DD}[sweep]\ngrid = {{ \"machine.blk.mb_per_s\" = [0] }}\n"
    ));
    assert!(e.contains("must be positive"), "{e}");
    // A neighbour's workload is checked like a guest's.
    let e = err(&format!("{DD}[[guest.neighbours]]\nworkload = \"nope\"\n"));
    assert!(e.contains("neighbours[0]") && e.contains("nope"), "{e}");
}
