// Dense float32 kernels for transformer encoders: a GEMM against pre-packed weights (float32 or int8 with one
// scale per output channel) with fused epilogues (bias, bias + exact GELU, bias + residual), layer norm,
// softmax, and vectorised exp / erf / GELU.
//
// Every output element is computed by the same sequence of floating-point operations whatever the number of
// threads, the tiling or the other rows in the batch, so results are deterministic and independent of the
// thread count and of the batch composition. The AVX-512 path is used when the compiler targets it; otherwise
// a portable path with the same blocking is used.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xdrec/common.h"

// GCC 12 reports false -Wmaybe-uninitialized warnings inside its own AVX-512 intrinsics when it inlines them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace xdrec::text::ops {

// ---------------------------------------------------------------------------------------------------------
// 64-byte aligned storage.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const {
    return true;
  }
};
template <class T>
using aligned_vector = std::vector<T, AlignedAllocator<T>>;

// ---------------------------------------------------------------------------------------------------------
// Scalar reference functions (tests compare the vector code against them).
inline float gelu_exact(float x) {
  return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
}
inline float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

enum class Activation { kNone, kGelu, kGeluTanh, kRelu };

#if defined(__AVX512F__)
// e^x, relative error about 2e-7 over the float range; 0 below -87.3 (and for -inf).
inline __m512 exp16(__m512 x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ);
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  // Taylor polynomial of degree 7 on |r| <= ln(2)/2.
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), odd extension for x < 0.
inline __m512 erf16(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                                 _mm512_fmadd_ps(ax, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp16(_mm512_mul_ps(_mm512_mul_ps(ax, ax), _mm512_set1_ps(-1.0f)));
  const __m512 y = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
  // Copy the sign of x.
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(int32_t(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

inline __m512 tanh16(__m512 x) {
  // tanh(x) = 1 - 2 / (e^{2x} + 1), saturating for large |x|.
  const __m512 e = exp16(_mm512_mul_ps(x, _mm512_set1_ps(2.0f)));
  return _mm512_sub_ps(_mm512_set1_ps(1.0f),
                       _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
}

inline __m512 activate16(__m512 x, Activation act) {
  switch (act) {
    case Activation::kGelu: {
      const __m512 h = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
      return _mm512_fmadd_ps(h, erf16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f))), h);
    }
    case Activation::kGeluTanh: {
      const __m512 h = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
      const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
      const __m512 inner = _mm512_mul_ps(_mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715f), x),
                                         _mm512_set1_ps(0.7978845608028654f));
      return _mm512_fmadd_ps(h, tanh16(inner), h);
    }
    case Activation::kRelu:
      return _mm512_max_ps(x, _mm512_setzero_ps());
    case Activation::kNone:
      break;
  }
  return x;
}

inline __mmask16 tail_mask(size_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
}

// Horizontal sum and maximum in a fixed order.
inline float hsum16(__m512 x) {
  x = _mm512_add_ps(x, _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm512_add_ps(x, _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
  x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(x);
}
inline float hmax16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm512_max_ps(x, _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
  x = _mm512_max_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 0, 3, 2)));
  x = _mm512_max_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(x);
}
#endif

// Scalar counterparts of the vector functions, with the same formulas (used by the portable path).
inline float exp_approx(float x) {
#if defined(__AVX512F__)
  return _mm512_cvtss_f32(exp16(_mm512_set1_ps(x)));
#else
  return std::exp(x);
#endif
}
inline float activate(float x, Activation act) {
#if defined(__AVX512F__)
  return _mm512_cvtss_f32(activate16(_mm512_set1_ps(x), act));
#else
  switch (act) {
    case Activation::kGelu:
      return gelu_exact(x);
    case Activation::kGeluTanh:
      return gelu_tanh(x);
    case Activation::kRelu:
      return x > 0 ? x : 0.0f;
    case Activation::kNone:
      break;
  }
  return x;
#endif
}

