//! ACLs from text: never a panic; the canonical form parses to the same ACL
//! and prints the same; an intersection grants nothing either side does not.
#![no_main]

use dmtree_core::{Acl, Permission, Principal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (a, b) = input;
    let Ok(acl) = a.parse::<Acl>() else { return };
    let canonical = acl.to_string();
    let again: Acl = canonical.parse().expect("the canonical form parses");
    assert_eq!(again, acl);
    assert_eq!(again.to_string(), canonical);
    if let Ok(other) = b.parse::<Acl>() {
        let both = acl.intersect(&other);
        for who in [Principal::Anonymous, Principal::named("admin"), Principal::named("bob")] {
            for perm in Permission::ALL {
                if both.permits(&who, perm) {
                    assert!(acl.permits(&who, perm) && other.permits(&who, perm));
                }
            }
        }
    }
});
