// Shared kernels of the matrix-factorisation models (iALS, BPR-MF): aligned factor storage, the Gram matrix,
// the per-row conjugate-gradient and exact (Cholesky) solves of implicit ALS, the BPR SGD step and GEMM
// scoring. The hot loops are written with AVX2/FMA intrinsics over rows padded to a multiple of 8 floats, and
// are instantiated for every vector count 1..16 (factors up to 128) so that a row lives in registers;
// longer rows use the same code with a run-time count.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "xdrec/common.h"

#if !defined(__AVX2__) || !defined(__FMA__)
#error "mf_kernels.h needs AVX2 and FMA (the build adds -mavx2 -mfma or -march=native)"
#endif

namespace xdrec::mf {

// ---- Storage ----------------------------------------------------------------------------------------------

template <class T, size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) {}
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  T* allocate(size_t n) {
    if (n == 0) return nullptr;
    void* p = std::aligned_alloc(Align, (n * sizeof(T) + Align - 1) / Align * Align);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const AlignedAllocator&) const { return true; }
  bool operator!=(const AlignedAllocator&) const { return false; }
};

using AlignedFloats = std::vector<float, AlignedAllocator<float>>;

// Number of floats a row of `f` factors occupies (a multiple of 8; the padding is kept at zero).
inline size_t padded_width(size_t f) {
  return (f + 7) / 8 * 8;
}

// Dense rows of factors, 64-byte aligned, each row padded with zeros to `ld` floats.
struct Factors {
  size_t rows = 0, f = 0, ld = 0;
  AlignedFloats data;

  void resize(size_t r, size_t factors) {
    rows = r;
    f = factors;
    ld = padded_width(factors);
    data.assign(rows * ld, 0.0f);
  }
  float* row(size_t i) { return data.data() + i * ld; }
  const float* row(size_t i) const { return data.data() + i * ld; }
  // Appends a zero row (fold-in of a new user).
  void append_row() {
    data.resize((rows + 1) * ld, 0.0f);
    ++rows;
  }
  // Entries drawn from N(0, scale^2); row i uses its own stream of (seed, stream_base + i) so the result does
  // not depend on how rows are divided among threads.
  void init_normal(uint64_t seed, uint64_t stream_base, float scale, int threads = 1) {
    parallel_for(rows, threads, 1024, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) {
        Rng rng(seed, stream_base + i);
        float* x = row(i);
        for (size_t k = 0; k < f; ++k) x[k] = scale * rng.normal();
      }
    });
  }
  Matrix to_matrix() const {
    Matrix m(rows, f);
    for (size_t i = 0; i < rows; ++i) std::copy(row(i), row(i) + f, m.row(i));
    return m;
  }
  void from_matrix(const Matrix& m) {
    resize(m.rows, m.cols);
    for (size_t i = 0; i < rows; ++i) std::copy(m.row(i), m.row(i) + f, row(i));
  }
};

// ---- Small vector helpers (n a multiple of 8, pointers to padded rows) ------------------------------------

// Sum of the 8 lanes, returned in every lane. Every lane gets bitwise the same value (the additions pair the
// same operands in each lane, and float addition is commutative).
inline __m256 hsum_bcast(__m256 v) {
  v = _mm256_add_ps(v, _mm256_permute2f128_ps(v, v, 1));
  v = _mm256_add_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
  v = _mm256_add_ps(v, _mm256_shuffle_ps(v, v, 0xB1));
  return v;
}

