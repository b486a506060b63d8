// Out-of-line kernels of mf_kernels.h: the Gram matrix and GEMM scoring of factor models.
#include "models/mf_kernels.h"

#include <cblas.h>

#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

extern "C" void openblas_set_num_threads(int num_threads);

namespace xdrec::mf {

void gram_partials(const Factors& y, size_t b_lo, size_t b_hi, float* partial, int threads) {
  openblas_set_num_threads(1);
  const size_t ld = y.ld;
  parallel_for(b_hi - b_lo, threads, 1, [&](size_t lo, size_t hi) {
    for (size_t b = b_lo + lo; b < b_lo + hi; ++b) {
      const size_t r0 = b * kGramBlock, m = std::min(y.rows, r0 + kGramBlock) - r0;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(ld), int(ld), int(m), 1.0f, y.row(r0), int(ld),
                  y.row(r0), int(ld), 0.0f, partial + b * ld * ld, int(ld));
    }
  });
}

void gram_sum(const float* partial, size_t nb, size_t ld, AlignedFloats& g) {
  g.assign(ld * ld, 0.0f);
  for (size_t b = 0; b < nb; ++b) {
    const float* p = partial + b * ld * ld;
    for (size_t k = 0; k < ld * ld; ++k) g[k] += p[k];
  }
}

void gram(const Factors& y, AlignedFloats& g, int threads) {
  const size_t nb = gram_blocks(y.rows);
  AlignedFloats partial(nb * y.ld * y.ld);
  gram_partials(y, 0, nb, partial.data(), threads);
  gram_sum(partial.data(), nb, y.ld, g);
}

#if defined(__AVX512F__)
namespace {

// Scores on AVX-512 without OpenBLAS's per-call repacking of the whole item matrix for every block of users:
// the items are packed in chunks of kChunk into panels of 32 items (for each factor k, the k-th factor of the
// 32 items side by side), and each chunk is used for every user of the call before the next one is packed.
// A tile is 8 users x 32 items: 16 accumulators, per factor two panel loads and eight broadcasts for sixteen
// FMAs, so the loop is bound by the FMA units, not by loads. Each score is summed over k in order, whatever
// the tiling or the thread count.
constexpr size_t kPanel = 32;    // items per panel
constexpr size_t kChunk = 1024;  // items packed at once (256 KiB for 64 factors: stays in L2)
constexpr size_t kTile = 8;      // users per tile

void pack_chunk(const Factors& y, size_t i0, size_t n, float* dst) {
  const size_t f = y.f, np = (n + kPanel - 1) / kPanel;
  for (size_t p = 0; p < np; ++p) {
    float* P = dst + p * f * kPanel;
    const size_t base = i0 + p * kPanel, cnt = std::min(kPanel, n - p * kPanel);
    for (size_t j = 0; j < cnt; ++j) {
      const float* r = y.row(base + j);
      for (size_t k = 0; k < f; ++k) P[k * kPanel + j] = r[k];
    }
    for (size_t j = cnt; j < kPanel; ++j)
      for (size_t k = 0; k < f; ++k) P[k * kPanel + j] = 0.0f;
  }
}

// ub: the tile's user rows side by side (NU x f, row u at ub + u * f).
template <int NU>
inline void tile(const float* ub, const float* P, size_t f, float* const* orow, size_t col, __mmask16 m0,
                 __mmask16 m1, const float* bias) {
  __m512 a0[NU], a1[NU];
  for (int u = 0; u < NU; ++u) a0[u] = a1[u] = _mm512_setzero_ps();
  for (size_t k = 0; k < f; ++k) {
    const __m512 p0 = _mm512_load_ps(P + k * kPanel), p1 = _mm512_load_ps(P + k * kPanel + 16);
    for (int u = 0; u < NU; ++u) {
      const __m512 b = _mm512_set1_ps(ub[size_t(u) * f + k]);
      a0[u] = _mm512_fmadd_ps(b, p0, a0[u]);
      a1[u] = _mm512_fmadd_ps(b, p1, a1[u]);
    }
  }
  if (bias) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, bias + col), b1 = _mm512_maskz_loadu_ps(m1, bias + col + 16);
    for (int u = 0; u < NU; ++u) a0[u] = _mm512_add_ps(a0[u], b0), a1[u] = _mm512_add_ps(a1[u], b1);
  }
  for (int u = 0; u < NU; ++u) {
    _mm512_mask_storeu_ps(orow[u] + col, m0, a0[u]);
    _mm512_mask_storeu_ps(orow[u] + col + 16, m1, a1[u]);
  }
}

