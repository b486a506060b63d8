// Scalar and product quantisation of item vectors, asymmetric distance computation and top-K through codes
// (item_codes.h).
#include "xdrec/item_codes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "xdrec/params.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

ParamSet codes_params(CodesSpec& s, const std::string& kind) {
  ParamSet p("index " + kind);
  p.add("rerank", &s.rerank, 0, 0, 100000, "candidates re-scored with the float vectors (0: none)");
  if (kind == "pq") {
    p.add("m", &s.m, 8, 1, 4096, "sub-vectors (at most the vector length)");
    p.add("bits", &s.bits, 8, 1, 8, "log2 of the centroids per sub-space");
    p.add("iters", &s.iters, 20, 1, 1000, "k-means iterations");
    p.add("seed", &s.seed, 42, 0, 2147483647, "k-means initialisation");
  }
  return p;
}

// Dot products with eight independent partial sums (the compiler keeps them in one SIMD register), for the
// float scan and the sq8 scan alike.
template <class T>
float dot8(const float* a, const T* b, size_t n) {
  float p[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t l = 0; l < 8; ++l) p[l] += a[i + l] * float(b[i + l]);
  float s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  for (; i < n; ++i) s += a[i] * float(b[i]);
  return s;
}
float dot(const float* a, const float* b, size_t n) {
  return dot8(a, b, n);
}

// Index of the centroid (k rows of `dim`) nearest to x in squared L2; ties to the lower index.
uint8_t nearest(const float* x, const float* cent, size_t k, size_t dim) {
  size_t best = 0;
  float best_d = INFINITY;
  for (size_t c = 0; c < k; ++c) {
    float d = 0.0f;
    for (size_t j = 0; j < dim; ++j) {
      const float e = x[j] - cent[c * dim + j];
      d += e * e;
    }
    if (d < best_d) best_d = d, best = c;
  }
  return uint8_t(best);
}

// Lloyd's k-means on n points of `dim` (row-major): k distinct points drawn by `rng` start it; each
// iteration assigns every point (in parallel; a point's assignment does not depend on the others) and
// recomputes the centroids sequentially in point order (double sums), so the result is the same for any
// thread count. An empty cluster keeps its centroid. Stops early when no assignment changes.
std::vector<float> kmeans(const std::vector<float>& x, size_t n, size_t dim, size_t k, int iters, Rng& rng,
                          int threads) {
  std::vector<uint32_t> pick(n);
  std::iota(pick.begin(), pick.end(), 0u);
  for (size_t c = 0; c < k; ++c) std::swap(pick[c], pick[c + rng.below(n - c)]);
  std::vector<float> cent(k * dim);
  for (size_t c = 0; c < k; ++c) std::copy_n(x.data() + size_t(pick[c]) * dim, dim, cent.data() + c * dim);
  std::vector<uint8_t> assign(n, 0), prev;
  for (int it = 0; it < iters; ++it) {
    prev = assign;
    parallel_for(n, threads, 1024, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) assign[i] = nearest(x.data() + i * dim, cent.data(), k, dim);
    });
    if (it > 0 && assign == prev) break;
    std::vector<double> sum(k * dim, 0.0);
    std::vector<size_t> count(k, 0);
    for (size_t i = 0; i < n; ++i) {
      ++count[assign[i]];
      for (size_t j = 0; j < dim; ++j) sum[assign[i] * dim + j] += x[i * dim + j];
    }
    for (size_t c = 0; c < k; ++c)
      if (count[c] > 0)
        for (size_t j = 0; j < dim; ++j) cent[c * dim + j] = float(sum[c * dim + j] / double(count[c]));
  }
  return cent;
}

}  // namespace

CodesSpec CodesSpec::parse(const std::string& text) {
  const Spec sp = Spec::parse(text);
  check(sp.name == "sq8" || sp.name == "pq", "index: sq8 or pq[:m=..,bits=..], not '" + text + "'");
  CodesSpec s;
  s.kind = sp.name;
  ParamSet params = codes_params(s, s.kind);
  params.apply(sp.values);
  s.canonical = s.kind + ":" + params.current();
  return s;
}

bool is_codes_spec(const std::string& text) {
  return text == "sq8" || text == "pq" || text.starts_with("sq8:") || text.starts_with("pq:");
}

size_t ItemCodes::code_size() const {
  return spec_.kind == "sq8" ? f_ : size_t(spec_.m);
}

size_t ItemCodes::bytes() const {
  return codes_.size() + (lo_.size() + step_.size() + books_.size() + bias_.size()) * sizeof(float);
}

