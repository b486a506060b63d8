// The top-K selector, the one-pass multi-selector, pessimistic ranks, tie statistics and batched recommend().
//
// Scans offer items in increasing index order, so under Ties::kLowerIndex a later item never beats an equal
// score already kept and a candidate only needs `score > worst kept score`; under Ties::kRandom an equal
// score may win on its tie key, so the test is `score >= worst kept`. Once the heap is full, scans test 16
// scores at a time against that bound and skip the whole group when none passes (the common case).
#include <algorithm>
#include <cstring>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "xdrec/rank.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

using Cand = TopK::Cand;

// NaN scores rank below every number.
inline float clean(float s) {
  return std::isnan(s) ? -INFINITY : s;
}

inline bool better(const Cand& a, const Cand& b) {
  return a.score > b.score || (a.score == b.score && a.key < b.key);
}

// Bit j set when s[j] > bound (strict) or s[j] >= bound (!strict), for the 16 scores at `s`; never for NaN.
inline uint32_t pass_mask16(const float* s, float bound, bool strict) {
#if defined(__AVX512F__)
  const __m512 v = _mm512_loadu_ps(s);
  const __m512 b = _mm512_set1_ps(bound);
  return strict ? uint32_t(_mm512_cmp_ps_mask(v, b, _CMP_GT_OQ))
                : uint32_t(_mm512_cmp_ps_mask(v, b, _CMP_GE_OQ));
#elif defined(__AVX__)
  const __m256 b = _mm256_set1_ps(bound);
  const __m256 lo = _mm256_loadu_ps(s), hi = _mm256_loadu_ps(s + 8);
  const __m256 ml = strict ? _mm256_cmp_ps(lo, b, _CMP_GT_OQ) : _mm256_cmp_ps(lo, b, _CMP_GE_OQ);
  const __m256 mh = strict ? _mm256_cmp_ps(hi, b, _CMP_GT_OQ) : _mm256_cmp_ps(hi, b, _CMP_GE_OQ);
  return uint32_t(_mm256_movemask_ps(ml)) | (uint32_t(_mm256_movemask_ps(mh)) << 8);
#else
  uint32_t m = 0;
  for (uint32_t j = 0; j < 16; ++j) m |= uint32_t(strict ? s[j] > bound : s[j] >= bound) << j;
  return m;
#endif
}

}  // namespace

uint64_t tie_salt(uint64_t seed, uint64_t user) {
  return mix64(mix64(seed + 0x9E3779B97F4A7C15ULL) ^ (user * 0xD1B54A32D192ED03ULL + 0x632BE59BD9B4E019ULL));
}

void TopK::reset(size_t k, Ties ties, uint64_t salt) {
  k_ = k;
  ties_ = ties;
  salt_ = salt;
  heap_.clear();
  heap_.reserve(k + 1);
}

uint64_t TopK::key_of(uint32_t item) const {
  if (ties_ == Ties::kLowerIndex) return item;
  return (mix64(salt_ ^ (uint64_t(item) * 0x9E3779B97F4A7C15ULL)) & 0xFFFFFFFF00000000ULL) | item;
}

void TopK::replace_worst(const Cand& c) {
  Cand* h = heap_.data();
  const size_t n = heap_.size();
  size_t pos = 0;
  for (;;) {
    size_t child = 2 * pos + 1;
    if (child >= n) break;
    if (child + 1 < n && better(h[child], h[child + 1])) ++child;  // the worse of the two children
    if (!better(c, h[child])) break;
    h[pos] = h[child];
    pos = child;
  }
  h[pos] = c;
}

void TopK::push(uint32_t item, float score) {
  if (k_ == 0) return;
  score = clean(score);
  const Cand c{score, item, key_of(item)};
  if (heap_.size() < k_) {
    heap_.push_back(c);
    std::push_heap(heap_.begin(), heap_.end(), better);  // front: the worst kept candidate
  } else if (better(c, heap_.front())) {
    replace_worst(c);
  }
}

void TopK::offer_ordered(uint32_t item, float score) {
  if (heap_.size() < k_) {
    push(item, score);
    return;
  }
  if (k_ == 0) return;
  const float b = heap_.front().score;
  if (score > b) {
    replace_worst(Cand{score, item, key_of(item)});
  } else if (score == b && ties_ == Ties::kRandom) {
    const Cand c{score, item, key_of(item)};
    if (better(c, heap_.front())) replace_worst(c);
  }
}

void TopK::push_row(const float* row, uint32_t n_items, std::span<const uint32_t> exclude) {
  select_multi(row, n_items, exclude, this, {});
}