inline float dot(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t k = 0;
  for (; k + 16 <= n; k += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
  }
  for (; k < n; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
  return _mm256_cvtss_f32(hsum_bcast(_mm256_add_ps(s0, s1)));
}

// ---- Compile-time or run-time vector count ----------------------------------------------------------------

// NV > 0: a row has exactly NV vectors of 8 floats (fully unrolled, kept in registers where they fit).
// NV == 0: the count is taken from the run-time argument.
constexpr int kMaxStaticVectors = 16;
constexpr int kMaxFactors = 1024;

template <int NV>
struct VecCount {
  static constexpr int kArr = NV > 0 ? NV : kMaxFactors / 8;
  int n;
  explicit VecCount(int runtime) : n(NV > 0 ? NV : runtime) {}
};

// Calls fn.template operator()<NV>() with NV = nv when 1 <= nv <= 16, else with NV = 0.
template <class Fn>
decltype(auto) dispatch_width(int nv, Fn&& fn) {
  switch (nv) {
#define XDREC_MF_CASE(N) \
  case N:                \
    return fn.template operator()<N>();
    XDREC_MF_CASE(1)
    XDREC_MF_CASE(2)
    XDREC_MF_CASE(3)
    XDREC_MF_CASE(4)
    XDREC_MF_CASE(5)
    XDREC_MF_CASE(6)
    XDREC_MF_CASE(7)
    XDREC_MF_CASE(8)
    XDREC_MF_CASE(9)
    XDREC_MF_CASE(10)
    XDREC_MF_CASE(11)
    XDREC_MF_CASE(12)
    XDREC_MF_CASE(13)
    XDREC_MF_CASE(14)
    XDREC_MF_CASE(15)
    XDREC_MF_CASE(16)
#undef XDREC_MF_CASE
    default:
      return fn.template operator()<0>();
  }
}

// ---- Gram matrix ------------------------------------------------------------------------------------------

// G = Y^T Y (ld x ld, row-major, padding rows/columns zero), computed with single-threaded OpenBLAS GEMMs on
// fixed blocks of rows whose partial sums are added in block order: the result is bitwise the same for any
// thread count.
void gram(const Factors& y, AlignedFloats& g, int threads);
// The two halves of gram(), for a Gram matrix whose blocks are computed in different processes: the rows are
// cut into gram_blocks() fixed blocks of kGramBlock rows; gram_partials writes the partial sums Y_b^T Y_b of
// blocks [b_lo, b_hi) to partial + b * ld * ld (other blocks untouched), and gram_sum adds all nb partial
// sums in block order into g (ld x ld). Together they give bitwise what gram() gives.
constexpr size_t kGramBlock = 4096;
inline size_t gram_blocks(size_t rows) {
  return (rows + kGramBlock - 1) / kGramBlock;
}
void gram_partials(const Factors& y, size_t b_lo, size_t b_hi, float* partial, int threads);
void gram_sum(const float* partial, size_t nb, size_t ld, AlignedFloats& g);

// Scores = U[users] * Y^T into out (users.size() x y.rows), plus bias[j] when bias is non-null, on `threads`
// threads over blocks of users (single-threaded OpenBLAS GEMM per block).
void gemm_scores(const Factors& u, std::span<const uint32_t> users, const Factors& y, const float* bias,
                 Matrix& out, int threads);

// ---- iALS per-row solves ----------------------------------------------------------------------------------
//
// For a row with entries (j, r_j) the normal equations are
//   (G + reg*I + sum_j w_j y_j y_j^T) x = sum_j c_j p_j y_j,   w_j = alpha*|r_j|, c_j = 1 + w_j,
// with preference p_j = 1 for r_j > 0 and 0 for r_j < 0; entries with r_j == 0 are skipped.

struct IalsRow {
  const uint32_t* idx;
  const float* val;
  size_t n;
  // End of the index array the row lies in: the first pass prefetches the factor rows of entries up to this
  // point, so the next rows' first entries are already in cache when their solve starts. Null: this row only.
  const uint32_t* prefetch_end = nullptr;
};

// Weight w_j and right-hand-side coefficient c_j*p_j of one entry.
inline void ials_entry(float r, float alpha, float& w, float& b) {
  w = alpha * std::fabs(r);
  b = r > 0 ? 1.0f + w : 0.0f;
}

// Scratch for one CG solve: 3 padded rows.
struct CgScratch {
  AlignedFloats buf;
  explicit CgScratch(size_t ld) : buf(3 * ld) {}
  float* r() { return buf.data(); }
  float* p() { return buf.data() + buf.size() / 3; }
  float* ap() { return buf.data() + 2 * buf.size() / 3; }
};

namespace detail {

// acc[v] = (G + reg I) * x  for a row of NV vectors (G symmetric: sum over k of x[k] * G[k, :]).
template <int NV>
inline void gram_matvec(const float* g, float reg, const float* x, VecCount<NV> nv, size_t ld, __m256* acc) {
  const __m256 vreg = _mm256_set1_ps(reg);
  __m256 acc2[VecCount<NV>::kArr];
#pragma GCC unroll 16
  for (int v = 0; v < nv.n; ++v) {
    acc[v] = _mm256_mul_ps(vreg, _mm256_load_ps(x + 8 * v));
    acc2[v] = _mm256_setzero_ps();
  }
  const size_t f = size_t(nv.n) * 8;
  // Two accumulator sets halve the FMA dependency chains.
  size_t k = 0;
  for (; k + 2 <= f; k += 2) {
    const __m256 a0 = _mm256_broadcast_ss(x + k), a1 = _mm256_broadcast_ss(x + k + 1);
    const float* g0 = g + k * ld;
    const float* g1 = g0 + ld;
#pragma GCC unroll 16
    for (int v = 0; v < nv.n; ++v) {
      acc[v] = _mm256_fmadd_ps(a0, _mm256_load_ps(g0 + 8 * v), acc[v]);
      acc2[v] = _mm256_fmadd_ps(a1, _mm256_load_ps(g1 + 8 * v), acc2[v]);
    }
  }
#pragma GCC unroll 16
  for (int v = 0; v < nv.n; ++v) acc[v] = _mm256_add_ps(acc[v], acc2[v]);
}

// One pass over the row's entries with d_j = y_j . x; the dot product and the update share the loads of y_j:
//   mode 0: acc += (b_j - w_j d_j) y_j   (the entries' part of the residual b - A x)
//   mode 1: acc += w_j d_j y_j           (the entries' part of A x)
template <int NV, int Mode>
inline void entry_pass(const float* yb, size_t ld, const IalsRow& row, float alpha, const float* x,
                       VecCount<NV> nv, __m256* acc) {
  // The first pass gathers the other side's rows from memory in random order: prefetch far enough ahead
  // (tuned on the benchmark matrix); later passes find them in L1/L2.
  constexpr size_t kPrefetch = 24;
  const uint32_t* prefetch_end = row.prefetch_end ? row.prefetch_end : row.idx + row.n;
  for (size_t e = 0; e < row.n; ++e) {
    if constexpr (Mode == 0) {
      if (row.idx + e + kPrefetch < prefetch_end) {
        const char* q = reinterpret_cast<const char*>(yb + size_t(row.idx[e + kPrefetch]) * ld);
        for (size_t off = 0; off < ld * sizeof(float); off += 64) _mm_prefetch(q + off, _MM_HINT_T0);
      }
    }
    const float r = row.val[e];
    if (r == 0.0f) continue;
    float w, b;
    ials_entry(r, alpha, w, b);
    const float* y = yb + size_t(row.idx[e]) * ld;
    __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int v = 0; v + 1 < nv.n; v += 2) {
      d0 = _mm256_fmadd_ps(_mm256_load_ps(y + 8 * v), _mm256_load_ps(x + 8 * v), d0);
      d1 = _mm256_fmadd_ps(_mm256_load_ps(y + 8 * v + 8), _mm256_load_ps(x + 8 * v + 8), d1);
    }
    if (nv.n & 1) {
      const int v = nv.n - 1;
      d0 = _mm256_fmadd_ps(_mm256_load_ps(y + 8 * v), _mm256_load_ps(x + 8 * v), d0);
    }
    const __m256 d = hsum_bcast(_mm256_add_ps(d0, d1));
    __m256 coef;
    if constexpr (Mode == 0) {
      coef = _mm256_fnmadd_ps(_mm256_set1_ps(w), d, _mm256_set1_ps(b));
    } else {
      coef = _mm256_mul_ps(_mm256_set1_ps(w), d);
    }
#pragma GCC unroll 16
    for (int v = 0; v < nv.n; ++v) acc[v] = _mm256_fmadd_ps(coef, _mm256_load_ps(y + 8 * v), acc[v]);
  }
}

template <int NV>
inline float dot_n(const float* a, const float* b, VecCount<NV> nv) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int v = 0; v + 1 < nv.n; v += 2) {
    s0 = _mm256_fmadd_ps(_mm256_load_ps(a + 8 * v), _mm256_load_ps(b + 8 * v), s0);
    s1 = _mm256_fmadd_ps(_mm256_load_ps(a + 8 * v + 8), _mm256_load_ps(b + 8 * v + 8), s1);
  }
  if (nv.n & 1) {
    const int v = nv.n - 1;
    s0 = _mm256_fmadd_ps(_mm256_load_ps(a + 8 * v), _mm256_load_ps(b + 8 * v), s0);
  }
  return _mm256_cvtss_f32(hsum_bcast(_mm256_add_ps(s0, s1)));
}

