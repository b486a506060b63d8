// Leakage-safe, seeded train/validation/test splits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xdrec/dataset.h"

namespace xdrec {

struct Split {
  std::string protocol;  // e.g. "random:test=0.2,val=0.2,seed=42"
  std::vector<Interaction> train;       // what models fit on (excludes validation)
  std::vector<Interaction> validation;  // for tuning; may be empty
  std::vector<Interaction> test;
  std::vector<uint8_t> cold_user;  // per user: 1 if the protocol made this user cold (target domain)
  std::vector<uint8_t> cold_item;  // per item: 1 if the protocol held this item out entirely
  int target_domain = -1;          // for cold-user protocols
};

struct SplitOptions {
  double test_ratio = 0.2;
  double val_ratio = 0.0;   // fraction of what remains after test
  uint64_t seed = 42;
  int target_domain = -1;   // cold-users: domain whose interactions are held out
  double cold_ratio = 0.2;  // cold-users: fraction of eligible users; cold-items: fraction of items
};

// Per user, a seeded shuffle; the first floor(n*test) to test, the next floor((n-n_test)*val) to validation.
Split split_random(const Dataset& ds, const SplitOptions& opt);
// Per user, by timestamp (ties by input order): last one to test, the one before to validation when
// val_ratio > 0. Requires timestamps (Error otherwise).
Split split_leave_last_out(const Dataset& ds, const SplitOptions& opt);
// Users active in target_domain and at least one other domain: cold_ratio of them lose all their
// target-domain interactions to test (half to validation when val_ratio > 0); other domains stay in train.
Split split_cold_users(const Dataset& ds, const SplitOptions& opt);
// cold_ratio of items are held out entirely: all their interactions go to test (or validation).
Split split_cold_items(const Dataset& ds, const SplitOptions& opt);
// The dataset's own split (Dataset::fixed_split); Error when it has none.
Split split_fixed(const Dataset& ds);

// "random", "leave-last-out", "cold-users", "cold-items", "fixed" (+ options) -> split.
Split make_split(const Dataset& ds, const std::string& protocol, const SplitOptions& opt);

// Throws Error naming the first (user, item) pair of test or validation that also appears in train, and for
// cold protocols any cold user's target-domain interaction or cold item found in train. Called by every
// split function before returning.
void check_no_leakage(const Dataset& ds, const Split& split);

}  // namespace xdrec
