// The per-unit clipping and Gaussian noise of a DP-SGD step (privacy.h).
#include <cmath>
#include <string>

#include "xdrec/privacy.h"

namespace xdrec::privacy {

DpAggregator::DpAggregator(size_t dim, double clip) : sum_(dim, 0.0), clip_(clip) {
  check(clip > 0, "dp: the clipping norm must be positive, got " + std::to_string(clip));
}

void DpAggregator::reset() {
  std::fill(sum_.begin(), sum_.end(), 0.0);
  count_ = clipped_ = 0;
}

double DpAggregator::add(std::span<const Piece> pieces) {
  double sq = 0;
  for (const Piece& p : pieces) {
    check(p.offset <= sum_.size() && p.values.size() <= sum_.size() - p.offset,
          "dp: a contribution piece lies outside the parameter vector");
    for (float v : p.values) {
      check(std::isfinite(v), "dp: a contribution has a non-finite value");
      sq += double(v) * double(v);
    }
  }
  const double norm = std::sqrt(sq);
  double scale = 1.0;
  if (norm > clip_) {
    scale = clip_ / norm;
    ++clipped_;
  }
  for (const Piece& p : pieces) {
    double* s = sum_.data() + p.offset;
    for (size_t k = 0; k < p.values.size(); ++k) s[k] += scale * double(p.values[k]);
  }
  ++count_;
  return scale;
}

void add_gaussian_noise(std::span<double> values, double sd, Rng& rng) {
  check(sd >= 0 && std::isfinite(sd), "dp: the noise standard deviation must be finite and at least 0");
  if (sd > 0)
    for (double& v : values) v += sd * double(rng.normal());
}

void DpAggregator::finish(double sigma, double denominator, Rng& rng) {
  check(sigma >= 0 && std::isfinite(sigma), "dp: the noise multiplier must be finite and at least 0");
  check(denominator > 0, "dp: the denominator must be positive");
  add_gaussian_noise(sum_, sigma * clip_, rng);
  const double inv = 1.0 / denominator;
  for (double& s : sum_) s *= inv;
}

}  // namespace xdrec::privacy