ItemCodes ItemCodes::build(const Matrix& items, std::span<const float> bias, const CodesSpec& spec,
                           int threads) {
  check(items.rows > 0 && items.cols > 0, "index " + spec.kind + ": no item vectors to encode");
  check(bias.empty() || bias.size() == items.rows, "index " + spec.kind + ": " + std::to_string(bias.size()) +
                                                       " biases for " + std::to_string(items.rows) +
                                                       " items");
  for (float v : items.data) check(std::isfinite(v), "index " + spec.kind + ": an item vector is not finite");
  ItemCodes c;
  c.spec_ = spec;
  c.f_ = items.cols;
  const size_t n = items.rows, f = items.cols;
  if (spec.kind == "sq8") {
    c.lo_.assign(f, INFINITY);
    std::vector<float> hi(f, -INFINITY);
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < f; ++j)
        c.lo_[j] = std::min(c.lo_[j], items(i, j)), hi[j] = std::max(hi[j], items(i, j));
    c.step_.resize(f);
    for (size_t j = 0; j < f; ++j) c.step_[j] = (hi[j] - c.lo_[j]) / 255.0f;
  } else {
    check(spec.kind == "pq", "index: unknown kind '" + spec.kind + "'");
    check(size_t(spec.m) <= f,
          "index pq: m=" + std::to_string(spec.m) + " is more than the vector length " + std::to_string(f));
    c.sub_ = (f + size_t(spec.m) - 1) / size_t(spec.m);  // the longest sub-vector; shorter ones zero-padded
    c.k_ = std::min<size_t>(size_t(1) << spec.bits, n);
    c.books_.resize(size_t(spec.m) * c.k_ * c.sub_);
    std::vector<float> x(n * c.sub_);
    for (size_t s = 0; s < size_t(spec.m); ++s) {
      for (size_t i = 0; i < n; ++i) c.subvector(items.row(i), s, x.data() + i * c.sub_);
      Rng rng(uint64_t(spec.seed), s);  // one stream per sub-space
      const std::vector<float> cent = kmeans(x, n, c.sub_, c.k_, spec.iters, rng, resolve_threads(threads));
      std::copy(cent.begin(), cent.end(), c.books_.begin() + std::ptrdiff_t(s * c.k_ * c.sub_));
    }
  }
  c.codes_.resize(n * c.code_size());
  parallel_for(n, resolve_threads(threads), 1024, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) c.encode(items.row(i), c.codes_.data() + i * c.code_size());
  });
  c.bias_.assign(n, 0.0f);
  if (!bias.empty()) std::copy(bias.begin(), bias.end(), c.bias_.begin());
  return c;
}

// Sub-vector s covers dimensions [s f / m, (s + 1) f / m): every one non-empty for m <= f, lengths differing
// by at most one.
size_t ItemCodes::sub_begin(size_t s) const {
  return s * f_ / size_t(spec_.m);
}

void ItemCodes::subvector(const float* v, size_t s, float* out) const {
  const size_t lo = sub_begin(s), len = sub_begin(s + 1) - lo;
  std::copy_n(v + lo, len, out);
  std::fill(out + len, out + sub_, 0.0f);
}

void exact_scores(const Matrix& items, std::span<const float> bias, const float* q, float* out) {
  for (size_t i = 0; i < items.rows; ++i)
    out[i] = (bias.empty() ? 0.0f : bias[i]) + dot(q, items.row(i), items.cols);
}

void ItemCodes::encode(const float* v, uint8_t* code) const {
  if (spec_.kind == "sq8") {
    for (size_t j = 0; j < f_; ++j) {
      const float q = step_[j] > 0.0f ? std::nearbyint((v[j] - lo_[j]) / step_[j]) : 0.0f;
      code[j] = uint8_t(std::clamp(q, 0.0f, 255.0f));
    }
    return;
  }
  std::vector<float> x(sub_);
  for (size_t s = 0; s < size_t(spec_.m); ++s) {
    subvector(v, s, x.data());
    code[s] = nearest(x.data(), books_.data() + s * k_ * sub_, k_, sub_);
  }
}

void ItemCodes::add(const float* v, float bias) {
  for (size_t j = 0; j < f_; ++j) check(std::isfinite(v[j]), "index: the new item's vector is not finite");
  codes_.resize(codes_.size() + code_size());
  encode(v, codes_.data() + codes_.size() - code_size());
  bias_.push_back(bias);
}

void ItemCodes::decode(uint32_t i, float* out) const {
  check(i < n_items(), "index: item " + std::to_string(i) + " is out of range");
  const uint8_t* code = codes_.data() + size_t(i) * code_size();
  if (spec_.kind == "sq8") {
    for (size_t j = 0; j < f_; ++j) out[j] = lo_[j] + float(code[j]) * step_[j];
    return;
  }
  for (size_t s = 0; s < size_t(spec_.m); ++s)
    std::copy_n(books_.data() + (s * k_ + code[s]) * sub_, sub_begin(s + 1) - sub_begin(s),
                out + sub_begin(s));
}

