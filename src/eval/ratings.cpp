// RMSE and MAE of rating predictions (metrics.h: evaluate_ratings).
#include <cmath>

#include "xdrec/metrics.h"
#include "xdrec/recommender.h"

namespace xdrec {

EvalResult evaluate_ratings(const Recommender& model, const Csr& test, const Dataset* ds,
                            std::span<const uint8_t> cold_user, int threads,
                            std::vector<std::pair<float, float>>* pairs, size_t max_pairs) {
  Timer timer;
  check(model.predicts_ratings(),
        "model '" + model.name() +
            "' ranks items but does not predict ratings (rating models: svd, svdpp, bpmf)");
  check(model.n_items() == test.n_cols, "evaluate_ratings: the model has " + std::to_string(model.n_items()) +
                                            " items but the test matrix has " + std::to_string(test.n_cols));
  check(cold_user.empty() || cold_user.size() == test.n_rows,
        "evaluate_ratings: cold_user has the wrong size");
  std::vector<uint32_t> users;
  for (uint32_t u = 0; u < test.n_rows; ++u)
    if (test.row_size(u) > 0) users.push_back(u);
  if (!users.empty())
    check(users.back() < model.n_users(), "evaluate_ratings: test user " + std::to_string(users.back()) +
                                              " is out of range (the model has " +
                                              std::to_string(model.n_users()) + " users)");
  const size_t n_domains = ds ? ds->n_domains() : 1;
  // Per user: squared and absolute error sums per domain.
  std::vector<double> se(users.size() * n_domains, 0.0), ae(users.size() * n_domains, 0.0);
  std::vector<uint64_t> cnt(users.size() * n_domains, 0);
  std::vector<float> predicted(pairs ? test.nnz() : 0, 0.0f);  // kept only when pairs are asked for
  const size_t block = 64;
  parallel_for((users.size() + block - 1) / block, resolve_threads(threads), 1, [&](size_t lo, size_t hi) {
    for (size_t b = lo; b < hi; ++b) {
      const size_t begin = b * block, end = std::min(users.size(), begin + block);
      for (size_t r = begin; r < end; ++r) {
        const uint32_t u = users[r];
        for (uint64_t p = test.indptr[u]; p < test.indptr[u + 1]; ++p) {
          const uint32_t i = test.indices[p];
          const size_t d = ds ? ds->item_domain[i] : 0;
          const float pred = model.predict(u, i);
          if (pairs) predicted[p] = pred;
          const double e = double(pred) - double(test.values[p]);
          se[r * n_domains + d] += e * e;
          ae[r * n_domains + d] += std::abs(e);
          ++cnt[r * n_domains + d];
        }
      }
    }
  });
  EvalResult res;
  res.protocol = "rating";
  res.n_users = users.size();
  auto put = [](MetricMap& m, double s, double a, uint64_t n) {
    m["rmse"] = n ? std::sqrt(s / double(n)) : 0.0;
    m["mae"] = n ? a / double(n) : 0.0;
    m["n_ratings"] = double(n);
  };
  double ts = 0, ta = 0;
  uint64_t tn = 0;
  std::vector<double> ds_s(n_domains, 0), ds_a(n_domains, 0);
  std::vector<uint64_t> ds_n(n_domains, 0);
  double cs[2] = {0, 0}, ca[2] = {0, 0};
  uint64_t cn[2] = {0, 0};
  for (size_t r = 0; r < users.size(); ++r)
    for (size_t d = 0; d < n_domains; ++d) {
      const size_t k = r * n_domains + d;
      ts += se[k], ta += ae[k], tn += cnt[k];
      ds_s[d] += se[k], ds_a[d] += ae[k], ds_n[d] += cnt[k];
      if (!cold_user.empty()) {
        const int c = cold_user[users[r]] ? 1 : 0;
        cs[c] += se[k], ca[c] += ae[k], cn[c] += cnt[k];
      }
    }
  put(res.overall, ts, ta, tn);
  if (ds && n_domains > 1)
    for (size_t d = 0; d < n_domains; ++d)
      if (ds_n[d]) put(res.by_domain[ds->domains.name(uint32_t(d))], ds_s[d], ds_a[d], ds_n[d]);
  if (!cold_user.empty()) {
    if (cn[1]) put(res.by_cohort["cold-users"], cs[1], ca[1], cn[1]);
    if (cn[0]) put(res.by_cohort["warm-users"], cs[0], ca[0], cn[0]);
  }
  if (pairs) {
    pairs->clear();
    const size_t n = test.nnz(),
                 step = std::max<size_t>(1, (n + max_pairs - 1) / std::max<size_t>(max_pairs, 1));
    for (size_t p = 0; p < n; p += step) pairs->emplace_back(predicted[p], test.values[p]);
  }
  res.seconds = timer.seconds();
  return res;
}

}  // namespace xdrec
