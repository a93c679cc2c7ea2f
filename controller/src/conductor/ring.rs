//! Which live conductor owns a node: rendezvous hashing (highest random weight). Every
//! replica computes the same answer from the same list of live conductors, a node's owner
//! changes only when its owner leaves (or a newcomer outweighs it, taking about 1/N of the
//! nodes), and no ring of virtual points is needed to keep the shares even.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The weight of `conductor` for `node`: the first 8 bytes of SHA-256 over both.
fn weight(node: Uuid, conductor: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(conductor.as_bytes());
    h.update([0u8]);
    h.update(node.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// PURE: the owner of `node` among `live` conductor names (`None` when there is none).
/// Ties (never seen with SHA-256) go to the smaller name.
pub fn owner(node: Uuid, live: &[String]) -> Option<&str> {
    live.iter()
        .map(|c| (weight(node, c), c))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, c)| c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("conductor-{i}")).collect()
    }

    fn nodes(n: u128) -> Vec<Uuid> {
        (0..n).map(|i| Uuid::from_u128(i * 7_919 + 1)).collect()
    }

    #[test]
    fn nobody_owns_without_conductors_and_one_owns_all() {
        assert_eq!(owner(Uuid::nil(), &[]), None);
        let one = names(1);
        assert!(
            nodes(100)
                .iter()
                .all(|n| owner(*n, &one) == Some("conductor-0"))
        );
    }

    #[test]
    fn shares_are_even_within_thirty_percent() {
        for n in [2, 3, 5, 8] {
            let live = names(n);
            let mut counts: HashMap<&str, usize> = HashMap::new();
            let all = nodes(10_000);
            for node in &all {
                *counts
                    .entry(owner(*node, &live).expect("owner"))
                    .or_default() += 1;
            }
            let fair = all.len() / n;
            for (c, k) in &counts {
                let off = (*k as f64 - fair as f64).abs() / fair as f64;
                assert!(off < 0.3, "{n} conductors: {c} owns {k}, fair {fair}");
            }
            assert_eq!(counts.len(), n);
        }
    }

    #[test]
    fn a_leaving_conductor_moves_only_its_nodes_and_a_newcomer_takes_its_share() {
        let four = names(4);
        let three = &four[..3];
        let all = nodes(5_000);
        let mut moved = 0;
        for node in &all {
            let before = owner(*node, three).expect("owner");
            let after = owner(*node, &four).expect("owner");
            if before != after {
                assert_eq!(after, "conductor-3", "only to the newcomer");
                moved += 1;
            }
        }
        let share = moved as f64 / all.len() as f64;
        assert!((0.15..0.35).contains(&share), "newcomer took {share}");
        // The order of the list does not matter.
        let mut shuffled = four.clone();
        shuffled.reverse();
        assert!(all.iter().all(|n| owner(*n, &four) == owner(*n, &shuffled)));
    }
}