template <int NV>
void cg_solve(const float* g, float reg, const float* yb, size_t ld, const IalsRow& row, float alpha,
              int steps, float* x, CgScratch& s, int nv_runtime) {
  const VecCount<NV> nv(nv_runtime);
  float* r = s.r();
  float* p = s.p();
  float* ap = s.ap();
  __m256 acc[VecCount<NV>::kArr];

  // r = b - A x, starting from the current x (warm start).
  gram_matvec<NV>(g, reg, x, nv, ld, acc);
#pragma GCC unroll 16
  for (int v = 0; v < nv.n; ++v) acc[v] = _mm256_sub_ps(_mm256_setzero_ps(), acc[v]);
  entry_pass<NV, 0>(yb, ld, row, alpha, x, nv, acc);
#pragma GCC unroll 16
  for (int v = 0; v < nv.n; ++v) {
    _mm256_store_ps(r + 8 * v, acc[v]);
    _mm256_store_ps(p + 8 * v, acc[v]);
  }
  float rs = dot_n<NV>(r, r, nv);
  for (int it = 0; it < steps; ++it) {
    if (!(rs > 1e-20f)) break;
    gram_matvec<NV>(g, reg, p, nv, ld, acc);
    entry_pass<NV, 1>(yb, ld, row, alpha, p, nv, acc);
#pragma GCC unroll 16
    for (int v = 0; v < nv.n; ++v) _mm256_store_ps(ap + 8 * v, acc[v]);
    const float pap = dot_n<NV>(p, ap, nv);
    if (!(pap > 0.0f)) break;
    const __m256 a = _mm256_set1_ps(rs / pap);
    __m256 s0 = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int v = 0; v < nv.n; ++v) {
      const __m256 pv = _mm256_load_ps(p + 8 * v);
      _mm256_store_ps(x + 8 * v, _mm256_fmadd_ps(a, pv, _mm256_load_ps(x + 8 * v)));
      const __m256 rv = _mm256_fnmadd_ps(a, acc[v], _mm256_load_ps(r + 8 * v));
      _mm256_store_ps(r + 8 * v, rv);
      s0 = _mm256_fmadd_ps(rv, rv, s0);
    }
    const float rs_new = _mm256_cvtss_f32(hsum_bcast(s0));
    const __m256 beta = _mm256_set1_ps(rs_new / rs);
#pragma GCC unroll 16
    for (int v = 0; v < nv.n; ++v)
      _mm256_store_ps(p + 8 * v, _mm256_fmadd_ps(beta, _mm256_load_ps(p + 8 * v), _mm256_load_ps(r + 8 * v)));
    rs = rs_new;
  }
}

}  // namespace detail

