//! Property tests of the store: hashes depend on content only, and whatever is stored
//! comes back byte for byte.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn tree_strategy() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    proptest::collection::btree_map(
        "[a-c]{1,2}(/[a-c]{1,2}){0,2}\\.txt",
        proptest::collection::vec(any::<u8>(), 0..300),
        1..8,
    )
    .prop_filter("no file may also be a directory", |m| {
        m.keys().all(|k| {
            let dir = k.trim_end_matches(".txt");
            !m.keys().any(|o| o.starts_with(&format!("{dir}/")))
        })
    })
}

fn write_tree(root: &Path, tree: &BTreeMap<String, Vec<u8>>, reverse: bool) {
    let mut items: Vec<_> = tree.iter().collect();
    if reverse {
        items.reverse();
    }
    for (rel, bytes) in items {
        let p = root.join("d").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn store_restore_round_trips_and_hash_is_content_only(tree in tree_strategy()) {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_tree(a.path(), &tree, false);
        write_tree(b.path(), &tree, true);
        let sa = Store::open(a.path());
        let sb = Store::open(b.path());
        let ha = sa.store_path("d").unwrap().unwrap();
        // Same content in another place, written in another order: same hash.
        prop_assert_eq!(&ha, &sb.hash_path("d").unwrap().unwrap());
        prop_assert!(is_dir_hash(&ha));
        std::fs::remove_dir_all(a.path().join("d")).unwrap();
        prop_assert!(sa.can_restore(&ha));
        sa.restore("d", &ha).unwrap();
        for (rel, bytes) in &tree {
            prop_assert_eq!(&std::fs::read(a.path().join("d").join(rel)).unwrap(), bytes);
        }
        prop_assert_eq!(sa.hash_path("d").unwrap().unwrap(), ha);
        prop_assert_eq!(sa.verify().unwrap().corrupt.len(), 0);
    }

    #[test]
    fn any_byte_change_changes_the_hash(tree in tree_strategy(), pick in any::<prop::sample::Index>()) {
        let a = tempfile::tempdir().unwrap();
        write_tree(a.path(), &tree, false);
        let s = Store::open(a.path());
        let before = s.hash_path("d").unwrap().unwrap();
        let (rel, bytes) = tree.iter().nth(pick.index(tree.len())).unwrap();
        let mut changed = bytes.clone();
        changed.push(b'!');
        std::fs::write(a.path().join("d").join(rel), changed).unwrap();
        // A fresh store: the stat cache must not be what detects the change.
        prop_assert_ne!(Store::open(a.path()).hash_path("d").unwrap().unwrap(), before);
    }
}

#[test]
fn file_hash_is_plain_blake3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"hello").unwrap();
    let s = Store::open(dir.path());
    assert_eq!(
        s.hash_path("f").unwrap().unwrap(),
        blake3::hash(b"hello").to_hex().to_string()
    );
    assert_eq!(s.hash_path("missing").unwrap(), None);
}
