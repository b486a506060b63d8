// A low-rank rating matrix shared by the rating-model tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xdrec/common.h"

namespace xdrec::testing_util {

// Ratings r = clip(3 + u_bias + i_bias + <a_u, b_i> + noise * N(0, 1), 1, 5) for a random 30% of a 200 x 150
// matrix (rank 3), split into train and test entries (20% test). With noise 0 no noise is drawn.
struct LowRank {
  Csr train, test;
  explicit LowRank(float noise = 0.0f) {
    Rng rng(5);
    const uint32_t nu = 200, ni = 150, f = 3;
    std::vector<float> a(nu * f), b(ni * f), ub(nu), ib(ni);
    for (auto& x : a) x = float(rng.normal());
    for (auto& x : b) x = float(rng.normal()) * 0.6f;
    for (auto& x : ub) x = float(rng.normal()) * 0.3f;
    for (auto& x : ib) x = float(rng.normal()) * 0.3f;
    std::vector<uint32_t> tr_r, tr_c, te_r, te_c;
    std::vector<float> tr_v, te_v;
    for (uint32_t u = 0; u < nu; ++u)
      for (uint32_t i = 0; i < ni; ++i) {
        if (rng.uniform() > 0.3) continue;
        float r = 3 + ub[u] + ib[i];
        if (noise > 0) r += noise * float(rng.normal());
        for (uint32_t k = 0; k < f; ++k) r += a[u * f + k] * b[i * f + k];
        r = std::clamp(r, 1.0f, 5.0f);
        if (rng.uniform() < 0.2)
          te_r.push_back(u), te_c.push_back(i), te_v.push_back(r);
        else
          tr_r.push_back(u), tr_c.push_back(i), tr_v.push_back(r);
      }
    train = Csr::from_triplets(nu, ni, tr_r, tr_c, tr_v);
    test = Csr::from_triplets(nu, ni, te_r, te_c, te_v);
  }
};

}  // namespace xdrec::testing_util
