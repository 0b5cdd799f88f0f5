//! The steps of ADD, in order, named so that a test can make ADD fail right after any of them
//! (`Bandwidth { failpoint: Some(step) }`) and check that the rollback leaves nothing behind.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The root shaper (tbf, or htb with its classes and filters) on the host end (undo:
    /// delete it).
    IngressShaper,
    /// The ifb device exists, up (undo: delete it, with everything on it).
    Ifb,
    /// The ingress qdisc on the host end (undo: delete it, with its filters).
    IngressHook,
    /// The filter redirecting the host end's received traffic to the ifb.
    Redirect,
    /// The shaper on the ifb.
    EgressShaper,
}

impl Step {
    /// Every step, in order (with both directions limited).
    pub const ALL: [Step; 5] = [
        Step::IngressShaper,
        Step::Ifb,
        Step::IngressHook,
        Step::Redirect,
        Step::EgressShaper,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::IngressShaper => "ingress-shaper",
            Step::Ifb => "ifb",
            Step::IngressHook => "ingress-hook",
            Step::Redirect => "redirect",
            Step::EgressShaper => "egress-shaper",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
