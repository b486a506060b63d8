// Ranking metrics and the evaluator: full ranking (default) or sampled negatives, per domain and cohort.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/dataset.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"

namespace xdrec {

// ---- Per-list metrics (hand-checkable, binary relevance) -------------------------------------------------
// `ranked`: recommended items in order (length >= k considered up to k); `relevant`: sorted held-out items.
double precision_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k);
double recall_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k);
double f1_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k);
double ndcg_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k);
double hit_rate_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k);
double average_precision_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k);
double reciprocal_rank_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k);

// ---- Beyond-accuracy over all lists ----------------------------------------------------------------------
// Fraction of the catalogue (n_items) that appears in at least one list.
double catalogue_coverage(const std::vector<std::vector<uint32_t>>& lists, uint32_t n_items);
// 1 - mean pairwise cosine of item vectors within each list, averaged over lists (lists of < 2 skipped).
double intra_list_diversity(const std::vector<std::vector<uint32_t>>& lists, const Matrix& item_vectors);
// Mean self-information -log2(pop(i)/n_users) of recommended items; pop from training counts.
double novelty(const std::vector<std::vector<uint32_t>>& lists, std::span<const uint32_t> item_popularity,
               uint32_t n_users);
// Gini coefficient of how often each item is recommended (0 = even; (n_items-1)/n_items, i.e. close to 1,
// when one item gets every recommendation).
double gini_index(const std::vector<std::vector<uint32_t>>& lists, uint32_t n_items);

// Mean and half-width of the 95% confidence interval (Student t) of a sample.
struct MeanCI {
  double mean = 0, ci95 = 0;
  size_t n = 0;
};
MeanCI mean_ci95(std::span<const double> values);
// 0.975 quantile of Student's t distribution with `df` > 0 degrees of freedom (two-sided 95%).
double student_t_975(size_t df);

// ---- Evaluator -------------------------------------------------------------------------------------------
struct EvalOptions {
  std::vector<size_t> ks{10};
  int threads = 1;
  // 0: full ranking over every item not in the user's train row. N > 0: the sampled protocol, each test
  // item ranked against N negatives drawn uniformly from its own domain among items the user never
  // interacted with (train or test).
  size_t sampled_negatives = 0;
  uint64_t seed = 42;
  bool per_domain = true;  // restrict candidates and targets to each domain separately and report them
  const Matrix* item_vectors = nullptr;  // for intra-list diversity (category or text vectors)
  std::vector<uint8_t> cold_user;        // per user, optional: cohort "cold" vs "warm"
  double head_fraction = 0.2;            // items in the top fraction by training popularity are "head"
  ProgressFn progress;                   // called (serialised) after each block of users
  size_t block_users = 0;                // users scored per model.score() call; 0: chosen from n_items
  // Optional candidate restriction, per item (empty: every item is a candidate). When given, only items
  // marked 1 are ranked (full protocol) or drawn as negatives (sampled protocol), and only marked test items
  // count as relevant; users left with no relevant candidate are not evaluated. Coverage and Gini then use
  // the candidates (of each domain) as the catalogue. E.g. cold items: rank a user's held-out cold items
  // among the cold items only.
  std::vector<uint8_t> candidate_items;
  // A protocol with a target domain (cold users of a domain, say): only that domain's items are candidates
  // and relevant, in the overall metrics as in the per-domain ones (-1: every domain).
  int target_domain = -1;
  // Order of equal scores in full ranking (rank.h): seeded random per (seed, user) by default, so that a
  // model that cannot tell items apart gets the chance level, not an index-order effect. The sampled
  // protocol always ranks the target below every negative with an equal score (pessimistic).
  Ties ties = Ties::kRandom;
  // Full ranking with diversity re-ranking (rerank.h): each list is the MMR pick of `diversity_pool` best
  // candidates with trade-off `diversity` over item_vectors (required when diversity > 0). 0: no re-ranking.
  double diversity = 0;
  size_t diversity_pool = 50;
};

// Metrics keyed by name ("ndcg@10", "precision@10", "coverage@10", ...), each a mean over evaluated users.
// overall["tied_share"]: mean over users of the share of candidates whose score equals a held-out item's
// (sampled: of its negatives; full: of every candidate, on up to 4 held-out items per user) — near 1 for a
// model that cannot tell the candidates apart, near 0 for one that can.
// The maps of by_domain and by_cohort also hold "n_users", the number of users averaged there. Definitions:
// docs/METRICS.md.
using MetricMap = std::map<std::string, double>;

// Popularity long tail (full ranking): the candidate catalogue cut into ten deciles by training popularity,
// most popular first; the share of the recommended items and of the training interactions in each.
struct LongTail {
  std::vector<double> recommended, interacted;  // 10 entries each (empty: not measured)
};

struct EvalResult {
  MetricMap overall;
  std::map<std::string, MetricMap> by_domain;  // domain name -> metrics
  std::map<std::string, MetricMap> by_cohort;  // "cold-users", "warm-users", "head-items", "tail-items"
  size_t n_users = 0;
  double seconds = 0;
  std::string protocol;    // "full" or "sampled:N"
  MetricMap overall_ci95;  // half-width of the 95% CI (Student t) of each per-user mean in `overall`
  LongTail long_tail;
  // {"overall", "by_domain", "by_cohort", "n_users", "seconds", "protocol", "overall_ci95"}
  nlohmann::json to_json() const;
};

// Evaluates `model` on test interactions. `train` (users x items) gives the items excluded from ranking and
// the popularity; `test` gives the relevant items per user. Users with no test items are skipped. `ds` gives
// the item domains and their names (null: one domain). model.score() is called concurrently from
// opt.threads workers (with threads = 1 each), on disjoint blocks of users; results do not depend on the
// thread count.
EvalResult evaluate(const Recommender& model, const Csr& train, const Csr& test, const Dataset* ds,
                    const EvalOptions& opt);

// Rating prediction: RMSE and MAE of model.predict() against the values of `test` (the true ratings), over
// every test entry (not per user), overall ("rmse", "mae", "n_ratings"), per domain (with `ds`) and per
// cohort
// ("cold-users" / "warm-users" with `cold_user`). Error for a model that does not predict ratings. Errors are
// summed in user order: the result does not depend on `threads`.
// `pairs` (optional) receives up to `max_pairs` (predicted, true) pairs, spread evenly over the entries.
EvalResult evaluate_ratings(const Recommender& model, const Csr& test, const Dataset* ds,
                            std::span<const uint8_t> cold_user = {}, int threads = 1,
                            std::vector<std::pair<float, float>>* pairs = nullptr, size_t max_pairs = 20000);

}  // namespace xdrec