template <int NU>
void tiles(const float* ub, const float* packed, size_t f, float* const* orow, size_t i0, size_t n,
           const float* bias) {
  for (size_t p = 0; p * kPanel < n; ++p) {
    const size_t cnt = std::min(kPanel, n - p * kPanel);
    const __mmask16 m0 = cnt >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cnt) - 1);
    const __mmask16 m1 = cnt >= 32   ? __mmask16(0xFFFF)
                         : cnt <= 16 ? __mmask16(0)
                                     : __mmask16((1u << (cnt - 16)) - 1);
    tile<NU>(ub, packed + p * f * kPanel, f, orow, i0 + p * kPanel, m0, m1, bias);
  }
}

void scores_avx512(const Factors& u, std::span<const uint32_t> users, const Factors& y, const float* bias,
                   Matrix& out, size_t i0, size_t n, AlignedFloats& buf) {
  const size_t f = u.f;
  buf.resize(((n + kPanel - 1) / kPanel) * kPanel * std::max<size_t>(f, 1));
  pack_chunk(y, i0, n, buf.data());
  alignas(64) float ub[kTile * 256];
  std::vector<float> ub_large;
  float* ubp = f <= 256 ? ub : (ub_large.resize(kTile * f), ub_large.data());
  float* orow[kTile];
  for (size_t t = 0; t < users.size(); t += kTile) {
    const size_t nu = std::min(kTile, users.size() - t);
    for (size_t j = 0; j < nu; ++j) {
      std::copy(u.row(users[t + j]), u.row(users[t + j]) + f, ubp + j * f);
      orow[j] = out.row(t + j);
    }
    switch (nu) {
      case 8:
        tiles<8>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
      case 7:
        tiles<7>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
      case 6:
        tiles<6>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
      case 5:
        tiles<5>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
      case 4:
        tiles<4>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
      case 3:
        tiles<3>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
      case 2:
        tiles<2>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
      default:
        tiles<1>(ubp, buf.data(), f, orow, i0, n, bias);
        break;
    }
  }
}

}  // namespace
#endif

void gemm_scores(const Factors& u, std::span<const uint32_t> users, const Factors& y, const float* bias,
                 Matrix& out, int threads) {
  for (uint32_t user : users)
    if (user >= u.rows)
      throw Error("score: user index " + std::to_string(user) + " is out of range (model has " +
                  std::to_string(u.rows) + " users)");
  // Every entry is overwritten below: keep the buffer (no zero fill) when the shape already matches.
  if (out.rows != users.size() || out.cols != y.rows || out.data.size() != users.size() * y.rows)
    out.resize(users.size(), y.rows);
  if (users.empty() || y.rows == 0) return;
#if defined(__AVX512F__)
  // Item chunks are divided among the threads; every chunk is packed once and scored for every user.
  const size_t n_chunks = (y.rows + kChunk - 1) / kChunk;
  parallel_for(n_chunks, threads, 1, [&](size_t lo, size_t hi) {
    AlignedFloats buf;
    for (size_t c = lo; c < hi; ++c) {
      const size_t i0 = c * kChunk;
      scores_avx512(u, users, y, bias, out, i0, std::min(kChunk, y.rows - i0), buf);
    }
  });
#else
  openblas_set_num_threads(1);
  const size_t ld = u.ld;
  constexpr size_t kBlock = 64;
  parallel_for(users.size(), threads, kBlock, [&](size_t lo, size_t hi) {
    AlignedFloats a((hi - lo) * ld);
    for (size_t i = lo; i < hi; ++i)
      std::copy(u.row(users[i]), u.row(users[i]) + ld, a.data() + (i - lo) * ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(hi - lo), int(y.rows), int(u.f), 1.0f, a.data(),
                int(ld), y.data.data(), int(ld), 0.0f, out.row(lo), int(out.cols));
    if (bias) {
      for (size_t i = lo; i < hi; ++i) {
        float* o = out.row(i);
        for (size_t j = 0; j < y.rows; ++j) o[j] += bias[j];
      }
    }
  });
#endif
}

}  // namespace xdrec::mf
