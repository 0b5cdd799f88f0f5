//! The leak audit, in a test binary of its own: other tests' namespaces would be "leaks" here.

use netns_fixtures::{LeakAudit, TestNetns, require_root};

#[test]
fn leak_audit_sees_a_live_namespace_and_nothing_after_drop()
-> Result<(), Box<dyn std::error::Error>> {
    require_root();
    let audit = LeakAudit::snapshot();
    let ns = TestNetns::new()?;
    let leaks = audit.leaks();
    assert!(leaks.contains(&format!("netns {}", ns.name())), "{leaks:?}");
    assert!(
        leaks.contains(&format!("mount {}", ns.path().display())),
        "{leaks:?}"
    );
    drop(ns);
    audit.assert_no_leaks();
    Ok(())
}
