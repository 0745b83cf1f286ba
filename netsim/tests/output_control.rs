//! Output control (DESIGN 6): with the genesis `min_count = 3`, no member posts a decryption
//! share for a tag with fewer submissions, so no share for it exists on the log, and each of
//! its holders reports the result as withheld, with its count.

use std::collections::{BTreeMap, BTreeSet};

use bankmesh_netsim::{Sim, SimConfig};
use bankmesh_protocol::record::{Body, Payload};
use bankmesh_protocol::MemberIndex;

#[test]
fn no_share_is_posted_for_a_tag_below_min_count_and_its_holders_see_it_withheld() {
    let seed = 4;
    let mut config = SimConfig::new(seed);
    config.clients_per_bank = 24;
    config.privacy.min_count = 3;
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
    // Exact where disclosed, withheld below min_count (the checker knows the rule).
    let checked = sim.check_against_truth().unwrap_or_else(|e| panic!("{e}"));
    assert!(checked > 0);

    // Every submission, by client, with its holders.
    type Holders = Vec<(MemberIndex, [u8; 32])>;
    let mut holders: BTreeMap<String, Holders> = BTreeMap::new();
    for m in sim.members() {
        for (client, hash) in sim.bank(m).unwrap().own_submissions(1) {
            holders.entry(client).or_default().push((m, hash));
        }
    }
    let pairs: Vec<(&String, &Holders)> = holders.iter().filter(|(_, h)| h.len() == 2).collect();
    let trios = holders.values().filter(|h| h.len() >= 3).count();
    assert!(
        !pairs.is_empty() && trios > 0,
        "seed {seed}: the data set needs clients held by two banks and by three or more"
    );

    // Every share on member 1's log, by every author.
    let mut shared: BTreeSet<[u8; 32]> = BTreeSet::new();
    for author in sim.members() {
        for r in sim.records_by(1, author) {
            if let Payload::Identified(i) = r.payload() {
                if let Body::DecryptionShares { shares, .. } = &i.body {
                    shared.extend(shares.iter().map(|e| e.submission));
                }
            }
        }
    }
    for (client, list) in &pairs {
        for (m, hash) in list.iter() {
            assert!(
                !shared.contains(hash),
                "seed {seed}: a share names member {m}'s submission for {client}, held by two banks"
            );
            let result = sim
                .results(*m)
                .into_iter()
                .find(|r| &r.client_id == *client)
                .unwrap_or_else(|| panic!("member {m} has no result for {client}"));
            assert_eq!((result.sum, result.count), (None, 2), "{client}");
            assert_eq!(result.average_2dp(), "withheld");
        }
    }
    // Tags with three holders or more were decrypted: their shares are on the log.
    for list in holders.values().filter(|h| h.len() >= 3) {
        assert!(list.iter().all(|(_, h)| shared.contains(h)));
    }
}
