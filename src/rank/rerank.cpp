#include "xdrec/rerank.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace xdrec {

namespace {

// splitmix64: the draws of exploration.
uint64_t mix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<ScoredItem> rerank(std::span<const ScoredItem> pool, const Matrix* vectors,
                               std::span<const uint16_t> item_domain, const RerankOptions& opt) {
  check(opt.diversity >= 0 && opt.diversity <= 1, "diversity must be in [0, 1]");
  check(opt.diversity == 0 || vectors != nullptr, "diversity needs item vectors");
  check(opt.quota.empty() || !item_domain.empty(), "domain quotas need the items' domains");
  std::vector<ScoredItem> out;
  const size_t k = std::min(opt.k, pool.size());
  out.reserve(k);
  std::map<uint16_t, size_t> used;
  auto allowed = [&](uint32_t item) {
    if (opt.quota.empty()) return true;
    check(item < item_domain.size(), "rerank: item without a domain");
    auto q = opt.quota.find(item_domain[item]);
    return q == opt.quota.end() || used[item_domain[item]] < q->second;
  };
  auto take = [&](const ScoredItem& c) {
    out.push_back(c);
    if (!opt.quota.empty()) ++used[item_domain[c.item]];
  };
  if (opt.diversity == 0) {
    for (const auto& c : pool) {
      if (out.size() >= k) break;
      if (allowed(c.item)) take(c);
    }
    return out;
  }
  // Unit rows of the pool's items, and relevance scaled to [0, 1] over the pool.
  const size_t d = vectors->cols, n = pool.size();
  std::vector<float> unit(n * d, 0.0f);
  for (size_t a = 0; a < n; ++a) {
    check(pool[a].item < vectors->rows, "rerank: item " + std::to_string(pool[a].item) + " has no vector");
    const float* v = vectors->row(pool[a].item);
    double s = 0;
    for (size_t j = 0; j < d; ++j) s += double(v[j]) * v[j];
    if (s > 0) {
      const float inv = float(1.0 / std::sqrt(s));
      for (size_t j = 0; j < d; ++j) unit[a * d + j] = v[j] * inv;
    }
  }
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (const auto& c : pool)
    if (std::isfinite(c.score)) lo = std::min(lo, c.score), hi = std::max(hi, c.score);
  auto relevance = [&](float s) {
    if (!std::isfinite(s)) return 0.0;
    return hi > lo ? double(s - lo) / double(hi - lo) : 1.0;
  };
  std::vector<double> max_sim(n, 0.0);
  std::vector<uint8_t> picked(n, 0);
  const double lambda = opt.diversity;
  while (out.size() < k) {
    size_t best = n;
    double best_v = -std::numeric_limits<double>::infinity();
    for (size_t a = 0; a < n; ++a) {  // first best wins ties: the model's order
      if (picked[a] || !allowed(pool[a].item)) continue;
      const double v = (1 - lambda) * relevance(pool[a].score) - lambda * max_sim[a];
      if (v > best_v) best_v = v, best = a;
    }
    if (best == n) break;
    picked[best] = 1;
    take(pool[best]);
    const float* b = unit.data() + best * d;
    for (size_t a = 0; a < n; ++a) {
      if (picked[a]) continue;
      const float* x = unit.data() + a * d;
      double s = 0;
      for (size_t j = 0; j < d; ++j) s += double(x[j]) * b[j];
      max_sim[a] = std::max(max_sim[a], s);
    }
  }
  return out;
}

std::vector<size_t> explore_slots(std::vector<ScoredItem>& list, std::span<const ScoredItem> outside,
                                  double explore, uint64_t seed) {
  check(explore >= 0 && explore <= 1, "explore must be in [0, 1]");
  std::vector<size_t> slots;
  if (explore == 0 || outside.empty()) return slots;
  uint64_t s = seed ^ 0x5bd1e9955bd1e995ull;
  size_t next = 0;
  for (size_t slot = 1; slot < list.size(); ++slot) {
    const double u = double(mix(s) >> 11) * 0x1.0p-53;
    if (u >= explore) continue;
    while (next < outside.size() && std::any_of(list.begin(), list.end(), [&](const ScoredItem& c) {
             return c.item == outside[next].item;
           }))
      ++next;
    if (next >= outside.size()) break;
    list[slot] = outside[next++];
    slots.push_back(slot);
  }
  return slots;
}

}  // namespace xdrec
