// Per-list ranking metrics, beyond-accuracy metrics over many lists, and confidence intervals.
// Definitions (with formulas) are in docs/METRICS.md; the code follows them literally.
#include "xdrec/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

namespace xdrec {

namespace {

// Messages are built only on failure: these checks run once per list in the evaluator.
void check_args(std::span<const uint32_t> relevant, size_t k, const char* fn) {
  if (k == 0) throw Error(std::string(fn) + ": k must be positive");
  if (!std::is_sorted(relevant.begin(), relevant.end()))
    throw Error(std::string(fn) + ": the relevant items must be sorted in increasing order");
}

inline bool is_relevant(std::span<const uint32_t> relevant, uint32_t item) {
  return std::binary_search(relevant.begin(), relevant.end(), item);
}

// Number of relevant items among the first min(k, |ranked|) positions.
size_t hits_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k) {
  const size_t n = std::min(k, ranked.size());
  size_t hits = 0;
  for (size_t i = 0; i < n; ++i) hits += is_relevant(relevant, ranked[i]) ? 1 : 0;
  return hits;
}

}  // namespace

double precision_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k) {
  check_args(relevant, k, "precision_at_k");
  return static_cast<double>(hits_at_k(ranked, relevant, k)) / static_cast<double>(k);
}

double recall_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k) {
  check_args(relevant, k, "recall_at_k");
  if (relevant.empty()) return 0.0;
  return static_cast<double>(hits_at_k(ranked, relevant, k)) / static_cast<double>(relevant.size());
}

double f1_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k) {
  const double p = precision_at_k(ranked, relevant, k);
  const double r = recall_at_k(ranked, relevant, k);
  return p + r > 0 ? 2.0 * p * r / (p + r) : 0.0;
}

double ndcg_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k) {
  check_args(relevant, k, "ndcg_at_k");
  if (relevant.empty()) return 0.0;
  const size_t n = std::min(k, ranked.size());
  double dcg = 0.0;
  for (size_t i = 0; i < n; ++i)
    if (is_relevant(relevant, ranked[i])) dcg += 1.0 / std::log2(static_cast<double>(i) + 2.0);
  double idcg = 0.0;
  const size_t ideal = std::min(k, relevant.size());
  for (size_t i = 0; i < ideal; ++i) idcg += 1.0 / std::log2(static_cast<double>(i) + 2.0);
  return dcg / idcg;
}

double hit_rate_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k) {
  check_args(relevant, k, "hit_rate_at_k");
  return hits_at_k(ranked, relevant, k) > 0 ? 1.0 : 0.0;
}

double average_precision_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant,
                              size_t k) {
  check_args(relevant, k, "average_precision_at_k");
  if (relevant.empty()) return 0.0;
  const size_t n = std::min(k, ranked.size());
  double sum = 0.0;
  size_t hits = 0;
  for (size_t i = 0; i < n; ++i) {
    if (is_relevant(relevant, ranked[i])) {
      ++hits;
      sum += static_cast<double>(hits) / static_cast<double>(i + 1);  // precision at this cut-off
    }
  }
  return sum / static_cast<double>(std::min(k, relevant.size()));
}

double reciprocal_rank_at_k(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant, size_t k) {
  check_args(relevant, k, "reciprocal_rank_at_k");
  const size_t n = std::min(k, ranked.size());
  for (size_t i = 0; i < n; ++i)
    if (is_relevant(relevant, ranked[i])) return 1.0 / static_cast<double>(i + 1);
  return 0.0;
}

// ---- Beyond-accuracy --------------------------------------------------------------------------------------

namespace {

void check_items(const std::vector<std::vector<uint32_t>>& lists, uint64_t n_items, const char* fn) {
  for (const auto& l : lists)
    for (uint32_t i : l)
      if (i >= n_items)
        throw Error(std::string(fn) + ": item index " + std::to_string(i) +
                    " is out of range (catalogue has " + std::to_string(n_items) + " items)");
}

}  // namespace

double catalogue_coverage(const std::vector<std::vector<uint32_t>>& lists, uint32_t n_items) {
  check(n_items > 0, "catalogue_coverage: the catalogue is empty");
  check_items(lists, n_items, "catalogue_coverage");
  std::vector<uint8_t> seen(n_items, 0);
  size_t distinct = 0;
  for (const auto& l : lists)
    for (uint32_t i : l)
      if (!seen[i]) {
        seen[i] = 1;
        ++distinct;
      }
  return static_cast<double>(distinct) / static_cast<double>(n_items);
}

