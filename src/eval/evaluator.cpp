// The evaluator: full ranking (default) or the sampled-negatives protocol, per domain and per cohort.
//
// Work is split into fixed blocks of test users (the split does not depend on the thread count). Each worker
// takes whole blocks, asks the model for the block's score rows (model.score, one thread: the parallelism is
// over blocks) and writes every per-user value into arrays indexed by the user's position. Means, intervals
// and beyond-accuracy metrics are then computed serially in user order, so the result is the same for any
// number of threads.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <mutex>
#include <string>

#include "xdrec/metrics.h"
#include "xdrec/rank.h"
#include "xdrec/rerank.h"

namespace xdrec {

namespace {

// The accuracy metrics computed per list, per cut-off k, in this order.
constexpr const char* kAccNames[] = {"precision", "recall", "f1", "ndcg", "hr", "map", "mrr"};
constexpr size_t kNumAcc = std::size(kAccNames);
// Metrics of the head-items / tail-items cohorts.
constexpr const char* kItemCohortNames[] = {"recall", "ndcg"};
constexpr size_t kNumItemCohort = std::size(kItemCohortNames);
// Full ranking: the tied share is measured on up to this many held-out items per user (one pass each).
constexpr size_t kTiedTargets = 4;

std::string metric_name(const char* base, size_t k) {
  return std::string(base) + "@" + std::to_string(k);
}

// Writes the accuracy metrics of one list into out[ki * kNumAcc + m].
void accuracy_metrics(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant,
                      const std::vector<size_t>& ks, double* out) {
  for (size_t ki = 0; ki < ks.size(); ++ki) {
    const size_t k = ks[ki];
    double* o = out + ki * kNumAcc;
    o[0] = precision_at_k(ranked, relevant, k);
    o[1] = recall_at_k(ranked, relevant, k);
    o[2] = f1_at_k(ranked, relevant, k);
    o[3] = ndcg_at_k(ranked, relevant, k);
    o[4] = hit_rate_at_k(ranked, relevant, k);
    o[5] = average_precision_at_k(ranked, relevant, k);
    o[6] = reciprocal_rank_at_k(ranked, relevant, k);
  }
}

void item_cohort_metrics(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant,
                         const std::vector<size_t>& ks, double* out) {
  for (size_t ki = 0; ki < ks.size(); ++ki) {
    out[ki * kNumItemCohort + 0] = recall_at_k(ranked, relevant, ks[ki]);
    out[ki * kNumItemCohort + 1] = ndcg_at_k(ranked, relevant, ks[ki]);
  }
}

// Per-user values of one group (overall, a domain, an item cohort): `width` values per user position and a
// flag saying whether the user was evaluated in the group.
struct Group {
  size_t width = 0;
  std::vector<double> values;
  std::vector<uint8_t> has;
  void init(size_t n_positions, size_t w) {
    width = w;
    values.assign(n_positions * w, 0.0);
    has.assign(n_positions, 0);
  }
  double* at(size_t p) { return values.data() + p * width; }
};

// Top-max(k) lists per user position (full ranking only).
struct Lists {
  size_t max_k = 0;
  std::vector<uint32_t> items;
  std::vector<uint32_t> len;
  void init(size_t n_positions, size_t k) {
    max_k = k;
    items.assign(n_positions * k, 0);
    len.assign(n_positions, 0);
  }
  void store(size_t p, const std::vector<uint32_t>& l) {
    std::copy(l.begin(), l.end(), items.begin() + static_cast<std::ptrdiff_t>(p * max_k));
    len[p] = static_cast<uint32_t>(l.size());
  }
};

// Means (in user order) of the users selected by `use(p)`; names built per k from `names`.
template <class Use>
MetricMap reduce(const Group& g, size_t n_positions, const std::vector<size_t>& ks, const char* const* names,
                 size_t n_names, Use use, MetricMap* ci95 = nullptr) {
  MetricMap out;
  std::vector<double> column;
  size_t n = 0;
  for (size_t p = 0; p < n_positions; ++p) n += use(p) ? 1 : 0;
  if (n == 0) return out;
  for (size_t ki = 0; ki < ks.size(); ++ki) {
    for (size_t m = 0; m < n_names; ++m) {
      column.clear();
      for (size_t p = 0; p < n_positions; ++p)
        if (use(p)) column.push_back(g.values[p * g.width + ki * n_names + m]);
      const MeanCI ci = mean_ci95(column);
      out[metric_name(names[m], ks[ki])] = ci.mean;
      if (ci95) (*ci95)[metric_name(names[m], ks[ki])] = ci.ci95;
    }
  }
  out["n_users"] = static_cast<double>(n);
  return out;
}

// Beyond-accuracy metrics of the lists of the selected users. `local` maps a global item index to its index
// within the catalogue considered (identity for the whole catalogue), `catalogue` holds the catalogue's
// global item indices in local order.
template <class Use>
void beyond_accuracy(const Lists& lists, size_t n_positions, Use use, const std::vector<size_t>& ks,
                     const std::vector<uint32_t>& catalogue, const std::vector<uint32_t>& local,
                     const std::vector<uint32_t>& popularity, uint32_t n_train_users,
                     const Matrix* item_vectors, MetricMap& out) {
  if (catalogue.empty()) return;
  std::vector<uint32_t> local_pop(catalogue.size());
  for (size_t j = 0; j < catalogue.size(); ++j) local_pop[j] = popularity[catalogue[j]];
  for (size_t k : ks) {
    std::vector<std::vector<uint32_t>> global_lists, local_lists;
    for (size_t p = 0; p < n_positions; ++p) {
      if (!use(p)) continue;
      const size_t n = std::min<size_t>(k, lists.len[p]);
      const uint32_t* l = lists.items.data() + p * lists.max_k;
      global_lists.emplace_back(l, l + n);
      std::vector<uint32_t> loc(n);
      for (size_t r = 0; r < n; ++r) loc[r] = local[l[r]];
      local_lists.push_back(std::move(loc));
    }
    if (global_lists.empty()) return;
    const uint32_t n_cat = static_cast<uint32_t>(catalogue.size());
    out[metric_name("coverage", k)] = catalogue_coverage(local_lists, n_cat);
    out[metric_name("novelty", k)] = novelty(local_lists, local_pop, std::max<uint32_t>(n_train_users, 1));
    out[metric_name("gini", k)] = gini_index(local_lists, n_cat);
    if (item_vectors) out[metric_name("diversity", k)] = intra_list_diversity(global_lists, *item_vectors);
  }
}

// The catalogue in ten popularity deciles (by training popularity, most popular first): the share of the
// recommended items (every list at its full length) and of the training interactions in each.
LongTail long_tail(const Lists& lists, size_t n_positions, const std::function<bool(size_t)>& use,
                   const std::vector<uint32_t>& catalogue, const std::vector<uint32_t>& popularity,
                   const Csr& train) {
  LongTail lt;
  if (catalogue.empty()) return lt;
  std::vector<uint32_t> order(catalogue);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return popularity[a] > popularity[b]; });
  std::vector<int> decile(popularity.size(), -1);
  for (size_t r = 0; r < order.size(); ++r) decile[order[r]] = int(r * 10 / order.size());
  lt.recommended.assign(10, 0.0);
  lt.interacted.assign(10, 0.0);
  double nr = 0, ni = 0;
  for (size_t p = 0; p < n_positions; ++p) {
    if (!use(p)) continue;
    const uint32_t* l = lists.items.data() + p * lists.max_k;
    for (size_t r = 0; r < lists.len[p]; ++r)
      if (decile[l[r]] >= 0) lt.recommended[size_t(decile[l[r]])] += 1, nr += 1;
  }
  for (uint32_t i : train.indices)
    if (decile[i] >= 0) lt.interacted[size_t(decile[i])] += 1, ni += 1;
  for (size_t d = 0; d < 10; ++d) {
    lt.recommended[d] = nr > 0 ? lt.recommended[d] / nr : 0.0;
    lt.interacted[d] = ni > 0 ? lt.interacted[d] / ni : 0.0;
  }
  return lt;
}