// Runs `steps` conjugate-gradient steps on the row's normal equations, starting from (and updating) x.
// g: the Gram matrix of the other side (ld x ld); yb: the other side's padded factor rows.
inline void ials_cg_solve(const float* g, float reg, const float* yb, size_t ld, const IalsRow& row,
                          float alpha, int steps, float* x, CgScratch& scratch) {
  const int nv = int(ld / 8);
  dispatch_width(nv,
                 [&]<int NV>() { detail::cg_solve<NV>(g, reg, yb, ld, row, alpha, steps, x, scratch, nv); });
}

// Scratch for one exact solve (double precision): the f x f system and the right-hand side.
struct CholScratch {
  std::vector<double> a, b;
  explicit CholScratch(size_t f) : a(f * f), b(f) {}
};

// Solves the row's normal equations exactly (Cholesky in double precision) into x (first f entries).
// Throws Error when the system is not positive definite (reg = 0 with too few entries).
inline void ials_exact_solve(const float* g, float reg, const float* yb, size_t ld, size_t f,
                             const IalsRow& row, float alpha, float* x, CholScratch& s) {
  double* a = s.a.data();
  double* b = s.b.data();
  for (size_t i = 0; i < f; ++i) {
    for (size_t j = 0; j < f; ++j) a[i * f + j] = g[i * ld + j];
    a[i * f + i] += reg;
    b[i] = 0.0;
  }
  for (size_t e = 0; e < row.n; ++e) {
    if (row.val[e] == 0.0f) continue;
    float w, c;
    ials_entry(row.val[e], alpha, w, c);
    const float* y = yb + size_t(row.idx[e]) * ld;
    for (size_t i = 0; i < f; ++i) {
      const double wy = double(w) * y[i];
      double* ai = a + i * f;
      for (size_t j = 0; j <= i; ++j) ai[j] += wy * y[j];
      b[i] += double(c) * y[i];
    }
  }
  // Cholesky factorisation A = L L^T in the lower triangle.
  for (size_t j = 0; j < f; ++j) {
    double d = a[j * f + j];
    for (size_t k = 0; k < j; ++k) d -= a[j * f + k] * a[j * f + k];
    if (!(d > 0.0))
      throw Error("iALS exact solve: the normal equations are not positive definite (use reg > 0)");
    d = std::sqrt(d);
    a[j * f + j] = d;
    for (size_t i = j + 1; i < f; ++i) {
      double v = a[i * f + j];
      for (size_t k = 0; k < j; ++k) v -= a[i * f + k] * a[j * f + k];
      a[i * f + j] = v / d;
    }
  }
  for (size_t i = 0; i < f; ++i) {  // L z = b
    double v = b[i];
    for (size_t k = 0; k < i; ++k) v -= a[i * f + k] * b[k];
    b[i] = v / a[i * f + i];
  }
  for (size_t i = f; i-- > 0;) {  // L^T x = z
    double v = b[i];
    for (size_t k = i + 1; k < f; ++k) v -= a[k * f + i] * b[k];
    b[i] = v / a[i * f + i];
  }
  for (size_t i = 0; i < f; ++i) x[i] = float(b[i]);
  for (size_t i = f; i < ld; ++i) x[i] = 0.0f;
}