// Applies the activation to n floats in place.
inline void activate_inplace(float* x, size_t n, Activation act) {
  if (act == Activation::kNone) return;
#if defined(__AVX512F__)
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, activate16(_mm512_maskz_loadu_ps(m, x + i), act));
  }
#else
  for (size_t i = 0; i < n; ++i) x[i] = activate(x[i], act);
#endif
}

// ---------------------------------------------------------------------------------------------------------
// A linear layer y = x W + b with W (in x out) packed for the GEMM: the rows are split into blocks of kc rows
// (the last may be shorter) and, inside a block, the columns into panels of kNr, each panel storing its rows
// one after the other (kNr contiguous values per row, zero padded past `out`). Blocks follow each other, and
// panels inside a block, so that the GEMM reads the weights sequentially.
// In int8 mode W[k][j] = q[k][j] * scale[j] (symmetric, one scale per output channel).
constexpr size_t kNr = 32;  // columns per panel (two AVX-512 registers)
constexpr size_t kMr = 12;  // rows per micro-kernel call
constexpr size_t kMc = 96;  // rows per task

struct Linear {
  size_t in = 0, out = 0, panels = 0, kc = 0;
  bool int8 = false;
  aligned_vector<float> w;      // float mode: panels * in * kNr
  aligned_vector<int8_t> q;     // int8 mode: panels * in * kNr
  aligned_vector<float> scale;  // int8 mode: panels * kNr
  aligned_vector<float> bias;   // panels * kNr (zeros when the layer has no bias)

  // From a PyTorch-style weight (out x in, row-major) and bias (out values, may be null); every weight is
  // multiplied by `factor` (used to fold the attention scale into the query projection).
  static Linear from_out_in(const float* weight, const float* b, size_t out, size_t in, bool int8,
                            float factor = 1.0f) {
    Linear l;
    l.in = in;
    l.out = out;
    l.panels = (out + kNr - 1) / kNr;
    const size_t blocks = std::max<size_t>(1, (in + 255) / 256);  // rows per block: at most 256, even sizes
    l.kc = std::max<size_t>(1, (in + blocks - 1) / blocks);
    l.int8 = int8;
    l.bias.assign(l.panels * kNr, 0.0f);
    for (size_t j = 0; j < out && b; ++j) l.bias[j] = b[j] * factor;
    if (!int8) {
      l.w.assign(l.panels * in * kNr, 0.0f);
      for (size_t j = 0; j < out; ++j) {
        const float* src = weight + j * in;
        for (size_t k = 0; k < in; ++k) l.w[l.offset(k, j / kNr) + j % kNr] = src[k] * factor;
      }
    } else {
      l.q.assign(l.panels * in * kNr, 0);
      l.scale.assign(l.panels * kNr, 0.0f);
      for (size_t j = 0; j < out; ++j) {
        const float* src = weight + j * in;
        float amax = 0;
        for (size_t k = 0; k < in; ++k) amax = std::max(amax, std::fabs(src[k] * factor));
        const float s = amax > 0 ? amax / 127.0f : 1.0f;
        l.scale[j] = s;
        for (size_t k = 0; k < in; ++k) {
          const float v = std::nearbyint(src[k] * factor / s);
          l.q[l.offset(k, j / kNr) + j % kNr] = int8_t(std::clamp(v, -127.0f, 127.0f));
        }
      }
    }
    return l;
  }

  size_t bytes() const {
    return w.size() * sizeof(float) + q.size() + (scale.size() + bias.size()) * sizeof(float);
  }
  // Index of row k of panel p in the packed storage (the rows of a block are contiguous within a panel).
  size_t offset(size_t k, size_t p) const {
    const size_t k0 = k / kc * kc, rows = std::min(kc, in - k0);
    return k0 * panels * kNr + p * rows * kNr + (k - k0) * kNr;
  }
  // The effective (dequantised) weight W[k][j], for tests.
  float weight(size_t k, size_t j) const {
    const size_t idx = offset(k, j / kNr) + j % kNr;
    return int8 ? float(q[idx]) * scale[j] : w[idx];
  }
};

