// Leakage-safe, seeded train/validation/test splits.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xdrec/dataset.h"
#include "xdrec/recommender.h"

namespace xdrec {

struct Split {
  std::string protocol;                 // e.g. "random:test=0.2,val=0.2,seed=42"
  std::vector<Interaction> train;       // what models fit on (excludes validation)
  std::vector<Interaction> validation;  // for tuning; may be empty
  std::vector<Interaction> test;
  std::vector<uint8_t> cold_user;  // per user: 1 if the protocol made this user cold (target domain)
  std::vector<uint8_t> cold_item;  // per item: 1 if the protocol held this item out entirely
  int target_domain = -1;          // for cold-user protocols
};

struct SplitOptions {
  double test_ratio = 0.2;
  double val_ratio = 0.0;  // fraction of what remains after test
  uint64_t seed = 42;
  int target_domain = -1;   // cold-users: domain whose interactions are held out
  double cold_ratio = 0.2;  // cold-users: fraction of eligible users; cold-items: fraction of items
};

// Per user, a seeded shuffle of the user's distinct items (n of them); the first floor(n*test) to test, the
// next floor((n-n_test)*val) to validation. Repeated (user, item) interactions stay together.
Split split_random(const Dataset& ds, const SplitOptions& opt);
// Per user, by timestamp (ties by input order): last one to test, the one before to validation when
// val_ratio > 0. Requires timestamps (Error otherwise). A user keeps at least one item in train (users with
// a single distinct item stay in train); every interaction of a held-out (user, item) pair goes with it.
Split split_leave_last_out(const Dataset& ds, const SplitOptions& opt);
// Users active in target_domain and at least one other domain: cold_ratio of them lose all their
// target-domain interactions to test (half of those users to validation instead when val_ratio > 0); their
// other domains stay in train.
Split split_cold_users(const Dataset& ds, const SplitOptions& opt);
// cold_ratio of items (of those with interactions; of target_domain's only when target_domain >= 0) are held
// out entirely: all their interactions go to test. When val_ratio > 0, a further floor(val_ratio * rest)
// items go to validation the same way.
Split split_cold_items(const Dataset& ds, const SplitOptions& opt);
// The dataset's own split (Dataset::fixed_split); Error when it has none.
Split split_fixed(const Dataset& ds);

// "random", "leave-last-out", "cold-users", "cold-items", "fixed", each optionally followed by options that
// override `opt`: "cold-users:target=books,cold=0.3,val=0.1,seed=7" (keys test, val, seed, target (domain
// name or index), cold) -> split.
Split make_split(const Dataset& ds, const std::string& protocol, const SplitOptions& opt);

// Item text with the user-written tags of Dataset::tags appended to each item's categories, keeping only tags
// whose (user, item) pair is not held out by the split (in its validation or test part). This is the fair
// use of tags in every protocol: for a cold item, tags written by the users whose interactions with it are
// being predicted are dropped. Tags are ordered by how many users gave them (ties by name), at most
// max_tags_per_item per item, and skipped when already a category. An empty Split keeps every tag.
std::vector<ItemText> item_text_with_tags(const Dataset& ds, const Split& split,
                                          size_t max_tags_per_item = 20);

// Per user, the interactions of `a` followed by those of `b` (may be null), ordered by timestamp (ties and
// missing timestamps by input order): the ordered histories sequence models fit on.
Sequences user_sequences(uint32_t n_users, const std::vector<Interaction>& a,
                         const std::vector<Interaction>* b = nullptr);

// The items of an ordered history, each once, at its last place ("a b a c" -> "b a c"): a history given to a
// sequence model or a server keeps its order, and an item taken again counts as taken most recently.
std::vector<uint32_t> keep_last_occurrence(std::span<const uint32_t> items);

// Throws Error naming the first (user, item) pair of test or validation that also appears in train, and for
// cold protocols any cold user's target-domain interaction or cold item found in train. Called by every
// split function before returning.
void check_no_leakage(const Dataset& ds, const Split& split);

}  // namespace xdrec