double intra_list_diversity(const std::vector<std::vector<uint32_t>>& lists, const Matrix& item_vectors) {
  check_items(lists, item_vectors.rows, "intra_list_diversity");
  const size_t dim = item_vectors.cols;
  // Norms computed once per item that appears (lazily), in double precision.
  std::vector<double> norm(item_vectors.rows, -1.0);
  auto norm_of = [&](uint32_t i) {
    if (norm[i] < 0) {
      const float* v = item_vectors.row(i);
      double s = 0;
      for (size_t c = 0; c < dim; ++c) s += double(v[c]) * double(v[c]);
      norm[i] = std::sqrt(s);
    }
    return norm[i];
  };
  double total = 0.0;
  size_t n_lists = 0;
  for (const auto& l : lists) {
    if (l.size() < 2) continue;
    double sum_cos = 0.0;
    size_t pairs = 0;
    for (size_t a = 0; a < l.size(); ++a) {
      for (size_t b = a + 1; b < l.size(); ++b, ++pairs) {
        const double na = norm_of(l[a]), nb = norm_of(l[b]);
        if (na == 0.0 || nb == 0.0) continue;  // a zero vector is taken as orthogonal to everything (cos 0)
        const float* va = item_vectors.row(l[a]);
        const float* vb = item_vectors.row(l[b]);
        double dot = 0;
        for (size_t c = 0; c < dim; ++c) dot += double(va[c]) * double(vb[c]);
        sum_cos += dot / (na * nb);
      }
    }
    total += 1.0 - sum_cos / static_cast<double>(pairs);
    ++n_lists;
  }
  return n_lists ? total / static_cast<double>(n_lists) : 0.0;
}

double novelty(const std::vector<std::vector<uint32_t>>& lists, std::span<const uint32_t> item_popularity,
               uint32_t n_users) {
  check(n_users > 0, "novelty: n_users must be positive");
  check_items(lists, item_popularity.size(), "novelty");
  double total = 0.0;
  size_t n_lists = 0;
  for (const auto& l : lists) {
    if (l.empty()) continue;
    double s = 0.0;
    for (uint32_t i : l) {
      const uint32_t pop = item_popularity[i];
      if (pop > n_users)
        throw Error("novelty: item " + std::to_string(i) + " has popularity " + std::to_string(pop) +
                    " > n_users " + std::to_string(n_users) + " (popularity counts distinct training users)");
      // An item nobody interacted with in training is treated as if one user had: its self-information is
      // the largest finite value, log2(n_users), instead of infinity.
      s -= std::log2(static_cast<double>(std::max<uint32_t>(pop, 1)) / static_cast<double>(n_users));
    }
    total += s / static_cast<double>(l.size());
    ++n_lists;
  }
  return n_lists ? total / static_cast<double>(n_lists) : 0.0;
}

double gini_index(const std::vector<std::vector<uint32_t>>& lists, uint32_t n_items) {
  check(n_items > 0, "gini_index: the catalogue is empty");
  check_items(lists, n_items, "gini_index");
  std::vector<uint64_t> count(n_items, 0);
  uint64_t total = 0;
  for (const auto& l : lists)
    for (uint32_t i : l) {
      ++count[i];
      ++total;
    }
  if (total == 0) return 0.0;
  std::sort(count.begin(), count.end());
  // G = sum_j (2j - n - 1) c_(j) / (n * sum c), j = 1..n over counts in increasing order.
  const double n = static_cast<double>(n_items);
  double acc = 0.0;
  for (size_t j = 0; j < count.size(); ++j)
    acc += (2.0 * static_cast<double>(j + 1) - n - 1.0) * static_cast<double>(count[j]);
  return acc / (n * static_cast<double>(total));
}

// ---- Confidence intervals
// -----------------------------------------------------------------------------------

double student_t_975(size_t df) {
  check(df > 0, "student_t_975: degrees of freedom must be positive");
  // Exact quantiles for small df (to 9 decimals).
  static constexpr double kTable[30] = {
      12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252, 2.306004135,
      2.262157163,  2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546, 2.119905299,
      2.109815578,  2.100922040, 2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562,
      2.059538553,  2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456};
  if (df <= 30) return kTable[df - 1];
  // Cornish-Fisher expansion of the t quantile around the normal quantile z (error < 1e-7 for df > 30).
  const double z = 1.959963984540054;
  const double v = static_cast<double>(df);
  const double z2 = z * z, z3 = z2 * z, z5 = z3 * z2, z7 = z5 * z2, z9 = z7 * z2;
  return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v) +
         (79 * z9 + 776 * z7 + 1482 * z5 - 1920 * z3 - 945 * z) / (92160 * v * v * v * v);
}

MeanCI mean_ci95(std::span<const double> values) {
  MeanCI r;
  r.n = values.size();
  if (r.n == 0) {
    r.mean = r.ci95 = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  double sum = 0.0;
  for (double v : values) sum += v;
  r.mean = sum / static_cast<double>(r.n);
  if (r.n < 2) {
    r.ci95 = std::numeric_limits<double>::quiet_NaN();  // undefined from one value
    return r;
  }
  double ss = 0.0;
  for (double v : values) ss += (v - r.mean) * (v - r.mean);
  const double sd = std::sqrt(ss / static_cast<double>(r.n - 1));
  r.ci95 = student_t_975(r.n - 1) * sd / std::sqrt(static_cast<double>(r.n));
  return r;
}

}  // namespace xdrec
