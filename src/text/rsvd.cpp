// Randomized SVD: see rsvd.h.
#include "core/eigen.h"

#include <algorithm>
#include <cmath>

#include "text/rsvd.h"

namespace xdrec::text {

namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// out = A * x, where x has one row per column of A. The dense operand is read as float (half the memory
// traffic) in blocks of 64 columns, so that the block's rows stay in cache while every row of A is swept;
// sums are accumulated in double, each output entry over A's row entries in their stored order.
template <typename Out = RowMat>
Out spmm(const Csr& a, const RowMat& x, int threads) {
  using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  constexpr Eigen::Index kBlock = 64;
  const Eigen::Index l = x.cols();
  Out out(Eigen::Index(a.n_rows), l);
  for (Eigen::Index j0 = 0; j0 < l; j0 += kBlock) {
    const Eigen::Index nb = std::min(kBlock, l - j0);
    const RowMatF xb = x.middleCols(j0, nb).template cast<float>();
    parallel_for(a.n_rows, threads, 512, [&](size_t lo, size_t hi) {
      Eigen::Matrix<double, 1, kBlock> acc;
      for (size_t i = lo; i < hi; ++i) {
        acc.setZero();
        auto idx = a.row_indices(uint32_t(i));
        auto val = a.row_values(uint32_t(i));
        for (size_t e = 0; e < idx.size(); ++e)
          acc.head(nb).noalias() += double(val[e]) * xb.row(Eigen::Index(idx[e])).template cast<double>();
        out.row(Eigen::Index(i)).segment(j0, nb) = acc.head(nb);
      }
    });
  }
  return out;
}

// Orthonormal basis of the columns of y (thin Q of a Householder QR, factorised in place).
RowMat orthonormalise(const RowMat& y) {
  Eigen::MatrixXd m = y;
  Eigen::HouseholderQR<Eigen::Ref<Eigen::MatrixXd>> qr(m);
  Eigen::MatrixXd q = Eigen::MatrixXd::Identity(m.rows(), m.cols());
  q.applyOnTheLeft(qr.householderQ());
  return q;
}

}  // namespace

RsvdResult randomized_svd(const Csr& a, const RsvdOptions& opt) {
  check(opt.rank > 0, "randomized SVD: rank must be positive");
  check(opt.power_iters >= 0, "randomized SVD: power_iters must be non-negative");
  const size_t m = a.n_rows, n = a.n_cols;
  RsvdResult res;
  const size_t small = std::min(m, n);
  if (small == 0) {
    res.u.resize(m, 0);
    res.v.resize(n, 0);
    return res;
  }
  const size_t k = std::min(opt.rank, small);
  const size_t l = std::min(k + opt.oversample, small);
  const Csr at = a.transpose();
  // Work on M = A or A^T, whichever has fewer rows: the QR factorisations of the power iterations then
  // run on the short side (r x l), and only the final projection needs a QR on the long side.
  const bool flip = m > n;
  const Csr& mm = flip ? at : a;
  const Csr& mt = flip ? a : at;
  const size_t c = mm.n_cols;

  // Gaussian test matrix, c x l, filled in one fixed sequence.
  RowMat omega(static_cast<Eigen::Index>(c), static_cast<Eigen::Index>(l));
  Rng rng(opt.seed, 0x5356'4452);
  double* w = omega.data();
  const size_t total = c * l;
  for (size_t i = 0; i < total; i += 2) {  // Box-Muller, both values of each pair
    const double u1 = std::max(rng.uniform(), 1e-300), u2 = rng.uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)), t = 6.283185307179586 * u2;
    w[i] = r * std::cos(t);
    if (i + 1 < total) w[i + 1] = r * std::sin(t);
  }

  // Range of M: Q = orth(M Omega), then Q = orth(M M^T Q) per power iteration (in double precision this
  // keeps every direction with singular value above ~1e-8 of the largest).
  RowMat q = orthonormalise(spmm(mm, omega, opt.threads));
  RowMat().swap(omega);
  for (int it = 0; it < opt.power_iters; ++it)
    q = orthonormalise(spmm(mm, spmm(mt, q, opt.threads), opt.threads));

  // B = Q^T M (l x c), handled through B^T = M^T Q = Q2 R2 and the SVD of the small R2 = Ur S Vr^T:
  // M ~= Q B = (Q Vr) S (Q2 Ur)^T.
  Eigen::MatrixXd bt = spmm<Eigen::MatrixXd>(mt, q, opt.threads);
  Eigen::HouseholderQR<Eigen::Ref<Eigen::MatrixXd>> qr(bt);  // factorises bt in place
  const Eigen::MatrixXd r2 = bt.topRows(Eigen::Index(l)).triangularView<Eigen::Upper>();
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(r2, Eigen::ComputeFullU | Eigen::ComputeFullV);
  Eigen::MatrixXd um;  // r x k: left singular vectors of M
  if (opt.compute_u || flip) um = q * svd.matrixV().leftCols(Eigen::Index(k));
  RowMat().swap(q);
  Eigen::MatrixXd vm = Eigen::MatrixXd::Zero(Eigen::Index(c), Eigen::Index(k));  // c x k: Q2 Ur
  vm.topRows(Eigen::Index(l)) = svd.matrixU().leftCols(Eigen::Index(k));
  vm.applyOnTheLeft(qr.householderQ());
  Eigen::MatrixXd& u = flip ? vm : um;  // A = M^T when flipped
  Eigen::MatrixXd& v = flip ? um : vm;

  res.singular_values.resize(k);
  if (opt.compute_u) res.u.resize(m, k);
  res.v.resize(n, k);
  for (size_t j = 0; j < k; ++j) {
    res.singular_values[j] = svd.singularValues()(Eigen::Index(j));
    Eigen::Index arg = 0;
    v.col(Eigen::Index(j)).cwiseAbs().maxCoeff(&arg);
    const double sign = v(arg, Eigen::Index(j)) < 0 ? -1.0 : 1.0;
    for (size_t i = 0; i < n; ++i) res.v(i, j) = float(sign * v(Eigen::Index(i), Eigen::Index(j)));
    if (opt.compute_u)
      for (size_t i = 0; i < m; ++i) res.u(i, j) = float(sign * u(Eigen::Index(i), Eigen::Index(j)));
  }
  return res;
}

}  // namespace xdrec::text
