// A clustered implicit-feedback matrix shared by the matrix-factorisation tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xdrec/common.h"

namespace xdrec::testing_util {

// Users and items fall into `clusters` groups; a user picks 85% of its items from its own group.
// One item per user (the last drawn) is held out.
struct Data {
  Csr train;
  std::vector<int64_t> held_out;  // per user, or -1
};

Data make_clustered(uint32_t n_users, uint32_t n_items, uint32_t clusters, uint32_t per_user, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint32_t> rows, cols;
  Data d;
  d.held_out.assign(n_users, -1);
  for (uint32_t u = 0; u < n_users; ++u) {
    const uint32_t cu = u % clusters;
    std::vector<uint32_t> picked;
    while (picked.size() < per_user) {
      uint32_t i;
      if (rng.uniform() < 0.85) {
        const uint32_t in_cluster = (n_items - cu + clusters - 1) / clusters;
        i = cu + clusters * uint32_t(rng.below(in_cluster));
      } else {
        i = uint32_t(rng.below(n_items));
      }
      if (std::find(picked.begin(), picked.end(), i) == picked.end()) picked.push_back(i);
    }
    d.held_out[u] = picked.back();
    picked.pop_back();
    for (uint32_t i : picked) rows.push_back(u), cols.push_back(i);
  }
  std::vector<float> vals(rows.size(), 1.0f);
  d.train = Csr::from_triplets(n_users, n_items, rows, cols, vals);
  return d;
}

}  // namespace xdrec::testing_util