enum class Epilogue { kBias, kBiasActivation, kBiasResidual };

struct GemmArgs {
  const float* a = nullptr;  // m x lin.in, row stride lda
  size_t lda = 0, m = 0;
  const Linear* lin = nullptr;
  float* c = nullptr;  // m x lin.out, row stride ldc
  size_t ldc = 0;
  Epilogue epilogue = Epilogue::kBias;
  Activation act = Activation::kNone;  // for kBiasActivation
  const float* residual = nullptr;     // for kBiasResidual: m x lin.out, row stride ldr
  size_t ldr = 0;
};

namespace detail {

// Packs rows [0, mr) x columns [k0, k0 + kc) of a into dst[k][i] (k-major, mr values per k).
inline void pack_a(const float* a, size_t lda, size_t mr, size_t k0, size_t kc, float* dst) {
  for (size_t i = 0; i < mr; ++i) {
    const float* src = a + i * lda + k0;
    for (size_t k = 0; k < kc; ++k) dst[k * mr + i] = src[k];
  }
}

struct KernelArgs {
  size_t kc;
  const float* ap;  // kc x MR
  const float* bp;  // kc x kNr
  float* c;
  size_t ldc;
  size_t ncols;        // valid columns of this panel (<= kNr)
  bool accumulate;     // add to the values already in c (later k blocks)
  bool last;           // final k block: apply the epilogue
  const float* bias;   // kNr values
  const float* scale;  // int8 mode: kNr per-column scales applied at the end, else null
  Epilogue epilogue;
  Activation act;
  const float* r;  // residual rows
  size_t ldr;
};

#if defined(__AVX512F__)
template <int MR>
inline void kernel(const KernelArgs& k) {
  __m512 acc[MR][2];
  const __mmask16 m0 = tail_mask(k.ncols), m1 = tail_mask(k.ncols > 16 ? k.ncols - 16 : 0);
  if (k.accumulate) {
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = _mm512_maskz_loadu_ps(m0, k.c + i * k.ldc);
      acc[i][1] = _mm512_maskz_loadu_ps(m1, k.c + i * k.ldc + 16);
    }
  } else {
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  }
  const float* ap = k.ap;
  const float* bp = k.bp;
  for (size_t kk = 0; kk < k.kc; ++kk, ap += MR, bp += kNr) {
    const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(ap[i]);
      acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
    }
  }
  if (k.last) {
    __m512 s0 = _mm512_set1_ps(1.0f), s1 = s0;
    if (k.scale) s0 = _mm512_loadu_ps(k.scale), s1 = _mm512_loadu_ps(k.scale + 16);
    const __m512 bias0 = _mm512_loadu_ps(k.bias), bias1 = _mm512_loadu_ps(k.bias + 16);
    for (int i = 0; i < MR; ++i) {
      __m512 x0 = k.scale ? _mm512_fmadd_ps(acc[i][0], s0, bias0) : _mm512_add_ps(acc[i][0], bias0);
      __m512 x1 = k.scale ? _mm512_fmadd_ps(acc[i][1], s1, bias1) : _mm512_add_ps(acc[i][1], bias1);
      if (k.epilogue == Epilogue::kBiasActivation) {
        x0 = activate16(x0, k.act);
        x1 = activate16(x1, k.act);
      } else if (k.epilogue == Epilogue::kBiasResidual) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, k.r + i * k.ldr));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, k.r + i * k.ldr + 16));
      }
      acc[i][0] = x0;
      acc[i][1] = x1;
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(k.c + i * k.ldc, m0, acc[i][0]);
    _mm512_mask_storeu_ps(k.c + i * k.ldc + 16, m1, acc[i][1]);
  }
}
#else
template <int MR>
inline void kernel(const KernelArgs& k) {
  float acc[MR][kNr];
  for (int i = 0; i < MR; ++i)
    for (size_t j = 0; j < kNr; ++j) acc[i][j] = k.accumulate && j < k.ncols ? k.c[i * k.ldc + j] : 0.0f;
  for (size_t kk = 0; kk < k.kc; ++kk) {
    const float* b = k.bp + kk * kNr;
    for (int i = 0; i < MR; ++i) {
      const float a = k.ap[kk * MR + i];
      for (size_t j = 0; j < kNr; ++j) acc[i][j] = std::fma(a, b[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (size_t j = 0; j < k.ncols; ++j) {
      float x = acc[i][j];
      if (k.last) {
        x = k.scale ? std::fma(x, k.scale[j], k.bias[j]) : x + k.bias[j];
        if (k.epilogue == Epilogue::kBiasActivation) x = activate(x, k.act);
        if (k.epilogue == Epilogue::kBiasResidual) x += k.r[i * k.ldr + j];
      }
      k.c[i * k.ldc + j] = x;
    }
}
#endif

inline void run_kernel(size_t mr, const KernelArgs& k) {
  switch (mr) {
    case 1:
      return kernel<1>(k);
    case 2:
      return kernel<2>(k);
    case 3:
      return kernel<3>(k);
    case 4:
      return kernel<4>(k);
    case 5:
      return kernel<5>(k);
    case 6:
      return kernel<6>(k);
    case 7:
      return kernel<7>(k);
    case 8:
      return kernel<8>(k);
    case 9:
      return kernel<9>(k);
    case 10:
      return kernel<10>(k);
    case 11:
      return kernel<11>(k);
    default:
      return kernel<12>(k);
  }
}

// Rows [r0, r1) x panels [p0, p1) of the product.
inline void gemm_tile(const GemmArgs& g, size_t r0, size_t r1, size_t p0, size_t p1) {
  const Linear& l = *g.lin;
  const size_t K = l.in;
  const size_t kc_max = l.kc;
  static thread_local aligned_vector<float> apack, bdeq;
  if (apack.size() < kMc * kc_max) apack.resize(kMc * kc_max);
  if (l.int8 && bdeq.size() < kc_max * kNr) bdeq.resize(kc_max * kNr);
  for (size_t rb = r0; rb < r1; rb += kMc) {
    const size_t re = std::min(r1, rb + kMc);
    for (size_t k0 = 0; k0 < K; k0 += kc_max) {
      const size_t kc = std::min(kc_max, K - k0);
      // Pack this row block's A, kMr rows at a time.
      for (size_t i = rb; i < re; i += kMr)
        pack_a(g.a + i * g.lda, g.lda, std::min(kMr, re - i), k0, kc, apack.data() + (i - rb) * kc);
      for (size_t p = p0; p < p1; ++p) {
        const float* bp;
        if (l.int8) {
          const int8_t* src = l.q.data() + l.offset(k0, p);
          for (size_t t = 0; t < kc * kNr; ++t) bdeq[t] = float(src[t]);
          bp = bdeq.data();
        } else {
          bp = l.w.data() + l.offset(k0, p);
        }
        const size_t col = p * kNr;
        KernelArgs ka{};
        ka.kc = kc;
        ka.bp = bp;
        ka.ldc = g.ldc;
        ka.ncols = std::min(kNr, l.out - col);
        ka.accumulate = k0 > 0;
        ka.last = k0 + kc == K;
        ka.bias = l.bias.data() + col;
        ka.scale = l.int8 ? l.scale.data() + col : nullptr;
        ka.epilogue = g.epilogue;
        ka.act = g.act;
        ka.ldr = g.ldr;
        for (size_t i = rb; i < re; i += kMr) {
          const size_t mr = std::min(kMr, re - i);
          ka.ap = apack.data() + (i - rb) * kc;
          ka.c = g.c + i * g.ldc + col;
          ka.r = g.residual ? g.residual + i * g.ldr + col : nullptr;
          run_kernel(mr, ka);
        }
      }
    }
  }
}

}  // namespace detail

// C = epilogue(A W + b). rows_done(r0, r1), when given, is called once every column of rows [r0, r1) is final
// (in the worker that computed them when it can, so that row-wise follow-ups such as layer norm run while the
// rows are in cache). Deterministic and independent of `threads`.
inline void gemm(const GemmArgs& g, int threads, const std::function<void(size_t, size_t)>& rows_done = {}) {
  const Linear& l = *g.lin;
  if (g.m == 0) return;
  if (l.in == 0) throw Error("gemm: empty inner dimension");
  const size_t row_blocks = (g.m + kMc - 1) / kMc;
  threads = std::max(1, threads);
  size_t col_blocks = 1;
  if (threads > 1 && row_blocks < size_t(2 * threads))
    col_blocks = std::min(l.panels, (size_t(2 * threads) + row_blocks - 1) / row_blocks);
  const size_t per = (l.panels + col_blocks - 1) / col_blocks;
  col_blocks = (l.panels + per - 1) / per;
  parallel_for(row_blocks * col_blocks, threads, 1, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      const size_t rb = t / col_blocks, cb = t % col_blocks;
      const size_t r0 = rb * kMc, r1 = std::min(g.m, r0 + kMc);
      detail::gemm_tile(g, r0, r1, cb * per, std::min(l.panels, (cb + 1) * per));
      if (col_blocks == 1 && rows_done) rows_done(r0, r1);
    }
  });
  if (col_blocks > 1 && rows_done)
    parallel_for(row_blocks, threads, 1, [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) rows_done(b * kMc, std::min(g.m, (b + 1) * kMc));
    });
}