void TopK::finish(std::vector<uint32_t>& items) {
  std::sort(heap_.begin(), heap_.end(), better);
  items.clear();
  for (const Cand& c : heap_) items.push_back(c.item);
  heap_.clear();
}

void TopK::finish(std::vector<ScoredItem>& items) {
  std::sort(heap_.begin(), heap_.end(), better);
  items.clear();
  for (const Cand& c : heap_) items.push_back({c.item, c.score});
  heap_.clear();
}

namespace {

// The 16 member bits of items [i, i + 16) from a bitset (one bit per item).
inline uint32_t member16(const uint64_t* bits, uint32_t i) {
  const uint32_t w = i >> 6, o = i & 63;
  uint64_t v = bits[w] >> o;
  if (o > 48) v |= bits[w + 1] << (64 - o);
  return uint32_t(v & 0xFFFF);
}

// Which of 16 scores may enter a selector: every one while it is not full, else those above (or, when an
// equal score may win on its tie key, at least at) the worst kept score. NaN never passes a full selector.
inline uint32_t enter_mask16(const TopK& s, const float* row) {
  if (s.k() == 0) return 0;
  if (!s.full()) return 0xFFFF;
  return pass_mask16(row, s.bound(), !s.equal_may_enter());
}

}  // namespace

void select_multi(const float* row, uint32_t n_items, std::span<const uint32_t> exclude, TopK* all,
                  std::span<const SelectorGroup> groups) {
  // Each group of 16 scores is tested against each selector's own bound (a selector of one domain is not held
  // back by another that is not full yet); only the items that may enter one of them are offered.
  constexpr size_t kMaxGroups = 64;
  check(groups.size() <= kMaxGroups, "select_multi: at most 64 selector groups");
  uint32_t gmask[kMaxGroups];
  size_t ex = 0;
  uint32_t start = 0;
  while (start < n_items) {
    while (ex < exclude.size() && exclude[ex] < start) ++ex;
    const uint32_t end = ex < exclude.size() ? std::min(exclude[ex], n_items) : n_items;
    uint32_t i = start;
    for (; i + 16 <= end; i += 16) {
      const uint32_t amask = all ? enter_mask16(*all, row + i) : 0;
      uint32_t any = amask;
      for (size_t g = 0; g < groups.size(); ++g) {
        const uint32_t members = member16(groups[g].members, i);
        gmask[g] = members ? enter_mask16(*groups[g].sel, row + i) & members : 0;
        any |= gmask[g];
      }
      for (uint32_t m = any; m != 0; m &= m - 1) {
        const uint32_t j = uint32_t(__builtin_ctz(m));
        const float v = clean(row[i + j]);
        if ((amask >> j) & 1) all->offer_ordered(i + j, v);
        for (size_t g = 0; g < groups.size(); ++g)
          if ((gmask[g] >> j) & 1) groups[g].sel->offer_ordered(i + j, v);
      }
    }
    for (; i < end; ++i) {
      const float v = clean(row[i]);
      if (all) all->offer_ordered(i, v);
      for (const SelectorGroup& g : groups)
        if ((g.members[i >> 6] >> (i & 63)) & 1) g.sel->offer_ordered(i, v);
    }
    start = end + 1;
  }
}

namespace {

// One bit per item: the items of `domain` (any when < 0) that `allowed` admits (all when empty). Empty when
// nothing is filtered.
std::vector<uint64_t> member_bits(uint32_t n_items, std::span<const uint16_t> item_domain, int domain,
                                  std::span<const uint8_t> allowed) {
  std::vector<uint64_t> bits;
  if (domain < 0 && allowed.empty()) return bits;
  bits.assign((size_t(n_items) + 63) / 64, 0);
  for (uint32_t i = 0; i < n_items; ++i)
    if ((domain < 0 || item_domain[i] == domain) && (allowed.empty() || allowed[i]))
      bits[i >> 6] |= uint64_t{1} << (i & 63);
  return bits;
}

// Offers a row to `sel`: every item not excluded, or only the members when a bitset is given.
void select_row(TopK& sel, const float* row, uint32_t n_items, std::span<const uint32_t> exclude,
                const std::vector<uint64_t>& members) {
  if (members.empty()) {
    sel.push_row(row, n_items, exclude);
    return;
  }
  const SelectorGroup g{&sel, members.data()};
  select_multi(row, n_items, exclude, nullptr, std::span<const SelectorGroup>(&g, 1));
}

}  // namespace

