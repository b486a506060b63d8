// Re-ranking of a candidate list (the serving path and `xdrec eval --diversity`): maximal marginal relevance
// over item vectors, per-domain quotas and epsilon-exploration. Each takes the candidates best first (a
// longer list than k: the pool re-ranking chooses from) and returns k of them.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/rank.h"

namespace xdrec {

struct RerankOptions {
  size_t k = 10;
  // MMR trade-off in [0, 1]: 0 keeps the model's order; each next pick maximises
  //   (1 - lambda) * relevance - lambda * max cosine to the items already picked,
  // relevance being the score min-max scaled over the pool (so lambda means the same for any model).
  double diversity = 0;
  // Per-domain caps: at most quota[d] items of domain d (domains not named: no cap). Needs item_domain.
  std::map<uint16_t, size_t> quota;
};

// Picks k of `pool` (best first) under opt. `vectors` has a row per item index (any width; rows are compared
// by cosine, zero rows count as unlike everything); may be null when diversity is 0. Deterministic.
std::vector<ScoredItem> rerank(std::span<const ScoredItem> pool, const Matrix* vectors,
                               std::span<const uint16_t> item_domain, const RerankOptions& opt);

// Epsilon-exploration: each of the list's slots from the second on is, with probability `explore`, given to
// an item of `outside` (items outside the user's usual domains or categories, best first) not already listed,
// in that order; the draws come from `seed`. Returns the indices in `list` of the explored slots.
std::vector<size_t> explore_slots(std::vector<ScoredItem>& list, std::span<const ScoredItem> outside,
                                  double explore, uint64_t seed);

}  // namespace xdrec