// Draws up to n negatives for one target: items of `domain_items` (sorted) that are not in `seen` (sorted),
// uniformly without replacement. `mark` is an all-zero scratch array of n_items bytes (left all-zero).
void sample_negatives(std::span<const uint32_t> domain_items, std::span<const uint32_t> seen,
                      size_t n_seen_in_domain, size_t n, Rng& rng, std::vector<uint8_t>& mark,
                      std::vector<uint32_t>& out) {
  out.clear();
  const size_t pool = domain_items.size() - n_seen_in_domain;
  auto unseen = [&](uint32_t i) { return !std::binary_search(seen.begin(), seen.end(), i); };
  if (pool <= n || 4 * (pool - n) < domain_items.size()) {
    // Small pool or most of the domain seen: enumerate the pool, then a partial Fisher-Yates shuffle.
    for (uint32_t i : domain_items)
      if (unseen(i)) out.push_back(i);
    if (out.size() <= n) return;
    for (size_t j = 0; j < n; ++j) std::swap(out[j], out[j + rng.below(out.size() - j)]);
    out.resize(n);
    return;
  }
  // Rejection sampling: at least a quarter of the draws are accepted.
  while (out.size() < n) {
    const uint32_t i = domain_items[rng.below(domain_items.size())];
    if (mark[i] || !unseen(i)) continue;
    mark[i] = 1;
    out.push_back(i);
  }
  for (uint32_t i : out) mark[i] = 0;
}

}  // namespace

