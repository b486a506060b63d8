// Partial selection of the best k (score, item) pairs, used by the evaluator. Order: higher score first, then
// lower item index (the same total order as xdrec::top_k). NaN scores rank below every number.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace xdrec::eval_detail {

struct Cand {
  float score;
  uint32_t item;
};

inline bool better(const Cand& a, const Cand& b) {
  return a.score > b.score || (a.score == b.score && a.item < b.item);
}

class TopKSelector {
 public:
  void reset(size_t k) {
    k_ = k;
    heap_.clear();
    heap_.reserve(k + 1);
  }

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

  // Items [begin, end) of a score row, all candidates. Callers feed items in increasing index order across
  // calls, so that a later item never beats an equal score already kept (it has a higher index).
  void push_range_ordered(const float* row, uint32_t begin, uint32_t end) {
    uint32_t i = begin;
    for (; i < end && heap_.size() < k_; ++i) push(i, row[i]);
    if (i >= end || k_ == 0) return;
    float threshold = heap_.front().score;
    for (; i < end; ++i) {
      const float s = row[i];
      if (s > threshold) {  // false for NaN; an equal score loses to the kept lower index
        replace_worst(Cand{s, i});
        threshold = heap_.front().score;
      }
    }
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

  // The items of sorted `items` except those in sorted `exclude`.
  void push_subset_except(const float* row, std::span<const uint32_t> items,
                          std::span<const uint32_t> exclude) {
    size_t ex = 0;
    for (uint32_t i : items) {
      while (ex < exclude.size() && exclude[ex] < i) ++ex;
      if (ex < exclude.size() && exclude[ex] == i) continue;
      const float s = row[i];
      if (heap_.size() < k_ || s > heap_.front().score) push(i, s);
    }
  }

  // Items best first.
  void finish(std::vector<uint32_t>& out) {
    std::sort(heap_.begin(), heap_.end(), better);
    out.clear();
    for (const Cand& c : heap_) out.push_back(c.item);
  }

 private:
  void replace_worst(const Cand& c) {
    std::pop_heap(heap_.begin(), heap_.end(), better);
    heap_.back() = c;
    std::push_heap(heap_.begin(), heap_.end(), better);
  }

  size_t k_ = 0;
  std::vector<Cand> heap_;
};

}  // namespace xdrec::eval_detail
