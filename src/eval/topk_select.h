// Partial selection of the best k (score, item) pairs, used by the evaluator. Order: higher score first, then
// lower item index (the same total order as xdrec::top_k). NaN scores rank below every number.
//
// The ordered scans feed items in increasing index order, so a later item never beats an equal score that
// is already kept (it has the higher index) and a candidate only needs `score > worst kept score`. Once the
// heap is full, the scans test 16 scores at a time against that bound and skip the whole group when none
// passes, which is the common case: the scan costs little more than reading the score row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <span>
#include <vector>

namespace xdrec::eval_detail {

struct Cand {
  float score;
  uint32_t item;
};

struct Better {
  bool operator()(const Cand& a, const Cand& b) const {
    return a.score > b.score || (a.score == b.score && a.item < b.item);
  }
};
inline constexpr Better better{};

// Bit j set when s[j] > bound, for the 16 scores at `s` (NaN never is).
inline uint32_t above_mask16(const float* s, float bound) {
#if defined(__AVX__)
  const __m256 b = _mm256_set1_ps(bound);
  const uint32_t lo =
      static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s), b, _CMP_GT_OQ)));
  const uint32_t hi =
      static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + 8), b, _CMP_GT_OQ)));
  return lo | (hi << 8);
#else
  uint32_t m = 0;
  for (uint32_t j = 0; j < 16; ++j) m |= static_cast<uint32_t>(s[j] > bound) << j;
  return m;
#endif
}

class TopKSelector {
 public:
  void reset(size_t k) {
    k_ = k;
    heap_.clear();
    heap_.reserve(k + 1);
  }
  bool full() const { return heap_.size() >= k_; }
  // Score a new candidate must exceed once full (items offered in increasing order).
  float bound() const { return heap_.empty() ? -INFINITY : heap_.front().score; }

  // Any order of items.
  void push(uint32_t item, float score) {
    if (std::isnan(score)) score = -INFINITY;
    const Cand c{score, item};
    if (heap_.size() < k_) {
      heap_.push_back(c);
      std::push_heap(heap_.begin(), heap_.end(), better);  // front: the worst kept candidate
    } else if (k_ > 0 && better(c, heap_.front())) {
      replace_worst(c);
    }
  }

  // Items in increasing index order across calls.
  void offer_ordered(uint32_t item, float score) {
    if (heap_.size() < k_)
      push(item, score);
    else if (k_ > 0 && score > heap_.front().score)  // false for NaN
      replace_worst(Cand{score, item});
  }

  // All items of `row` (n_items) except the sorted `exclude`, in index order.
  void push_all_except(const float* row, uint32_t n_items, std::span<const uint32_t> exclude) {
    uint32_t start = 0;
    for (uint32_t e : exclude) {
      if (e >= n_items) break;
      if (e < start) continue;
      push_range_ordered(row, start, e);
      start = e + 1;
    }
    if (start < n_items) push_range_ordered(row, start, n_items);
  }

  // Items [begin, end) of a score row.
  void push_range_ordered(const float* row, uint32_t begin, uint32_t end) {
    uint32_t i = begin;
    for (; i < end && !full(); ++i) push(i, row[i]);
    if (k_ == 0) return;
    float b = bound();
    for (; i + 16 <= end; i += 16) {
      for (uint32_t m = above_mask16(row + i, b); m != 0; m &= m - 1) {
        const uint32_t j = i + static_cast<uint32_t>(__builtin_ctz(m));  // increasing order
        if (row[j] > b) {  // the bound may have risen since the mask was taken
          replace_worst(Cand{row[j], j});
          b = bound();
        }
      }
    }
    for (; i < end; ++i)
      if (row[i] > b) {
        replace_worst(Cand{row[i], i});
        b = bound();
      }
  }

  // Items best first.
  void finish(std::vector<uint32_t>& out) {
    std::sort(heap_.begin(), heap_.end(), better);
    out.clear();
    for (const Cand& c : heap_) out.push_back(c.item);
  }

