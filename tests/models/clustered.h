// A clustered implicit-feedback matrix shared by the matrix-factorisation tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/recommender.h"

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

// Mean over `users` of P(score(held-out item) > score(an unseen item)) (every user has a held-out item).
inline double held_out_auc(const Recommender& model, const Data& d, const std::vector<uint32_t>& users) {
  Matrix s;
  model.score(users, s, 1);
  double total = 0;
  for (size_t r = 0; r < users.size(); ++r) {
    const uint32_t u = users[r];
    const float t = s(r, size_t(d.held_out[u]));
    size_t better = 0, count = 0;
    for (uint32_t i = 0; i < d.train.n_cols; ++i) {
      if (d.train.contains(u, i) || int64_t(i) == d.held_out[u]) continue;
      better += t > s(r, i);
      ++count;
    }
    total += double(better) / double(count);
  }
  return total / double(users.size());
}

// The same over every user.
inline double held_out_auc(const Recommender& model, const Data& d) {
  std::vector<uint32_t> users(d.train.n_rows);
  std::iota(users.begin(), users.end(), 0u);
  return held_out_auc(model, d, users);
}

// A model of `spec` fitted on `train` (no text) with this seed and thread count.
inline std::unique_ptr<Recommender> fit_spec(const std::string& spec, const Csr& train, int threads = 1,
                                             uint64_t seed = 1) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.seed = seed;
  ctx.threads = threads;
  m->fit(train, ctx);
  return m;
}

// The manifest's "extra" a model saves.
inline nlohmann::json saved_extra(const Recommender& m) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  return extra;
}

}  // namespace xdrec::testing_util
