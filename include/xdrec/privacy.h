// Differential privacy accounting: the Rényi-DP (RDP) accountant of the Poisson-subsampled Gaussian mechanism
// (the noise of DP-SGD), composed over training steps, converted to an (ε, δ) guarantee, and the inverse (the
// noise multiplier that reaches a target ε).
//
// Per step, with sampling rate q and noise multiplier σ (noise standard deviation / clipping norm), the RDP
// of order α is log(A_α) / (α − 1), where
//   - integer α (Mironov, Talwar, Zhang 2019, Section 3.3):
//       A_α = Σ_{k=0..α} C(α,k) (1−q)^{α−k} q^k exp((k² − k) / (2σ²)),
//     computed as A_α − 1 = Σ_{k=2..α} C(α,k) (1−q)^{α−k} q^k (exp((k² − k)/(2σ²)) − 1), a sum of positive
//     terms in log space (no cancellation, no overflow for α in the thousands);
//   - fractional α (the same paper's series for real orders): A_α is split at z0 = σ² log(1/q − 1) + 1/2 into
//   two
//     series over the generalised binomial coefficients C(α,i), each term weighted by a Gaussian tail (erfc),
//     summed with signs in log space until the terms fall below e^−40 (and past i = α);
//   - q = 1 (no subsampling): the Gaussian mechanism, rdp(α) = α / (2σ²).
// RDP composes additively over T steps. Conversion to (ε, δ), minimised over the orders:
//   - classic  (Mironov 2017, Proposition 3):  ε = T·rdp(α) + log(1/δ) / (α − 1)
//   - improved (Balle et al. 2020, Theorem 21): ε = T·rdp(α) + log((α − 1)/α) − (log δ + log α) / (α − 1)
// Both are valid upper bounds; the improved one is smaller at every order (it subtracts
// log(α)/(α − 1) − log((α − 1)/α) > 0) and is what Opacus reports. ε is reported as at least 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xdrec/common.h"

namespace xdrec::privacy {

enum class Conversion : uint8_t { kClassic, kImproved };

// "classic" or "improved"; Error otherwise.
Conversion parse_conversion(const std::string& name);
const char* conversion_name(Conversion c);

// The default orders: the integers 2..256.
std::vector<double> default_orders();

// log(A_α) of one step. Integer series (alpha >= 2) and fractional series (any alpha > 1, q < 1); both give
// the same value at an integer alpha. Public so that the two series can be checked against each other.
double log_a_integer(double q, double sigma, int64_t alpha);
double log_a_fractional(double q, double sigma, double alpha);

// RDP of one step at order alpha > 1 (the integer series at integer orders, else the fractional one).
double rdp_step(double q, double sigma, double alpha);

// RDP composed over `steps` steps at each order (steps * rdp_step). q in [0, 1], sigma > 0, orders > 1.
std::vector<double> compute_rdp(double q, double sigma, int64_t steps, const std::vector<double>& orders);

struct Epsilon {
  double epsilon = 0;
  double order = 0;  // the order that attains the minimum (the first one on ties)
};

// ε from composed RDP values (one per order) for delta in (0, 1).
Epsilon epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                         Conversion conversion = Conversion::kClassic);

// ε of `steps` steps of the subsampled Gaussian mechanism. Empty orders: default_orders().
Epsilon compute_epsilon(double q, double sigma, int64_t steps, double delta,
                        Conversion conversion = Conversion::kClassic, const std::vector<double>& orders = {});

// The smallest noise multiplier σ whose ε (as compute_epsilon) is at most target_epsilon, by bisection (ε
// falls monotonically as σ grows), to relative precision 1e-10. Error when the target is at or below what
// infinite noise gives with these orders and δ, or when steps = 0.
double noise_for_epsilon(double q, int64_t steps, double delta, double target_epsilon,
                         Conversion conversion = Conversion::kClassic,
                         const std::vector<double>& orders = {});

// ---- DP-SGD aggregation ---------------------------------------------------------------------------------

// Adds N(0, sd^2) to every value, drawn from rng coordinate by coordinate in order (sd >= 0 and finite; Error
// otherwise). The Gaussian noise of DpAggregator::finish and of federated aggregation.
void add_gaussian_noise(std::span<double> values, double sd, Rng& rng);

// The noisy sum of one DP-SGD step over a flat parameter vector of `dim` coordinates (the caller lays its
// released parameters out in it). Each contribution (one privacy unit's whole gradient, given as pieces at
// offsets) is scaled by min(1, clip / ||contribution||), its L2 norm taken over all its pieces together, and
// added; finish() adds N(0, (sigma * clip)^2) to every coordinate and divides by `denominator` (the expected
// number of contributions). So one unit changes the sum by at most `clip` in L2 norm before the noise.
class DpAggregator {
 public:
  struct Piece {
    size_t offset = 0;
    std::span<const float> values;
  };
  DpAggregator(size_t dim, double clip);
  // Adds one clipped contribution; returns the scale applied (1 when it was within the clip). Pieces may not
  // overlap; each must fit in [0, dim). Error otherwise, or for a non-finite value.
  double add(std::span<const Piece> pieces);
  // Adds the noise (drawn from rng, coordinate by coordinate in order) and divides by denominator > 0.
  void finish(double sigma, double denominator, Rng& rng);
  size_t dim() const { return sum_.size(); }
  size_t contributions() const { return count_; }
  size_t clipped() const { return clipped_; }  // contributions that were scaled down
  const std::vector<double>& sum() const { return sum_; }
  void reset();

 private:
  std::vector<double> sum_;
  double clip_;
  size_t count_ = 0, clipped_ = 0;
};

}  // namespace xdrec::privacy
