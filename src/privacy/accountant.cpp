// The RDP accountant of the Poisson-subsampled Gaussian mechanism (see privacy.h for the formulas).
// Everything is computed in log space: terms such as q^k exp((k² − k)/(2σ²)) overflow a double long before α
// = 256.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <sstream>

#include "xdrec/common.h"
#include "xdrec/privacy.h"

namespace xdrec::privacy {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// log(e^a + e^b)
double log_add(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  return std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
}

// log(e^a − e^b) for a >= b (−inf when they are equal: the difference is below the precision of a double).
double log_sub(double a, double b) {
  if (b == kNegInf) return a;
  if (a <= b) return kNegInf;
  return a + std::log(-std::expm1(b - a));
}

// log(e^x − 1) for x > 0.
double log_expm1(double x) {
  return x > 30 ? x + std::log1p(-std::exp(-x)) : std::log(std::expm1(x));
}

// log(1 + e^x)
double log1p_exp(double x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

// log(erfc(x)); the asymptotic series where erfc(x) would underflow (x >= 20: erfc(20) ≈ 5e-176).
double log_erfc(double x) {
  if (x < 20) return std::log(std::erfc(x));
  const double x2 = x * x, r = 1.0 / x2;
  // erfc(x) = exp(−x²) / (x √π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …)
  return -x2 - std::log(x) - 0.5 * std::log(std::numbers::pi) +
         std::log1p(r * (-0.5 + r * (0.75 + r * (-1.875 + r * 6.5625))));
}

bool is_integer(double a) {
  return a == std::floor(a) && a < 9e15;
}

void check_mechanism(double q, double sigma) {
  check(q >= 0 && q <= 1, "privacy: the sampling rate q must lie in [0, 1] (got " + std::to_string(q) + ")");
  check(sigma > 0 && std::isfinite(sigma),
        "privacy: the noise multiplier must be positive and finite (got " + std::to_string(sigma) + ")");
}

void check_orders(const std::vector<double>& orders) {
  check(!orders.empty(), "privacy: no RDP orders");
  for (double a : orders)
    check(a > 1 && std::isfinite(a),
          "privacy: every RDP order must be a finite number > 1 (got " + std::to_string(a) + ")");
}

void check_delta(double delta) {
  check(delta > 0 && delta < 1, "privacy: delta must lie in (0, 1) (got " + std::to_string(delta) + ")");
}

// The conversion's term that does not depend on the mechanism: ε(α) = T·rdp(α) + offset(α).
double conversion_offset(double alpha, double delta, Conversion c) {
  if (c == Conversion::kClassic) return -std::log(delta) / (alpha - 1);
  return std::log1p(-1.0 / alpha) - (std::log(delta) + std::log(alpha)) / (alpha - 1);
}

}  // namespace

Conversion parse_conversion(const std::string& name) {
  if (name == "classic") return Conversion::kClassic;
  if (name == "improved") return Conversion::kImproved;
  throw Error("privacy: unknown conversion '" + name + "' (expected classic or improved)");
}

const char* conversion_name(Conversion c) {
  return c == Conversion::kClassic ? "classic" : "improved";
}

std::vector<double> default_orders() {
  std::vector<double> o;
  for (int a = 2; a <= 256; ++a) o.push_back(a);
  return o;
}

double log_a_integer(double q, double sigma, int64_t alpha) {
  check_mechanism(q, sigma);
  check(alpha >= 2, "privacy: the integer series needs an order >= 2 (got " + std::to_string(alpha) + ")");
  const double a = static_cast<double>(alpha), s2 = 2 * sigma * sigma;
  if (q == 0) return 0;
  if (q == 1) return (a * a - a) / s2;
  // A − 1 = Σ_{k>=2} C(α,k) (1−q)^{α−k} q^k (exp((k²−k)/(2σ²)) − 1): the k = 0, 1 terms of A and the binomial
  // sum Σ C(α,k)(1−q)^{α−k} q^k = 1 cancel exactly, so every remaining term is positive.
  const double lq = std::log(q), l1q = std::log1p(-q), lga = std::lgamma(a + 1);
  std::vector<double> terms;
  terms.reserve(static_cast<size_t>(alpha));
  double m = kNegInf;
  for (int64_t k = 2; k <= alpha; ++k) {
    const double kd = static_cast<double>(k);
    const double t = lga - std::lgamma(kd + 1) - std::lgamma(a - kd + 1) + (a - kd) * l1q + kd * lq +
                     log_expm1((kd * kd - kd) / s2);
    terms.push_back(t);
    m = std::max(m, t);
  }
  double s = 0;
  for (double t : terms) s += std::exp(t - m);
  return log1p_exp(m + std::log(s));  // log(1 + (A − 1))
}

double log_a_fractional(double q, double sigma, double alpha) {
  check_mechanism(q, sigma);
  check(alpha > 1 && std::isfinite(alpha),
        "privacy: an RDP order must be > 1 (got " + std::to_string(alpha) + ")");
  const double s2 = 2 * sigma * sigma;
  if (q == 0) return 0;
  if (q == 1) return (alpha * alpha - alpha) / s2;
  // A_α = ∫ μ0^{1−α} μ^α split at z0, where the two Gaussians' mixture ratio crosses 1; each half expands
  // into a binomial series whose terms carry a Gaussian tail mass (½ erfc). Terms with a negative coefficient
  // (i > α, alternating) are summed apart and subtracted at the end.
  const double lq = std::log(q), l1q = std::log1p(-q);
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double scale = std::numbers::sqrt2 * sigma, log_half = std::log(0.5);
  double pos0 = kNegInf, neg0 = kNegInf, pos1 = kNegInf, neg1 = kNegInf;
  double log_coef = 0;  // log |C(α, i)|
  bool negative = false;
  constexpr int64_t kMaxTerms = 50'000'000;
  for (int64_t i = 0;; ++i) {
    const double id = static_cast<double>(i), j = alpha - id;
    const double log_t0 = log_coef + id * lq + j * l1q;
    const double log_t1 = log_coef + j * lq + id * l1q;
    const double log_s0 = log_t0 + (id * id - id) / s2 + log_half + log_erfc((id - z0) / scale);
    const double log_s1 = log_t1 + (j * j - j) / s2 + log_half + log_erfc((z0 - j) / scale);
    if (negative) {
      neg0 = log_add(neg0, log_s0);
      neg1 = log_add(neg1, log_s1);
    } else {
      pos0 = log_add(pos0, log_s0);
      pos1 = log_add(pos1, log_s1);
    }
    if (id >= alpha && std::max(log_s0, log_s1) < -40) break;
    check(i < kMaxTerms,
          "privacy: the fractional RDP series did not converge at order " + std::to_string(alpha));
    // C(α, i + 1) = C(α, i) (α − i) / (i + 1); it is 0 from i = α on when α is an integer.
    const double f = alpha - id;
    if (f == 0) break;
    log_coef += std::log(std::abs(f)) - std::log(id + 1);
    if (f < 0) negative = !negative;
  }
  return log_add(log_sub(pos0, neg0), log_sub(pos1, neg1));
}

double rdp_step(double q, double sigma, double alpha) {
  check_mechanism(q, sigma);
  check(alpha > 1 && std::isfinite(alpha),
        "privacy: an RDP order must be > 1 (got " + std::to_string(alpha) + ")");
  if (q == 1) return alpha / (2 * sigma * sigma);
  const double log_a = is_integer(alpha) ? log_a_integer(q, sigma, static_cast<int64_t>(alpha))
                                         : log_a_fractional(q, sigma, alpha);
  return log_a / (alpha - 1);
}

std::vector<double> compute_rdp(double q, double sigma, int64_t steps, const std::vector<double>& orders) {
  check_mechanism(q, sigma);
  check_orders(orders);
  check(steps >= 0, "privacy: steps must be >= 0 (got " + std::to_string(steps) + ")");
  std::vector<double> rdp(orders.size());
  for (size_t i = 0; i < orders.size(); ++i)
    rdp[i] = static_cast<double>(steps) * rdp_step(q, sigma, orders[i]);
  return rdp;
}

Epsilon epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                         Conversion conversion) {
  check_orders(orders);
  check_delta(delta);
  check(orders.size() == rdp.size(), "privacy: one RDP value per order expected (" +
                                         std::to_string(orders.size()) + " orders, " +
                                         std::to_string(rdp.size()) + " values)");
  Epsilon best{std::numeric_limits<double>::infinity(), orders[0]};
  for (size_t i = 0; i < orders.size(); ++i) {
    const double e = rdp[i] + conversion_offset(orders[i], delta, conversion);
    if (e < best.epsilon) best = {e, orders[i]};  // NaN never wins
  }
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

Epsilon compute_epsilon(double q, double sigma, int64_t steps, double delta, Conversion conversion,
                        const std::vector<double>& orders) {
  const std::vector<double> o = orders.empty() ? default_orders() : orders;
  check_delta(delta);
  return epsilon_from_rdp(o, compute_rdp(q, sigma, steps, o), delta, conversion);
}

double noise_for_epsilon(double q, int64_t steps, double delta, double target_epsilon, Conversion conversion,
                         const std::vector<double>& orders) {
  const std::vector<double> o = orders.empty() ? default_orders() : orders;
  check_mechanism(q, 1.0);
  check_orders(o);
  check_delta(delta);
  check(steps > 0, "privacy: steps must be > 0 to find a noise multiplier");
  check(
      target_epsilon > 0 && std::isfinite(target_epsilon),
      "privacy: the target epsilon must be positive and finite (got " + std::to_string(target_epsilon) + ")");
  if (q == 0) throw Error("privacy: with q = 0 no data is used and any noise meets the target");
  // With infinite noise the RDP is 0 and ε is the smallest conversion offset: no σ reaches below it.
  double floor = std::numeric_limits<double>::infinity();
  for (double a : o) floor = std::min(floor, conversion_offset(a, delta, conversion));
  floor = std::max(0.0, floor);
  if (target_epsilon <= floor) {
    std::ostringstream m;
    m.precision(6);
    m << "privacy: epsilon " << target_epsilon << " cannot be reached with delta " << delta
      << " and these orders (even infinite noise gives " << floor << "; a larger order lowers it)";
    throw Error(m.str());
  }
  auto eps = [&](double sigma) { return compute_epsilon(q, sigma, steps, delta, conversion, o).epsilon; };
  // Bracket: eps(lo) > target >= eps(hi).
  double lo = 1, hi = 1;
  if (eps(1) > target_epsilon) {
    while (eps(hi) > target_epsilon) {
      lo = hi;
      hi *= 2;
      check(hi < 1e12, "privacy: no noise multiplier below 1e12 reaches the target epsilon");
    }
  } else {
    while (eps(lo) <= target_epsilon) {
      hi = lo;
      lo /= 2;
      check(lo > 1e-6, "privacy: the target epsilon is met by every noise multiplier down to 1e-6");
    }
  }
  for (int it = 0; it < 200 && hi - lo > 1e-10 * hi; ++it) {
    const double mid = 0.5 * (lo + hi);
    (eps(mid) > target_epsilon ? lo : hi) = mid;
  }
  return hi;
}

}  // namespace xdrec::privacy