// ---------------------------------------------------------------------------------------------------------
// y = (x - mean) / sqrt(var + eps) * gamma + beta over each of `rows` rows of n values (row stride ld).
inline void layer_norm(float* x, size_t rows, size_t ld, size_t n, const float* gamma, const float* beta,
                       float eps) {
  for (size_t r = 0; r < rows; ++r) {
    float* row = x + r * ld;
#if defined(__AVX512F__)
    __m512 s = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask(n - i), row + i));
    const float mean = hsum16(s) / float(n);
    const __m512 mv = _mm512_set1_ps(mean);
    __m512 v = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
      const __mmask16 m = tail_mask(n - i);
      const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, row + i), mv);
      v = _mm512_fmadd_ps(d, d, v);
    }
    const float inv = 1.0f / std::sqrt(hsum16(v) / float(n) + eps);
    const __m512 iv = _mm512_set1_ps(inv);
    for (size_t i = 0; i < n; i += 16) {
      const __mmask16 m = tail_mask(n - i);
      const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + i), mv), iv);
      _mm512_mask_storeu_ps(
          row + i, m,
          _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, gamma + i), _mm512_maskz_loadu_ps(m, beta + i)));
    }
#else
    float s = 0;
    for (size_t i = 0; i < n; ++i) s += row[i];
    const float mean = s / float(n);
    float v = 0;
    for (size_t i = 0; i < n; ++i) v += (row[i] - mean) * (row[i] - mean);
    const float inv = 1.0f / std::sqrt(v / float(n) + eps);
    for (size_t i = 0; i < n; ++i) row[i] = (row[i] - mean) * inv * gamma[i] + beta[i];
