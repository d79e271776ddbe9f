//! The virtualization modes a scenario may name. This is the one list the scenario layer
//! validates against: a new policy adds its name here when the machine can run it.

/// Every mode the simulator can run, in the order reports show them.
pub const MODES: &[&str] = &[
    "native",
    "pv",
    "hvm-shadow",
    "hvm-ept",
    "hvm-ept-apicv",
    "hybrid",
];

/// The mode other modes are normalised to in reports and `ratio_to` expectations.
pub const BASELINE: &str = "native";

/// Whether `name` is a mode the simulator can run.
pub fn is_known(name: &str) -> bool {
    MODES.contains(&name)
}