void ItemCodes::scores(const float* q, float* out) const {
  const size_t n = n_items(), cs = code_size();
  if (spec_.kind == "sq8") {
    // <q, lo + code * step> = <q, lo> + sum_j (q_j step_j) code_j
    std::vector<float> w(f_);
    for (size_t j = 0; j < f_; ++j) w[j] = q[j] * step_[j];
    const float base = dot(q, lo_.data(), f_);
    for (size_t i = 0; i < n; ++i) out[i] = bias_[i] + base + dot8(w.data(), codes_.data() + i * cs, f_);
    return;
  }
  // One table of <q_s, centroid> per sub-space; an item's score is the sum of its m entries.
  const size_t m = size_t(spec_.m);
  std::vector<float> table(m * k_), qs(sub_);
  for (size_t s = 0; s < m; ++s) {
    subvector(q, s, qs.data());
    for (size_t c = 0; c < k_; ++c)
      table[s * k_ + c] = dot(qs.data(), books_.data() + (s * k_ + c) * sub_, sub_);
  }
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* code = codes_.data() + i * cs;
    float s = 0.0f;
    for (size_t j = 0; j < m; ++j) s += table[j * k_ + code[j]];
    out[i] = bias_[i] + s;
  }
}

std::vector<ScoredItem> codes_top_k(const ItemCodes& codes, const float* query, size_t k,
                                    std::span<const uint32_t> exclude, std::span<const uint16_t> item_domain,
                                    int domain, const Matrix& items, std::span<const float> bias, Ties ties,
                                    uint64_t salt) {
  const uint32_t n = codes.n_items();
  check(items.rows == n && items.cols == codes.dim(), "index: the float item vectors do not match the codes");
  std::vector<float> row(n);
  codes.scores(query, row.data());
  const size_t want = codes.spec().rerank > 0 ? std::max(k, size_t(codes.spec().rerank)) : k;
  std::vector<ScoredItem> cand = top_k(row.data(), n, want, exclude, item_domain, domain, ties, salt);
  if (codes.spec().rerank == 0) return cand;
  // Exact scores of the candidates, then the best k of them by the same tie rule.
  TopK sel;
  sel.reset(k, ties, salt);
  for (const ScoredItem& c : cand)
    sel.push(c.item, dot(query, items.row(c.item), items.cols) + (bias.empty() ? 0.0f : bias[c.item]));
  std::vector<ScoredItem> out;
  sel.finish(out);
  return out;
}

std::vector<std::vector<ScoredItem>> recommend_codes(const Recommender& model, const ItemCodes& codes,
                                                     std::span<const uint32_t> users,
                                                     const RecommendOptions& opt) {
  Matrix items, uv;
  std::vector<float> bias;
  check(model.item_vectors(items, bias), "--index " + codes.spec().kind + ": model '" + model.name() +
                                             "' is not a dot-product model (ials, bpr, hybrid are)");
  for (uint32_t u : users)
    check(u < model.n_users(), "recommend: user index " + std::to_string(u) + " is out of range (model has " +
                                   std::to_string(model.n_users()) + " users)");
  check(model.user_vectors(users, uv), "--index: model '" + model.name() + "' gave no user vectors");
  check(items.rows == codes.n_items(), "--index: the codes hold " + std::to_string(codes.n_items()) +
                                           " items but the model " + std::to_string(items.rows));
  check(opt.domain < 0 || !opt.item_domain.empty(), "recommend: a domain needs the items' domains");
  std::vector<std::vector<ScoredItem>> out(users.size());
  parallel_for(users.size(), resolve_threads(opt.threads), 16, [&](size_t lo, size_t hi) {
    std::vector<uint32_t> ex;
    for (size_t r = lo; r < hi; ++r) {
      ex.clear();
      if (opt.exclude && users[r] < opt.exclude->n_rows) {
        const auto row = opt.exclude->row_indices(users[r]);
        ex.assign(row.begin(), row.end());
      }
      if (!opt.allowed.empty()) {
        for (uint32_t i = 0; i < codes.n_items(); ++i)
          if (i < opt.allowed.size() && !opt.allowed[i]) ex.push_back(i);
        std::sort(ex.begin(), ex.end());
        ex.erase(std::unique(ex.begin(), ex.end()), ex.end());
      }
      out[r] = codes_top_k(codes, uv.row(r), opt.k, ex, opt.item_domain, opt.domain, items, bias, opt.ties,
                           opt.ties == Ties::kRandom ? tie_salt(opt.tie_seed, users[r]) : 0);
    }
  });
  return out;
}

}  // namespace xdrec