#endif
  }
}

// In-place softmax of n values.
inline void softmax(float* x, size_t n) {
  if (n == 0) return;
#if defined(__AVX512F__)
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 mv = _mm512_set1_ps(hmax16(mx));
  __m512 s = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv));
    s = _mm512_mask_add_ps(s, m, s, e);
    _mm512_mask_storeu_ps(x + i, m, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / hsum16(s));
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
#else
  float mx = x[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  float s = 0;
  for (size_t i = 0; i < n; ++i) s += (x[i] = std::exp(x[i] - mx));
  const float inv = 1.0f / s;
  for (size_t i = 0; i < n; ++i) x[i] *= inv;
#endif
}

// ---------------------------------------------------------------------------------------------------------
// Self-attention of one sequence for heads [h0, h1) and Lq query rows. q: Lq rows (stride ld), k and v: the
// sequence's L rows (stride ld), each row holding heads * d values; the query is already scaled by 1/sqrt(d).
// out: Lq rows (stride ldo). Every query attends to all L keys (the sequence holds no padding). Both products
// run on the GEMM micro-kernel: S = Q K^T with K^T packed as panels, softmax, then O = P V with V packed as
// panels. Each output row depends on its own query row only. scratch is resized as needed.
inline void attention(const float* q, size_t Lq, const float* k, const float* v, size_t ld, size_t L,
                      size_t h0, size_t h1, size_t d, float* out, size_t ldo,
                      aligned_vector<float>& scratch) {
  if (L == 0 || Lq == 0) return;
  const size_t lp = (L + kNr - 1) / kNr * kNr;  // keys padded to whole panels
  const size_t dp = (d + kNr - 1) / kNr * kNr;
  const size_t kmax = std::max(d, L);
  const size_t need = Lq * kmax + kmax * std::max(lp, dp) + Lq * lp;
  if (scratch.size() < need) scratch.resize(need);
  float* apack = scratch.data();               // packed rows of Q (Lq x d) or P (Lq x L)
  float* bpack = apack + Lq * kmax;            // K^T (d x lp) or V (L x dp), as panels of kNr columns
  float* s = bpack + kmax * std::max(lp, dp);  // scores / probabilities, Lq x lp
  static const float zeros[kNr] = {};
  detail::KernelArgs ka{};
  ka.accumulate = false;
  ka.last = true;
  ka.bias = zeros;
  ka.epilogue = Epilogue::kBias;
  for (size_t h = h0; h < h1; ++h) {
    const size_t off = h * d;
    // S = Q K^T.
    for (size_t i = 0; i < Lq; i += kMr)
      detail::pack_a(q + i * ld + off, ld, std::min(kMr, Lq - i), 0, d, apack + i * d);
    for (size_t p = 0; p < lp / kNr; ++p) {
      float* bp = bpack + p * d * kNr;
      for (size_t jj = 0; jj < kNr; ++jj) {
        const size_t j = p * kNr + jj;
        if (j < L)
          for (size_t c = 0; c < d; ++c) bp[c * kNr + jj] = k[j * ld + off + c];
        else
          for (size_t c = 0; c < d; ++c) bp[c * kNr + jj] = 0.0f;
      }
    }
    ka.kc = d;
    ka.ldc = lp;
    for (size_t p = 0; p < lp / kNr; ++p) {
      ka.bp = bpack + p * d * kNr;
      ka.ncols = std::min(kNr, L - p * kNr);
      for (size_t i = 0; i < Lq; i += kMr) {
        ka.ap = apack + i * d;
        ka.c = s + i * lp + p * kNr;
        detail::run_kernel(std::min(kMr, Lq - i), ka);
      }
    }
    for (size_t i = 0; i < Lq; ++i) softmax(s + i * lp, L);
    // O = P V.
    for (size_t i = 0; i < Lq; i += kMr)
      detail::pack_a(s + i * lp, lp, std::min(kMr, Lq - i), 0, L, apack + i * L);
    for (size_t p = 0; p < dp / kNr; ++p) {
      float* bp = bpack + p * L * kNr;
      const size_t c0 = p * kNr, nc = std::min(kNr, d - c0);
      for (size_t j = 0; j < L; ++j) {
        const float* src = v + j * ld + off + c0;
        float* dst = bp + j * kNr;
        for (size_t cc = 0; cc < nc; ++cc) dst[cc] = src[cc];
        for (size_t cc = nc; cc < kNr; ++cc) dst[cc] = 0.0f;
      }
    }
    ka.kc = L;
    ka.ldc = ldo;
    for (size_t p = 0; p < dp / kNr; ++p) {
      ka.bp = bpack + p * L * kNr;
      ka.ncols = std::min(kNr, d - p * kNr);
      for (size_t i = 0; i < Lq; i += kMr) {
        ka.ap = apack + i * L;
        ka.c = out + i * ldo + off + p * kNr;
        detail::run_kernel(std::min(kMr, Lq - i), ka);
      }
    }
  }
}

}  // namespace xdrec::text::ops

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
