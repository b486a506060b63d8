// Randomized truncated SVD of a sparse matrix (Halko, Martinsson and Tropp 2011, "Finding structure with
// randomness"): a Gaussian test matrix, power iterations with QR re-orthonormalisation, then an exact SVD
// of the small projected matrix. Internal to the text module (tfidf uses it; tests check it).
#pragma once

#include <cstdint>
#include <vector>

#include "xdrec/common.h"

namespace xdrec::text {

struct RsvdOptions {
  size_t rank = 256;       // k: number of singular triplets wanted
  size_t oversample = 10;  // extra random directions (l = k + oversample, capped by the matrix size)
  int power_iters = 2;     // passes of (A A^T) that sharpen the spectrum before the projection
  uint64_t seed = 42;      // seeds the Gaussian test matrix (generated in one fixed sequence)
  int threads = 1;         // sparse products run over rows in parallel; the result does not depend on it
  bool compute_u = true;   // false: leave RsvdResult::u empty (saves memory when only V is needed)
};

struct RsvdResult {
  std::vector<double> singular_values;  // min(k, rows, cols) values, descending
  Matrix u;                             // rows x r left singular vectors (columns orthonormal); 0 x 0
                                        // when compute_u is false
  Matrix v;                             // cols x r right singular vectors (columns orthonormal)
};

// A ~= U diag(s) V^T. Each component's sign is fixed so that the entry of largest magnitude in its column
// of V is positive. Deterministic for a given seed and independent of the thread count (every product is
// computed row by row in a fixed order; the dense factorisations run on one thread).
RsvdResult randomized_svd(const Csr& a, const RsvdOptions& opt);

}  // namespace xdrec::text