 private:
  // Replaces the worst kept candidate (the front) by a better one and restores the heap (sift down).
  void replace_worst(const Cand& c) {
    Cand* h = heap_.data();
    const size_t n = heap_.size();
    size_t pos = 0;
    for (;;) {
      size_t child = 2 * pos + 1;
      if (child >= n) break;
      if (child + 1 < n && better(h[child], h[child + 1])) ++child;  // the worse of the two children
      if (!better(c, h[child])) break;                               // c is worse or equal: stays here
      h[pos] = h[child];
      pos = child;
    }
    h[pos] = c;
  }

  size_t k_ = 0;
  std::vector<Cand> heap_;
};

// A domain's selector and membership bitset (one bit per item: the lookup stays in cache).
struct DomainSelector {
  TopKSelector* sel;
  const uint64_t* members;
};

namespace detail {

// Lowest bound over the selectors, -inf while any of them is not yet full (then nothing can be skipped).
inline float lowest_bound(const TopKSelector& all, std::span<const DomainSelector> domains) {
  float b = all.full() ? all.bound() : -INFINITY;
  for (const DomainSelector& d : domains) b = std::min(b, d.sel->full() ? d.sel->bound() : -INFINITY);
  return b;
}

inline void offer_all_and_domains(const float* row, uint32_t i, TopKSelector& all,
                                  std::span<const DomainSelector> domains) {
  all.offer_ordered(i, row[i]);
  for (const DomainSelector& d : domains)
    if ((d.members[i >> 6] >> (i & 63)) & 1) d.sel->offer_ordered(i, row[i]);
}

// Offers the items of [begin, end) set in `mask` (every item when `lo` is -inf) and returns the new lowest
// bound. Out of line so that the skipping loop keeps its state in registers.
[[gnu::noinline]] inline float offer_group(const float* row, uint32_t begin, uint32_t end, uint32_t mask,
                                           float lo, TopKSelector& all,
                                           std::span<const DomainSelector> domains) {
  if (lo == -INFINITY) {
    for (uint32_t j = begin; j < end; ++j) offer_all_and_domains(row, j, all, domains);
  } else {
    for (; mask != 0; mask &= mask - 1)
      offer_all_and_domains(row, begin + static_cast<uint32_t>(__builtin_ctz(mask)), all, domains);
  }
  return lowest_bound(all, domains);
}

}  // namespace detail

// Overall top-k and per-domain top-k of one row in one pass over every item except the sorted `exclude`:
// each item is offered to `all` and to the selector of each domain in `domains` that contains it. Groups of
// 16 scores are skipped when none exceeds the lowest bound of all selectors. Every selector needs k > 0.
// (Measured against one pass per selector, tiled or not, this single pass was the fastest.)
inline void select_all_and_domains(const float* row, uint32_t n_items, std::span<const uint32_t> exclude,
                                   TopKSelector& all, std::span<const DomainSelector> domains) {
  float lo = detail::lowest_bound(all, domains);
  size_t ex = 0;
  uint32_t start = 0;
  while (start < n_items) {
    // The next excluded item at or after `start` ends this segment.
    while (ex < exclude.size() && exclude[ex] < start) ++ex;
    const uint32_t end = ex < exclude.size() ? std::min(exclude[ex], n_items) : n_items;
    uint32_t i = start;
    for (; i + 16 <= end; i += 16) {
      if (lo == -INFINITY) {
        lo = detail::offer_group(row, i, i + 16, 0, lo, all, domains);
        continue;
      }
      const uint32_t m = above_mask16(row + i, lo);
      if (m != 0) lo = detail::offer_group(row, i, i + 16, m, lo, all, domains);
    }
    if (i < end) lo = detail::offer_group(row, i, end, 0, -INFINITY, all, domains);
    start = end + 1;
  }
}

}  // namespace xdrec::eval_detail
