// Compressed item vectors for retrieval. A dot-product model's items (score = <user, item> + bias) are kept
// as short codes and searched by asymmetric distance computation: the query stays float, each item is read
// as its code, and the score is a table look-up per byte. Two quantisers:
//   sq8   one byte per dimension: a per-dimension range [lo, hi] cut into 255 steps
//   pq    product quantisation: the dimensions cut into m sub-vectors (lengths differing by at most one when
//         m does not divide the length), each replaced by the index of its
//         nearest centroid among 2^bits (k-means per sub-space, seeded); m bytes per item
// Optionally the best `rerank` candidates of the codes are scored again with the float vectors. Item biases
// stay float. Used by `xdrec recommend --index` and `xdrec serve --retrieval`.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/rank.h"

namespace xdrec {

class Recommender;

// "sq8[:rerank=N]" or "pq[:m=8,bits=8,iters=20,rerank=0,seed=42]"; unknown kinds and keys and values out of
// range are errors.
struct CodesSpec {
  std::string kind;       // "sq8" or "pq"
  int m = 8;              // pq: sub-vectors (at most the vector length)
  int bits = 8;           // pq: log2 of the centroids per sub-space, 1..8
  int iters = 20;         // pq: k-means iterations (fewer when no assignment changes)
  int rerank = 0;         // candidates re-scored with the float vectors (0: none; at least k when set)
  int seed = 42;          // pq: k-means initialisation
  std::string canonical;  // "kind:key=value,..." with every parameter (set by parse)
  static CodesSpec parse(const std::string& text);
  const std::string& str() const { return canonical; }
};

// Whether a retrieval / index name is one of the codes ("sq8", "pq", "pq:...").
bool is_codes_spec(const std::string& text);

class ItemCodes {
 public:
  // Trains the quantiser on `items` (n x f; bias: n entries or empty) and encodes them. Deterministic for a
  // spec (seed) and independent of `threads`. Error for an empty matrix, non-finite values, or m > f.
  static ItemCodes build(const Matrix& items, std::span<const float> bias, const CodesSpec& spec,
                         int threads = 1);

  const CodesSpec& spec() const { return spec_; }
  uint32_t n_items() const { return uint32_t(bias_.size()); }
  size_t dim() const { return f_; }
  size_t centroids() const { return k_; }  // pq: per sub-space (2^bits, or fewer items)
  size_t code_size() const;                // bytes per item: f (sq8) or m (pq)

  // Appends an item, encoded with the trained quantiser (the codebooks do not change).
  void add(const float* v, float bias);
  // The vector the codes stand for (what scores() scores against).
  void decode(uint32_t i, float* out) const;
  // Approximate scores <q, decode(i)> + bias[i] of every item by asymmetric distance computation; `out`
  // has n_items() entries.
  void scores(const float* q, float* out) const;

  size_t code_bytes() const { return codes_.size(); }  // the item codes alone
  size_t bytes() const;                                // codes, codebooks or ranges, and biases

 private:
  void encode(const float* v, uint8_t* code) const;
  size_t sub_begin(size_t s) const;                            // pq: first dimension of sub-vector s
  void subvector(const float* v, size_t s, float* out) const;  // pq: sub-vector s, zero-padded to sub_
  CodesSpec spec_;
  size_t f_ = 0, k_ = 0, sub_ = 0;
  std::vector<float> lo_, step_;  // sq8: per dimension
  std::vector<float> books_;      // pq: m x k x sub_
  std::vector<uint8_t> codes_;    // n x code_size()
  std::vector<float> bias_;
};

// The exact scores <q, items row> + bias of every item (a brute-force float scan, the reference the codes
// are measured against); `out` has items.rows entries.
void exact_scores(const Matrix& items, std::span<const float> bias, const float* q, float* out);

// The top-k of one query through the codes: every item scored by ADC, the best max(k, rerank) (when rerank
// > 0) scored again as <q, items row> + bias with the float vectors, then the best k. Exclusion and the
// domain filter and the tie rule as in top_k (rank.h).
std::vector<ScoredItem> codes_top_k(const ItemCodes& codes, const float* query, size_t k,
                                    std::span<const uint32_t> exclude, std::span<const uint16_t> item_domain,
                                    int domain, const Matrix& items, std::span<const float> bias,
                                    Ties ties = Ties::kLowerIndex, uint64_t salt = 0);

// recommend() (rank.h) through the codes: the model's user vectors are the queries and its item vectors
// (item_vectors) re-rank. Error when the model has no dot-product form or its item count differs.
std::vector<std::vector<ScoredItem>> recommend_codes(const Recommender& model, const ItemCodes& codes,
                                                     std::span<const uint32_t> users,
                                                     const RecommendOptions& opt);

}  // namespace xdrec