std::vector<ScoredItem> top_k(const float* scores, uint32_t n_items, size_t k,
                              std::span<const uint32_t> exclude, std::span<const uint16_t> item_domain,
                              int domain, Ties ties, uint64_t salt) {
  std::vector<ScoredItem> out;
  if (k == 0 || n_items == 0) return out;
  const bool filter_domain = domain >= 0 && !item_domain.empty();
  check(!filter_domain || item_domain.size() >= n_items,
        "top_k: item domains are given for " + std::to_string(item_domain.size()) + " items, but there are " +
            std::to_string(n_items));
  TopK sel;
  sel.reset(k, ties, salt);
  select_row(sel, scores, n_items, exclude,
             member_bits(n_items, item_domain, filter_domain ? domain : -1, {}));
  sel.finish(out);
  return out;
}

PessimisticRank pessimistic_rank(const float* row, uint32_t target, std::span<const uint32_t> others) {
  const float t = clean(row[target]);
  PessimisticRank r;
  for (uint32_t i : others) {
    const float s = clean(row[i]);
    r.rank += s >= t;
    r.tied += s == t;
  }
  return r;
}

double tied_fraction(const float* row, uint32_t n_items, std::span<const uint32_t> exclude, uint32_t target) {
  if (target >= n_items) return 0.0;
  const float t = row[target];
  size_t equal = 0, n_excluded = 0;
  uint32_t i = 0;
#if defined(__AVX512F__)
  const __m512 tv = _mm512_set1_ps(t);
  for (; i + 16 <= n_items; i += 16)
    equal += size_t(__builtin_popcount(_mm512_cmp_ps_mask(_mm512_loadu_ps(row + i), tv, _CMP_EQ_OQ)));
#endif
  for (; i < n_items; ++i) equal += row[i] == t;
  bool target_excluded = false;
  for (uint32_t e : exclude) {
    if (e >= n_items) break;
    ++n_excluded;
    equal -= row[e] == t;
    target_excluded |= e == target;
  }
  if (!target_excluded && t == t) --equal;  // the target itself (NaN never equals)
  const size_t candidates = n_items - n_excluded - (target_excluded ? 0 : 1);
  return candidates == 0 ? 0.0 : double(equal) / double(candidates);
}

std::vector<std::vector<ScoredItem>> recommend(const Recommender& model, std::span<const uint32_t> users,
                                               const RecommendOptions& opt) {
  check(opt.domain < 0 || !opt.item_domain.empty(), "recommend: a domain filter needs the item domains");
  for (uint32_t u : users)
    check(u < model.n_users(), "recommend: user index " + std::to_string(u) + " is out of range (model has " +
                                   std::to_string(model.n_users()) + " users)");
  const uint32_t n_items = model.n_items();
  check(opt.domain < 0 || opt.item_domain.size() >= n_items,
        "recommend: item domains are given for " + std::to_string(opt.item_domain.size()) +
            " items, but the model has " + std::to_string(n_items));
  check(opt.allowed.empty() || opt.allowed.size() >= n_items,
        "recommend: the allowed-item mask has " + std::to_string(opt.allowed.size()) +
            " entries, but the model has " + std::to_string(n_items) + " items");
  // Items never returned to anyone (other domains, not allowed): one member bitset for every user.
  const std::vector<uint64_t> members = member_bits(n_items, opt.item_domain, opt.domain, opt.allowed);
  std::vector<std::vector<ScoredItem>> out(users.size());
  const size_t block = 256;
  const int threads = resolve_threads(opt.threads);
  Matrix scores;
  for (size_t b = 0; b < users.size(); b += block) {
    const size_t e = std::min(users.size(), b + block);
    model.score(users.subspan(b, e - b), scores, threads);
    check(scores.rows == e - b && scores.cols == n_items, "recommend: model.score returned a " +
                                                              std::to_string(scores.rows) + " x " +
                                                              std::to_string(scores.cols) + " matrix");
    parallel_for(e - b, threads, 16, [&](size_t lo, size_t hi) {
      TopK sel;
      for (size_t r = lo; r < hi; ++r) {
        const uint32_t u = users[b + r];
        std::span<const uint32_t> ex;
        if (opt.exclude && u < opt.exclude->n_rows) ex = opt.exclude->row_indices(u);
        sel.reset(opt.k, opt.ties, opt.ties == Ties::kRandom ? tie_salt(opt.tie_seed, u) : 0);
        select_row(sel, scores.row(r), n_items, ex, members);
        sel.finish(out[b + r]);
      }
    });
  }
  return out;
}

}  // namespace xdrec
