// Samplers of the Bayesian models (bpmf): Gamma variates, Wishart matrices by the Bartlett decomposition,
// Gaussian vectors given by their precision, and the Normal–Wishart posterior of the mean and precision of a
// set of Gaussian vectors. Every draw comes from the caller's Rng, so a fixed stream gives a fixed result.
#pragma once

#include "core/eigen.h"
#include "xdrec/common.h"

namespace xdrec::bayes {

// Gamma(shape, scale 1) (Marsaglia & Tsang 2000; shape < 1 through shape + 1 and U^(1/shape)). shape > 0.
double gamma(Rng& rng, double shape);

// Wishart(scale W, dof degrees of freedom) of dimension d = W.rows(), dof > d - 1; its mean is dof * W.
// Bartlett: W = L L^T, A lower triangular with A_ii = sqrt(chi2(dof - i)) (i from 0) and standard normal
// entries below the diagonal; the draw is L A A^T L^T.
Eigen::MatrixXd wishart(const Eigen::MatrixXd& scale, double dof, Rng& rng);

// A draw of N(mean, precision^-1), given the Cholesky factor of the precision (precision = L L^T): mean +
// L^-T z with z standard normal.
Eigen::VectorXd normal_from_precision(const Eigen::VectorXd& mean,
                                      const Eigen::LLT<Eigen::MatrixXd>& precision, Rng& rng);

// The columns of x (d x n) are N(mu, Lambda^-1) with the Normal–Wishart prior mu | Lambda ~ N(0, (beta0
// Lambda)^-1), Lambda ~ Wishart(I, nu0). Draws (mu, Lambda) from their posterior (Salakhutdinov & Mnih
// 2008, eq. 14): with the column mean m and scatter S = sum (x - m)(x - m)^T,
//   Lambda ~ Wishart((I + S + beta0 n / (beta0 + n) m m^T)^-1, nu0 + n),
//   mu ~ N(n m / (beta0 + n), ((beta0 + n) Lambda)^-1).
// With d = 1 this is the Normal–Gamma prior: precision ~ Gamma(nu0 / 2, rate 1 / 2).
void normal_wishart_posterior(const Eigen::Ref<const Eigen::MatrixXd>& x, double beta0, double nu0, Rng& rng,
                              Eigen::VectorXd& mean, Eigen::MatrixXd& precision);

}  // namespace xdrec::bayes
