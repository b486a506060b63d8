// Helpers of the nn tests: random matrices, a dot product of equal-shaped matrices, and the central finite-
// difference check of an analytic gradient.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "xdrec/nn.h"

namespace xdrec::nn::testing {

inline MatD random_mat(size_t r, size_t c, Rng& rng, double scale = 1.0) {
  MatD m(r, c);
  for (auto& v : m.data) v = double(rng.normal()) * scale;
  return m;
}

inline double dot(const MatD& a, const MatD& b) {
  double s = 0;
  for (size_t k = 0; k < a.size(); ++k) s += a.data[k] * b.data[k];
  return s;
}

// Checks analytic gradient `grad` of loss() with respect to the entries of `param` by central differences.
inline void expect_grad(MatD& param, const MatD& grad, const std::function<double()>& loss,
                        const std::string& what, double tol = 1e-6) {
  ASSERT_EQ(param.size(), grad.size()) << what;
  const double h = 1e-6;
  for (size_t k = 0; k < param.size(); ++k) {
    const double keep = param.data[k];
    param.data[k] = keep + h;
    const double lp = loss();
    param.data[k] = keep - h;
    const double lm = loss();
    param.data[k] = keep;
    const double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(grad.data[k], fd, tol * (1.0 + std::fabs(fd))) << what << " entry " << k;
  }
}

}  // namespace xdrec::nn::testing
