// Ranking: the one top-K machinery of xdrec. recommend(), the evaluator (full and sampled protocols), and
// later the server and vector indexes select the best items of a score row here, with the exclusion of seen
// items, domain / candidate filters and the tie rule in one place.
//
// Ties. Equal scores are ordered by a tie rule, because item indices are not neutral (they follow release or
// catalogue order), so "lower index first" lets a model that cannot tell items apart score far above chance:
//   - Ties::kRandom      a seeded pseudo-random order per (seed, user): the order of two tied items is fixed
//   by
//                        a hash of (salt, item), the same for any thread count. The evaluator's default for
//                        full ranking.
//   - Ties::kLowerIndex  lower item index first (deterministic, cheap); the default of recommend().
// The sampled protocol breaks ties pessimistically instead: the target ranks below every candidate with an
// equal score (pessimistic_rank).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "xdrec/common.h"

namespace xdrec {

class Recommender;

struct ScoredItem {
  uint32_t item;
  float score;
};

enum class Ties : uint8_t { kLowerIndex, kRandom };

// The salt of one ranking under Ties::kRandom: mixes the seed and the user, so that every user gets their own
// order of tied items, reproducible from (seed, user).
uint64_t tie_salt(uint64_t seed, uint64_t user);

// ---- One selector ----------------------------------------------------------------------------------------

// Keeps the best k of the (item, score) pairs it is offered: higher score first, ties by the rule; NaN scores
// rank below every number. Reusable: reset() between rows keeps the allocation.
class TopK {
 public:
  void reset(size_t k, Ties ties = Ties::kLowerIndex, uint64_t salt = 0);
  size_t k() const { return k_; }
  bool full() const { return heap_.size() >= k_; }

  // Offers one item (any order).
  void push(uint32_t item, float score);
  // Offers every item of `row` (n_items scores) except the sorted `exclude`; skips groups of 16 scores that
  // cannot enter the list (SIMD), so the scan costs little more than reading the row.
  void push_row(const float* row, uint32_t n_items, std::span<const uint32_t> exclude = {});

  // The kept items, best first; the selector is left empty.
  void finish(std::vector<uint32_t>& items);
  void finish(std::vector<ScoredItem>& items);

  // ---- internals shared with select_multi (public for the one-pass multi-selector) ----
  struct Cand {
    float score;
    uint32_t item;
    uint64_t key;  // tie key: item (kLowerIndex) or hash(salt, item) << 32 | item (kRandom); lower is better
  };
  // Score a candidate must reach to be considered once the list is full (NaN -> -inf applied by the caller).
  float bound() const { return heap_.empty() ? -INFINITY : heap_.front().score; }
  // Whether a candidate with score == bound() may still enter (true unless ties go to the lower index and
  // items are offered in increasing index order).
  bool equal_may_enter() const { return ties_ == Ties::kRandom; }
  void offer_ordered(uint32_t item, float score);  // items in increasing index order across calls

 private:
  uint64_t key_of(uint32_t item) const;
  void replace_worst(const Cand& c);
  size_t k_ = 0;
  Ties ties_ = Ties::kLowerIndex;
  uint64_t salt_ = 0;
  std::vector<Cand> heap_;
};

// Top-k of several selectors in one pass over a row: every item not in the sorted `exclude` is offered to
// `all` (when not null) and to each selector of `groups` whose member bitset (one bit per item) holds it.
// Used by the evaluator for the overall list and the per-domain lists of a user at once.
struct SelectorGroup {
  TopK* sel;
  const uint64_t* members;
};
void select_multi(const float* row, uint32_t n_items, std::span<const uint32_t> exclude, TopK* all,
                  std::span<const SelectorGroup> groups);

// ---- Convenience -----------------------------------------------------------------------------------------

// Top-K of one score row. Excluded items (sorted) are skipped; with domain >= 0 only items of that domain
// (item_domain[i] == domain) are considered.
std::vector<ScoredItem> top_k(const float* scores, uint32_t n_items, size_t k,
                              std::span<const uint32_t> exclude, std::span<const uint16_t> item_domain,
                              int domain, Ties ties = Ties::kLowerIndex, uint64_t salt = 0);

// Rank of row[target] among itself and the items `others` of a score row, pessimistic: every other candidate
// with an equal (or higher) score ranks above it. NaN counts as -inf.
struct PessimisticRank {
  size_t rank = 1;  // 1-based
  size_t tied = 0;  // others scored exactly like the target
};
PessimisticRank pessimistic_rank(const float* row, uint32_t target, std::span<const uint32_t> others);

// Fraction of the candidates (row items not in the sorted `exclude`, other than `target`) whose score equals
// row[target] exactly: how much a list's order among these depends on the tie rule.
double tied_fraction(const float* row, uint32_t n_items, std::span<const uint32_t> exclude, uint32_t target);

// ---- Batched recommend -----------------------------------------------------------------------------------

struct RecommendOptions {
  size_t k = 10;
  const Csr* exclude = nullptr;           // users x items; items in the user's row are never returned
  std::span<const uint16_t> item_domain;  // required when domain >= 0
  int domain = -1;                        // restrict to one domain (-1: any)
  std::span<const uint8_t> allowed;       // optional: only items with allowed[i] != 0 (e.g. not deleted)
  Ties ties = Ties::kLowerIndex;
  uint64_t tie_seed = 0;  // with Ties::kRandom: salt = tie_salt(tie_seed, user)
  int threads = 1;
};

// Scores users in blocks and returns one top-K list per user.
std::vector<std::vector<ScoredItem>> recommend(const Recommender& model, std::span<const uint32_t> users,
                                               const RecommendOptions& opt);

}  // namespace xdrec
