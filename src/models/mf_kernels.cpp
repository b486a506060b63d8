// Out-of-line kernels of mf_kernels.h: the Gram matrix and GEMM scoring of factor models.
#include "models/mf_kernels.h"

#include <cblas.h>

#include <algorithm>

extern "C" void openblas_set_num_threads(int num_threads);

namespace xdrec::mf {

void gram(const Factors& y, AlignedFloats& g, int threads) {
  openblas_set_num_threads(1);
  const size_t ld = y.ld;
  constexpr size_t kBlock = 4096;
  const size_t nb = (y.rows + kBlock - 1) / kBlock;
  g.assign(ld * ld, 0.0f);
  if (nb == 0) return;
  AlignedFloats partial(nb * ld * ld);
  parallel_for(nb, threads, 1, [&](size_t lo, size_t hi) {
    for (size_t b = lo; b < hi; ++b) {
      const size_t r0 = b * kBlock, m = std::min(y.rows, r0 + kBlock) - r0;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(ld), int(ld), int(m), 1.0f, y.row(r0), int(ld),
                  y.row(r0), int(ld), 0.0f, partial.data() + b * ld * ld, int(ld));
    }
  });
  for (size_t b = 0; b < nb; ++b) {
    const float* p = partial.data() + b * ld * ld;
    for (size_t k = 0; k < ld * ld; ++k) g[k] += p[k];
  }
}

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
}

}  // namespace xdrec::mf