EvalResult evaluate(const Recommender& model, const Csr& train, const Csr& test, const Dataset* ds,
                    const EvalOptions& opt) {
  Timer timer;
  const uint32_t n_items = train.n_cols;
  check(test.n_rows == train.n_rows && test.n_cols == train.n_cols,
        "evaluate: train is " + std::to_string(train.n_rows) + " x " + std::to_string(train.n_cols) +
            " but test is " + std::to_string(test.n_rows) + " x " + std::to_string(test.n_cols));
  check(model.n_items() == n_items, "evaluate: the model has " + std::to_string(model.n_items()) +
                                        " items but the interaction matrices have " +
                                        std::to_string(n_items));
  check(!opt.ks.empty(), "evaluate: no cut-off k given");
  std::vector<size_t> ks = opt.ks;
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  check(ks.front() > 0, "evaluate: every cut-off k must be positive");
  const size_t max_k = ks.back();
  check(opt.head_fraction >= 0.0 && opt.head_fraction <= 1.0,
        "evaluate: head_fraction must be in [0, 1], got " + std::to_string(opt.head_fraction));
  check(opt.cold_user.empty() || opt.cold_user.size() == train.n_rows,
        "evaluate: cold_user has " + std::to_string(opt.cold_user.size()) + " entries but there are " +
            std::to_string(train.n_rows) + " users");
  if (opt.item_vectors)
    check(opt.item_vectors->rows == n_items, "evaluate: item_vectors has " +
                                                 std::to_string(opt.item_vectors->rows) +
                                                 " rows but there are " + std::to_string(n_items) + " items");
  const bool sampled = opt.sampled_negatives > 0;
  check(opt.candidate_items.empty() || opt.candidate_items.size() == n_items,
        "evaluate: candidate_items has " + std::to_string(opt.candidate_items.size()) +
            " entries but there are " + std::to_string(n_items) + " items");
  // Candidates: the given restriction, intersected with the target domain's items when there is one.
  std::vector<uint8_t> candidate_mask = opt.candidate_items;
  if (opt.target_domain >= 0) {
    check(ds != nullptr && ds->item_domain.size() == n_items,
          "evaluate: a target domain needs the dataset's item domains");
    check(size_t(opt.target_domain) < std::max<size_t>(ds->n_domains(), 1),
          "evaluate: target domain " + std::to_string(opt.target_domain) + " is out of range");
    if (candidate_mask.empty()) candidate_mask.assign(n_items, 1);
    for (uint32_t i = 0; i < n_items; ++i)
      if (ds->item_domain[i] != opt.target_domain) candidate_mask[i] = 0;
  }
  const bool restricted = !candidate_mask.empty();
  auto is_candidate = [&](uint32_t i) { return !restricted || candidate_mask[i] != 0; };
  // With a candidate restriction, the relevant items are the test items that are candidates.
  Csr test_candidates;
  if (restricted) {
    std::vector<uint32_t> r, c;
    std::vector<float> v;
    for (uint32_t u = 0; u < test.n_rows; ++u)
      for (uint32_t i : test.row_indices(u))
        if (is_candidate(i)) {
          r.push_back(u);
          c.push_back(i);
          v.push_back(1.0f);
        }
    test_candidates = Csr::from_triplets(test.n_rows, test.n_cols, r, c, v);
  }
  const Csr& target = restricted ? test_candidates : test;
  // Items that are never ranked (sorted), merged into each user's exclusion list in the full protocol.
  std::vector<uint32_t> non_candidates;
  for (uint32_t i = 0; i < n_items && restricted; ++i)
    if (!is_candidate(i)) non_candidates.push_back(i);

  // Domains: candidate item lists per domain (sorted), and whether to report them separately.
  size_t n_domains = 1;
  std::vector<uint16_t> item_domain(n_items, 0);
  if (ds) {
    check(ds->item_domain.size() == n_items,
          "evaluate: the dataset has " + std::to_string(ds->item_domain.size()) +
              " item domains but there are " + std::to_string(n_items) + " items");
    n_domains = std::max<size_t>(ds->n_domains(), 1);
    for (uint32_t i = 0; i < n_items; ++i) {
      if (ds->item_domain[i] >= n_domains)
        throw Error("evaluate: item " + std::to_string(i) + " has domain index " +
                    std::to_string(ds->item_domain[i]) + " but the dataset has " + std::to_string(n_domains) +
                    " domains");
      item_domain[i] = ds->item_domain[i];
    }
  }
  std::vector<std::vector<uint32_t>> domain_items(n_domains);
  std::vector<uint32_t> local_index(n_items);
  std::vector<uint32_t> catalogue, catalogue_index(n_items, 0);  // every candidate; index among them
  for (uint32_t i = 0; i < n_items; ++i) {
    if (!is_candidate(i)) continue;
    local_index[i] = static_cast<uint32_t>(domain_items[item_domain[i]].size());
    domain_items[item_domain[i]].push_back(i);
    catalogue_index[i] = static_cast<uint32_t>(catalogue.size());
    catalogue.push_back(i);
  }
  const bool do_domains = opt.per_domain && n_domains > 1;
  const size_t n_groups_domain = do_domains ? n_domains : 0;
  std::vector<std::vector<uint64_t>> domain_bits(n_groups_domain,
                                                 std::vector<uint64_t>((n_items + 63) / 64, 0));
  for (size_t d = 0; d < n_groups_domain; ++d)
    for (uint32_t i : domain_items[d]) domain_bits[d][i >> 6] |= uint64_t{1} << (i & 63);

  // Training popularity (distinct users per item) and head items.
  std::vector<uint32_t> popularity(n_items, 0);
  for (uint32_t i : train.indices) ++popularity[i];
  std::vector<uint8_t> is_head(n_items, 0);
  {
    std::vector<uint32_t> order(n_items);
    for (uint32_t i = 0; i < n_items; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return popularity[a] > popularity[b]; });
    const size_t n_head =
        std::min<size_t>(n_items, static_cast<size_t>(std::ceil(opt.head_fraction * n_items - 1e-9)));
    for (size_t j = 0; j < n_head; ++j) is_head[order[j]] = 1;
  }

  // Test users in increasing order.
  std::vector<uint32_t> users;
  for (uint32_t u = 0; u < target.n_rows; ++u)
    if (target.row_size(u) > 0) users.push_back(u);
  if (!users.empty())
    check(users.back() < model.n_users(), "evaluate: test user " + std::to_string(users.back()) +
                                              " is out of range (the model has " +
                                              std::to_string(model.n_users()) + " users)");
  const size_t n_pos = users.size();

  // Per-user result arrays.
  const size_t acc_width = ks.size() * kNumAcc;
  const size_t ic_width = ks.size() * kNumItemCohort;
  Group overall;
  overall.init(n_pos, acc_width);
  std::vector<Group> per_domain(n_groups_domain);
  for (auto& g : per_domain) g.init(n_pos, acc_width);
  Group head, tail;
  head.init(n_pos, ic_width);
  tail.init(n_pos, ic_width);
  std::vector<double> tied(n_pos, 0.0);  // per user: mean share of candidates tied with a held-out item
  // Serendipity (full ranking): per user and k, the share of the top k that is relevant and not among the k
  // most popular candidates the user has not interacted with (what a popularity list would have shown).
  Group seren;
  seren.init(n_pos, ks.size());
  std::vector<uint32_t> pop_order(catalogue);
  std::stable_sort(pop_order.begin(), pop_order.end(),
                   [&](uint32_t a, uint32_t b) { return popularity[a] > popularity[b]; });
  Lists overall_lists;
  std::vector<Lists> domain_lists(n_groups_domain);
  if (!sampled) {
    overall_lists.init(n_pos, max_k);
    for (auto& l : domain_lists) l.init(n_pos, max_k);
  }

  // Blocks of users: about 64 MiB of scores per block (a factor model packs its item matrix once per block,
  // so larger blocks amortise it; the selection streams through the rows and does not need them in cache).
  size_t block = opt.block_users;
  if (block == 0) block = std::clamp<size_t>((size_t{16} << 20) / std::max<uint32_t>(n_items, 1), 8, 1024);
  const size_t n_blocks = (n_pos + block - 1) / block;
  const int threads = resolve_threads(opt.threads);
  const size_t n_workers = std::min<size_t>(static_cast<size_t>(threads), std::max<size_t>(n_blocks, 1));
  std::atomic<size_t> next_block{0};
  std::atomic<bool> failed{false};
  std::mutex progress_mutex;
  size_t users_done = 0;

  // Full ranking: one pass over the row feeds the overall top list and, for each domain where the user has
  // test items, that domain's top list (candidates of that domain only).
  // Diversity re-ranking: select a pool of pool_k, then MMR picks max_k of it.
  check(opt.diversity >= 0 && opt.diversity <= 1, "evaluate: diversity must be in [0, 1]");
  check(opt.diversity == 0 || (opt.item_vectors && opt.item_vectors->rows == n_items),
        "evaluate: diversity re-ranking needs one item vector per item (categories or text vectors)");
  check(opt.diversity == 0 || sampled == false,
        "evaluate: diversity re-ranking applies to full ranking only");
  const size_t pool_k = opt.diversity > 0 ? std::max(opt.diversity_pool, max_k) : max_k;
  auto diversify = [&](const float* row, std::vector<uint32_t>& list) {
    if (opt.diversity == 0) return;
    std::vector<ScoredItem> pool;
    pool.reserve(list.size());
    for (uint32_t i : list) pool.push_back({i, row[i]});
    RerankOptions ro;
    ro.k = max_k;
    ro.diversity = opt.diversity;
    const auto picked = rerank(pool, opt.item_vectors, {}, ro);
    list.clear();
    for (const auto& c : picked) list.push_back(c.item);
  };
  struct FullScratch {
    TopK all;
    std::vector<TopK> domain;
    std::vector<SelectorGroup> selectors;
    std::vector<uint32_t> list, rel_a, rel_b, exclude;
  };
  auto process_full_user = [&](size_t p, const float* row, FullScratch& w) {
    const uint32_t u = users[p];
    std::span<const uint32_t> exclude = train.row_indices(u);
    if (restricted) {
      w.exclude.clear();
      std::set_union(exclude.begin(), exclude.end(), non_candidates.begin(), non_candidates.end(),
                     std::back_inserter(w.exclude));
      exclude = w.exclude;
    }
    const auto relevant = target.row_indices(u);
    const uint64_t salt = opt.ties == Ties::kRandom ? tie_salt(opt.seed, u) : 0;
    w.all.reset(pool_k, opt.ties, salt);
    w.selectors.clear();
    for (size_t d = 0; d < n_groups_domain; ++d) {
      bool has = false;
      for (uint32_t i : relevant) has = has || item_domain[i] == d;
      if (!has) continue;  // users with no test item in a domain are not evaluated there
      w.domain[d].reset(pool_k, opt.ties, salt);
      w.selectors.push_back({&w.domain[d], domain_bits[d].data()});
    }
    select_multi(row, n_items, exclude, &w.all, w.selectors);
    // Share of the candidates tied with a held-out item's score (up to kTiedTargets of them per user).
    {
      double t = 0;
      const size_t n_t = std::min(relevant.size(), kTiedTargets);
      for (size_t j = 0; j < n_t; ++j) t += tied_fraction(row, n_items, exclude, relevant[j]);
      tied[p] = n_t ? t / double(n_t) : 0.0;
    }
    w.all.finish(w.list);
    diversify(row, w.list);
    overall_lists.store(p, w.list);
    {
      w.rel_b.clear();  // the popularity list
      for (uint32_t i : pop_order) {
        if (w.rel_b.size() == max_k) break;
        if (!std::binary_search(exclude.begin(), exclude.end(), i)) w.rel_b.push_back(i);
      }
      for (size_t ki = 0; ki < ks.size(); ++ki) {
        const size_t k = ks[ki], n = std::min(k, w.list.size()), np = std::min(k, w.rel_b.size());
        size_t hits = 0;
        for (size_t r = 0; r < n; ++r) {
          const uint32_t i = w.list[r];
          if (std::binary_search(relevant.begin(), relevant.end(), i) &&
              std::find(w.rel_b.begin(), w.rel_b.begin() + int64_t(np), i) == w.rel_b.begin() + int64_t(np))
            ++hits;
        }
        seren.at(p)[ki] = double(hits) / double(k);
      }
      seren.has[p] = 1;
    }
    accuracy_metrics(w.list, relevant, ks, overall.at(p));
    overall.has[p] = 1;
    // Head / tail items: the same list judged against the relevant head (tail) items only.
    w.rel_a.clear();
    w.rel_b.clear();
    for (uint32_t i : relevant) (is_head[i] ? w.rel_a : w.rel_b).push_back(i);
    if (!w.rel_a.empty()) {
      item_cohort_metrics(w.list, w.rel_a, ks, head.at(p));
      head.has[p] = 1;
    }
    if (!w.rel_b.empty()) {
      item_cohort_metrics(w.list, w.rel_b, ks, tail.at(p));
      tail.has[p] = 1;
    }
    // Per domain: candidates and relevant items of that domain only.
    for (const auto& sel : w.selectors) {
      const size_t d = static_cast<size_t>(sel.sel - w.domain.data());
      w.rel_a.clear();
      for (uint32_t i : relevant)
        if (item_domain[i] == d) w.rel_a.push_back(i);
      sel.sel->finish(w.list);
      diversify(row, w.list);
      domain_lists[d].store(p, w.list);
      accuracy_metrics(w.list, w.rel_a, ks, per_domain[d].at(p));
      per_domain[d].has[p] = 1;
    }
  };

  // Sampled protocol: one ranking per (user, test item); the user's value is the mean over its test items
  // (within a domain / item cohort: over its test items there).
  auto process_sampled_user = [&](size_t p, const float* row, std::vector<uint32_t>& list,
                                  std::vector<uint32_t>& seen, std::vector<uint32_t>& negatives,
                                  std::vector<uint8_t>& mark, std::vector<double>& pair) {
    const uint32_t u = users[p];
    const auto tr = train.row_indices(u);
    const auto held_out = test.row_indices(u);
    const auto relevant = target.row_indices(u);
    seen.clear();
    std::set_union(tr.begin(), tr.end(), held_out.begin(), held_out.end(), std::back_inserter(seen));
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    std::vector<size_t> seen_in_domain(n_domains, 0);  // seen candidates of each domain
    for (uint32_t i : seen)
      if (is_candidate(i)) ++seen_in_domain[item_domain[i]];
    std::vector<size_t> n_in_domain(n_groups_domain, 0);
    size_t n_head = 0, n_tail = 0;
    double tied_sum = 0;
    Rng rng(opt.seed, u);
    for (uint32_t t : relevant) {
      const uint16_t d = item_domain[t];
      sample_negatives(domain_items[d], seen, seen_in_domain[d], opt.sampled_negatives, rng, mark, negatives);
      // Pessimistic ties: every negative scored at least as high as the target ranks above it. The list
      // holds the target at that rank (the items above it are negatives; which ones does not matter).
      const PessimisticRank pr = pessimistic_rank(row, t, negatives);
      const size_t above = pr.rank - 1;
      tied_sum += negatives.empty() ? 0.0 : double(pr.tied) / double(negatives.size());
      list.clear();
      for (size_t j = 0; j < std::min(above, max_k); ++j) list.push_back(negatives[j]);
      if (above < max_k) list.push_back(t);
      const std::span<const uint32_t> target(&t, 1);
      accuracy_metrics(list, target, ks, pair.data());
      double* o = overall.at(p);
      for (size_t j = 0; j < acc_width; ++j) o[j] += pair[j];
      if (d < n_groups_domain) {
        double* od = per_domain[d].at(p);
        for (size_t j = 0; j < acc_width; ++j) od[j] += pair[j];
        ++n_in_domain[d];
      }
      Group& ic = is_head[t] ? head : tail;
      (is_head[t] ? n_head : n_tail) += 1;
      for (size_t ki = 0; ki < ks.size(); ++ki) {
        ic.at(p)[ki * kNumItemCohort + 0] += pair[ki * kNumAcc + 1];  // recall
        ic.at(p)[ki * kNumItemCohort + 1] += pair[ki * kNumAcc + 3];  // ndcg
      }
    }
    auto finalise = [](Group& g, size_t p, size_t count) {
      if (count == 0) return;
      double* o = g.at(p);
      for (size_t j = 0; j < g.width; ++j) o[j] /= static_cast<double>(count);
      g.has[p] = 1;
    };
    finalise(overall, p, relevant.size());
    tied[p] = relevant.empty() ? 0.0 : tied_sum / double(relevant.size());
    for (size_t d = 0; d < n_groups_domain; ++d) finalise(per_domain[d], p, n_in_domain[d]);
    finalise(head, p, n_head);
    finalise(tail, p, n_tail);
  };

  auto worker = [&](size_t, size_t) {
    Matrix scores;
    FullScratch full;
    full.domain.resize(n_groups_domain);
    std::vector<uint32_t> list, buf1, negatives;
    std::vector<uint8_t> mark(sampled ? n_items : 0, 0);
    std::vector<double> pair(acc_width);
    try {
      for (;;) {
        const size_t b = next_block.fetch_add(1);
        if (b >= n_blocks || failed.load()) break;
        const size_t begin = b * block, end = std::min(n_pos, begin + block);
        const std::span<const uint32_t> block_users(users.data() + begin, end - begin);
        model.score(block_users, scores, 1);
        if (scores.rows != block_users.size() || scores.cols != n_items)
          throw Error("evaluate: model.score returned a " + std::to_string(scores.rows) + " x " +
                      std::to_string(scores.cols) + " matrix for " + std::to_string(block_users.size()) +
                      " users and " + std::to_string(n_items) + " items");
        for (size_t p = begin; p < end; ++p) {
          const float* row = scores.row(p - begin);
          if (sampled)
            process_sampled_user(p, row, list, buf1, negatives, mark, pair);
          else
            process_full_user(p, row, full);
        }
        if (opt.progress) {
          std::lock_guard<std::mutex> lock(progress_mutex);
          users_done += end - begin;
          opt.progress(users_done, n_pos, "evaluate");
        }
      }
    } catch (...) {
      failed.store(true);
      throw;
    }
  };
  if (n_blocks > 0) parallel_for(n_workers, threads, 1, worker);

  // ---- Reduction, serial and in user order. ----
  EvalResult res;
  res.protocol = sampled ? "sampled:" + std::to_string(opt.sampled_negatives) : "full";
  res.n_users = n_pos;
  auto all = [&](size_t p) { return overall.has[p] != 0; };
  res.overall = reduce(overall, n_pos, ks, kAccNames, kNumAcc, all, &res.overall_ci95);
  res.overall.erase("n_users");  // reported as EvalResult::n_users
  if (n_pos > 0) {
    double t = 0;
    for (double v : tied) t += v;
    res.overall["tied_share"] = t / double(n_pos);
  }
  if (!sampled && n_items > 0) {
    beyond_accuracy(overall_lists, n_pos, all, ks, catalogue, catalogue_index, popularity, train.n_rows,
                    opt.item_vectors, res.overall);
    static constexpr const char* kSeren[] = {"serendipity"};
    MetricMap sm = reduce(seren, n_pos, ks, kSeren, 1, [&](size_t p) { return seren.has[p] != 0; });
    sm.erase("n_users");
    res.overall.insert(sm.begin(), sm.end());
    res.long_tail = long_tail(overall_lists, n_pos, all, catalogue, popularity, train);
  }
  for (size_t d = 0; d < n_groups_domain; ++d) {
    auto in_d = [&](size_t p) { return per_domain[d].has[p] != 0; };
    MetricMap m = reduce(per_domain[d], n_pos, ks, kAccNames, kNumAcc, in_d);
    if (m.empty()) continue;  // no test user in this domain
    if (!sampled)
      beyond_accuracy(domain_lists[d], n_pos, in_d, ks, domain_items[d], local_index, popularity,
                      train.n_rows, opt.item_vectors, m);
    res.by_domain[ds->domains.name(static_cast<uint32_t>(d))] = std::move(m);
  }
  if (!opt.cold_user.empty()) {
    MetricMap cold = reduce(overall, n_pos, ks, kAccNames, kNumAcc,
                            [&](size_t p) { return opt.cold_user[users[p]] != 0; });
    MetricMap warm = reduce(overall, n_pos, ks, kAccNames, kNumAcc,
                            [&](size_t p) { return opt.cold_user[users[p]] == 0; });
    if (!cold.empty()) res.by_cohort["cold-users"] = std::move(cold);
    if (!warm.empty()) res.by_cohort["warm-users"] = std::move(warm);
  }
  MetricMap h =
      reduce(head, n_pos, ks, kItemCohortNames, kNumItemCohort, [&](size_t p) { return head.has[p] != 0; });
  MetricMap t =
      reduce(tail, n_pos, ks, kItemCohortNames, kNumItemCohort, [&](size_t p) { return tail.has[p] != 0; });
  if (!h.empty()) res.by_cohort["head-items"] = std::move(h);
  if (!t.empty()) res.by_cohort["tail-items"] = std::move(t);
  res.seconds = timer.seconds();
  return res;
}

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j;
  j["overall"] = nlohmann::json::object();
  for (const auto& [k, v] : overall) j["overall"][k] = v;
  j["by_domain"] = nlohmann::json::object();
  for (const auto& [name, m] : by_domain) {
    j["by_domain"][name] = nlohmann::json::object();
    for (const auto& [k, v] : m) j["by_domain"][name][k] = v;
  }
  j["by_cohort"] = nlohmann::json::object();
  for (const auto& [name, m] : by_cohort) {
    j["by_cohort"][name] = nlohmann::json::object();
    for (const auto& [k, v] : m) j["by_cohort"][name][k] = v;
  }
  j["n_users"] = n_users;
  j["seconds"] = seconds;
  j["protocol"] = protocol;
  if (!long_tail.recommended.empty())
    j["long_tail"] = {{"recommended", long_tail.recommended}, {"interacted", long_tail.interacted}};
  j["overall_ci95"] = nlohmann::json::object();
  for (const auto& [k, v] : overall_ci95) j["overall_ci95"][k] = v;
  return j;
}

}  // namespace xdrec
