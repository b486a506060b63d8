// Samplers of the Bayesian models (bayes.h).
#include "models/bayes.h"

#include <cmath>

namespace xdrec::bayes {

double gamma(Rng& rng, double shape) {
  check(shape > 0 && std::isfinite(shape), "gamma: the shape must be positive and finite");
  if (shape < 1) {
    double u = rng.uniform();
    if (u < 1e-300) u = 1e-300;
    return gamma(rng, shape + 1) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = double(rng.normal());
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = rng.uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

Eigen::MatrixXd wishart(const Eigen::MatrixXd& scale, double dof, Rng& rng) {
  const Eigen::Index d = scale.rows();
  check(scale.cols() == d && dof > double(d) - 1, "wishart: the scale must be square and dof > d - 1");
  const Eigen::LLT<Eigen::MatrixXd> llt(scale);
  check(llt.info() == Eigen::Success, "wishart: the scale matrix is not positive definite");
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(d, d);
  for (Eigen::Index i = 0; i < d; ++i) {
    a(i, i) = std::sqrt(2.0 * gamma(rng, 0.5 * (dof - double(i))));  // chi2(dof - i)
    for (Eigen::Index j = 0; j < i; ++j) a(i, j) = double(rng.normal());
  }
  const Eigen::MatrixXd la = llt.matrixL() * a;
  return la * la.transpose();
}

Eigen::VectorXd normal_from_precision(const Eigen::VectorXd& mean,
                                      const Eigen::LLT<Eigen::MatrixXd>& precision, Rng& rng) {
  Eigen::VectorXd z(mean.size());
  for (Eigen::Index k = 0; k < z.size(); ++k) z[k] = double(rng.normal());
  return mean + precision.matrixU().solve(z);  // U = L^T: cov(L^-T z) = (L L^T)^-1
}

void normal_wishart_posterior(const Eigen::Ref<const Eigen::MatrixXd>& x, double beta0, double nu0, Rng& rng,
                              Eigen::VectorXd& mean, Eigen::MatrixXd& precision) {
  const Eigen::Index d = x.rows();
  const double n = double(x.cols());
  Eigen::VectorXd m = Eigen::VectorXd::Zero(d);
  if (x.cols() > 0) m = x.rowwise().mean();
  const Eigen::MatrixXd c = x.colwise() - m;
  Eigen::MatrixXd winv = Eigen::MatrixXd::Identity(d, d) + c * c.transpose();
  winv += (beta0 * n / (beta0 + n)) * m * m.transpose();
  const Eigen::MatrixXd w = winv.llt().solve(Eigen::MatrixXd::Identity(d, d));
  precision = wishart(0.5 * (w + w.transpose()), nu0 + n, rng);
  const Eigen::LLT<Eigen::MatrixXd> scaled((beta0 + n) * precision);
  mean = normal_from_precision((n / (beta0 + n)) * m, scaled, rng);
}

}  // namespace xdrec::bayes