// ---- BPR SGD step -----------------------------------------------------------------------------------------

namespace detail {
template <int NV>
inline float bpr_step(float* x, float* yi, float* yj, float* bi, float* bj, float lr, float reg,
                      bool update_items, int nv_runtime) {
  const VecCount<NV> nv(nv_runtime);
  __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int v = 0; v + 1 < nv.n; v += 2) {
    const __m256 xa = _mm256_load_ps(x + 8 * v), xb = _mm256_load_ps(x + 8 * v + 8);
    d0 = _mm256_fmadd_ps(xa, _mm256_sub_ps(_mm256_load_ps(yi + 8 * v), _mm256_load_ps(yj + 8 * v)), d0);
    d1 = _mm256_fmadd_ps(xb, _mm256_sub_ps(_mm256_load_ps(yi + 8 * v + 8), _mm256_load_ps(yj + 8 * v + 8)),
                         d1);
  }
  if (nv.n & 1) {
    const int v = nv.n - 1;
    d0 = _mm256_fmadd_ps(_mm256_load_ps(x + 8 * v),
                         _mm256_sub_ps(_mm256_load_ps(yi + 8 * v), _mm256_load_ps(yj + 8 * v)), d0);
  }
  float z = _mm256_cvtss_f32(hsum_bcast(_mm256_add_ps(d0, d1)));
  if (bi) z += *bi - *bj;
  // g = d/dz log sigmoid(z) = sigmoid(-z); clamp the exponent to stay finite.
  const float g = 1.0f / (1.0f + std::exp(std::clamp(z, -30.0f, 30.0f)));
  const __m256 vg = _mm256_set1_ps(g * lr);
  const __m256 decay = _mm256_set1_ps(1.0f - lr * reg);
#pragma GCC unroll 16
  for (int v = 0; v < nv.n; ++v) {
    const __m256 xv = _mm256_load_ps(x + 8 * v);
    const __m256 yiv = _mm256_load_ps(yi + 8 * v), yjv = _mm256_load_ps(yj + 8 * v);
    // x += lr * (g (yi - yj) - reg x); yi += lr * (g x - reg yi); yj += lr * (-g x - reg yj)
    _mm256_store_ps(x + 8 * v, _mm256_fmadd_ps(vg, _mm256_sub_ps(yiv, yjv), _mm256_mul_ps(decay, xv)));
    if (update_items) {
      _mm256_store_ps(yi + 8 * v, _mm256_fmadd_ps(vg, xv, _mm256_mul_ps(decay, yiv)));
      _mm256_store_ps(yj + 8 * v, _mm256_fnmadd_ps(vg, xv, _mm256_mul_ps(decay, yjv)));
    }
  }
  if (bi && update_items) {
    *bi += lr * (g - reg * *bi);
    *bj += lr * (-g - reg * *bj);
  }
  return z;
}
}  // namespace detail

}  // namespace xdrec::mf
