//! Known answers and cross-checks for hashing, `root_of` and `Frontier`.
//!
//! The vectors are RFC 6962 values from transparency-dev/merkle's testonly package; the naive
//! MTH here must stay a literal transcription of RFC 6962, never share code with the crate.

mod common;

use common::{h, vector_leaves, ROOTS};
use mailaudit_merkle::{empty_root, leaf_hash, node_hash, root_of, Frontier, Hash, MerkleError};
use proptest::prelude::*;

fn naive_mth(data: &[Vec<u8>]) -> Hash {
    match data.len() {
        0 => empty_root(),
        1 => leaf_hash(&data[0]),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node_hash(&naive_mth(&data[..k]), &naive_mth(&data[k..]))
        }
    }
}

#[test]
fn known_answer_hashes() {
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(empty_root(), h(empty));
    assert_eq!(root_of(&[]), h(empty));
    assert_eq!(Frontier::new().root(), h(empty));
    let leaves = vector_leaves();
    assert_eq!(leaves[0], h(ROOTS[0]));
    assert_eq!(
        leaves[1],
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")
    );
    assert_eq!(
        leaves[7],
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1")
    );
    assert_eq!(node_hash(&leaves[0], &leaves[1]), h(ROOTS[1]));
    assert_eq!(
        node_hash(&leaves[2], &leaves[3]),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e")
    );
    let mut frontier = Frontier::new();
    for (n, leaf) in leaves.iter().enumerate() {
        frontier.push(*leaf, |_, _, _| {});
        assert_eq!(
            root_of(&leaves[..=n]),
            h(ROOTS[n]),
            "root_of size {}",
            n + 1
        );
        assert_eq!(frontier.root(), h(ROOTS[n]), "frontier size {}", n + 1);
    }
}

#[test]
fn frontier_root_of_and_naive_mth_agree_for_sizes_0_to_300() {
    let data: Vec<Vec<u8>> = (0u32..300).map(|i| i.to_be_bytes().to_vec()).collect();
    let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
    let mut frontier = Frontier::new();
    for n in 0..=300 {
        let want = naive_mth(&data[..n]);
        assert_eq!(frontier.size(), n as u64);
        assert_eq!(frontier.root(), want, "frontier size {n}");
        assert_eq!(root_of(&leaves[..n]), want, "root_of size {n}");
        assert_eq!(frontier.hashes().len(), n.count_ones() as usize);
        assert_eq!(
            Frontier::from_bytes(&frontier.to_bytes()).unwrap(),
            frontier
        );
        if n < 300 {
            frontier.push(leaves[n], |_, _, _| {});
        }
    }
}

#[test]
fn on_complete_reports_every_perfect_subtree_when_it_completes() {
    let leaves: Vec<Hash> = (0u32..1024).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let mut frontier = Frontier::new();
    let mut tiles = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let size = i as u64 + 1;
        let mut seen = Vec::new();
        frontier.push(*leaf, |level, index, hash| seen.push((level, index, *hash)));
        // A push completes one subtree per trailing one bit of the old size.
        assert_eq!(seen.len(), size.trailing_zeros() as usize);
        for (level, index, hash) in seen {
            assert!(level >= 1);
            let (start, end) = ((index << level) as usize, ((index + 1) << level) as usize);
            assert_eq!(
                end as u64, size,
                "level {level} subtree completes at its last leaf"
            );
            assert_eq!(hash, root_of(&leaves[start..end]));
            if level == 8 {
                tiles.push((size, index, hash));
            }
        }
    }
    let want: Vec<_> = (1..=4u64)
        .map(|t| {
            (
                t * 256,
                t - 1,
                root_of(&leaves[(t as usize - 1) * 256..t as usize * 256]),
            )
        })
        .collect();
    assert_eq!(tiles, want);
}

#[test]
fn frontier_from_bytes_rejects_bad_input() {
    let mut frontier = Frontier::new();
    for i in 0u8..11 {
        frontier.push(leaf_hash(&[i]), |_, _, _| {});
    }
    let good = frontier.to_bytes();
    assert_eq!(good.len(), 8 + 3 * 32);
    for len in 0..good.len() {
        assert!(Frontier::from_bytes(&good[..len]).is_err(), "prefix {len}");
    }
    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 32]);
    assert_eq!(
        Frontier::from_bytes(&extra),
        Err(MerkleError::FrontierHashCount {
            size: 11,
            expected: 3,
            got: 4
        })
    );
    let mut wrong_size = good.clone();
    wrong_size[7] = 12; // popcount 2, three hashes
    assert!(matches!(
        Frontier::from_bytes(&wrong_size),
        Err(MerkleError::FrontierHashCount { .. })
    ));
    let mut huge = vec![0xff; 8];
    huge.extend(std::iter::repeat_n(0u8, 64 * 32));
    assert!(matches!(
        Frontier::from_bytes(&huge),
        Err(MerkleError::FrontierTooLarge { .. })
    ));
    assert_eq!(
        Frontier::from_bytes(&0u64.to_be_bytes()),
        Ok(Frontier::new())
    );
}

proptest! {
    #[test]
    fn frontier_resumes_from_bytes(split in 0usize..200, total in 0usize..200) {
        let total = split.max(total);
        let leaves: Vec<Hash> = (0..total).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut first = Frontier::new();
        leaves[..split].iter().for_each(|l| first.push(*l, |_, _, _| {}));
        let mut resumed = Frontier::from_bytes(&first.to_bytes()).unwrap();
        leaves[split..].iter().for_each(|l| resumed.push(*l, |_, _, _| {}));
        prop_assert_eq!(resumed.root(), root_of(&leaves));
    }

    #[test]
    fn frontier_from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(f) = Frontier::from_bytes(&bytes) {
            prop_assert_eq!(f.to_bytes(), bytes);
        }
    }
}
