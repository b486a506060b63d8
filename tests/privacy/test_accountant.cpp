// RDP accountant: agreement with the reference fixture (60-digit arithmetic) at every listed order, both ε
// conversions and their orders; the fractional-order series against the integer one; the q = 1 closed form;
// monotonicity; the noise-for-ε inverse.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"
#include "xdrec/privacy.h"

namespace fs = std::filesystem;
using namespace xdrec::privacy;

namespace {

std::string fixture_path() {
  return (fs::path(XDREC_SHARED_DATA) / ".." / "fixtures" / "dp" / "rdp_reference.jsonl")
      .lexically_normal()
      .string();
}

std::vector<nlohmann::json> fixture() {
  std::vector<nlohmann::json> rows;
  std::ifstream in(fixture_path());
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

double rel_err(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-300);
}

}  // namespace

TEST(Accountant, MatchesTheReferenceFixture) {
  if (!fs::exists(fixture_path())) GTEST_SKIP() << "no fixture at " << fixture_path();
  const auto rows = fixture();
  ASSERT_EQ(rows.size(), 8u);
  double worst_rdp = 0, worst_eps = 0;
  for (const auto& r : rows) {
    const double q = r["q"], sigma = r["noise_multiplier"], delta = r["delta"];
    const int64_t steps = r["steps"];
    SCOPED_TRACE("q=" + std::to_string(q) + " sigma=" + std::to_string(sigma) +
                 " steps=" + std::to_string(steps));
    for (const auto& [order, want] : r["rdp"].items()) {
      const double got = compute_rdp(q, sigma, steps, {std::stod(order)})[0];
      const double e = rel_err(got, want.get<double>());
      worst_rdp = std::max(worst_rdp, e);
      EXPECT_LT(e, 1e-6) << "order " << order << ": " << got << " vs " << want;
    }
    const Epsilon c = compute_epsilon(q, sigma, steps, delta, Conversion::kClassic);
    const Epsilon i = compute_epsilon(q, sigma, steps, delta, Conversion::kImproved);
    EXPECT_LT(rel_err(c.epsilon, r["epsilon_classic"]), 1e-6) << c.epsilon;
    EXPECT_LT(rel_err(i.epsilon, r["epsilon_improved"]), 1e-6) << i.epsilon;
    EXPECT_EQ(c.order, r["order_classic"].get<double>());
    EXPECT_EQ(i.order, r["order_improved"].get<double>());
    EXPECT_LE(i.epsilon, c.epsilon);
    worst_eps = std::max(
        {worst_eps, rel_err(c.epsilon, r["epsilon_classic"]), rel_err(i.epsilon, r["epsilon_improved"])});
  }
  std::printf("largest relative error vs the fixture: rdp %.3g, epsilon %.3g\n", worst_rdp, worst_eps);
}

TEST(Accountant, PublishedMnistFigure) {
  // 60 epochs of MNIST at batch 256 with σ = 1.1: the TensorFlow Privacy tutorial reports ε ≈ 3.01.
  const Epsilon e = compute_epsilon(256.0 / 60000, 1.1, 14063, 1e-5);
  EXPECT_NEAR(e.epsilon, 3.01, 0.01);
}

TEST(Accountant, FractionalSeriesAgreesWithTheIntegerSeries) {
  for (double q : {0.001, 0.01, 0.05, 0.3})
    for (double sigma : {0.6, 1.1, 4.0})
      for (int alpha : {2, 3, 8, 17, 64}) {
        const double a = log_a_integer(q, sigma, alpha), b = log_a_fractional(q, sigma, alpha);
        EXPECT_LT(rel_err(b, a), 1e-9)
            << "q=" << q << " sigma=" << sigma << " alpha=" << alpha << ": " << b << " vs " << a;
      }
}

TEST(Accountant, FractionalOrdersAreContinuousAndMonotone) {
  const double q = 0.01, sigma = 1.1;
  // Just off an integer order, the fractional series meets the integer one.
  for (double a : {2.0, 8.0, 32.0}) {
    const double at = rdp_step(q, sigma, a);
    EXPECT_LT(rel_err(rdp_step(q, sigma, a + 1e-7), at), 1e-5) << a;
    EXPECT_LT(rel_err(rdp_step(q, sigma, a - 1e-7), at), 1e-5) << a;
  }
  // RDP is non-decreasing in the order (Rényi divergences are).
  double prev = 0;
  for (double a = 1.1; a <= 40; a += 0.25) {
    const double r = rdp_step(q, sigma, a);
    EXPECT_TRUE(std::isfinite(r)) << a;
    EXPECT_GE(r, prev * (1 - 1e-9)) << a;
    prev = r;
  }
  // Fractional orders can only lower ε (the minimum is over more orders).
  std::vector<double> orders = default_orders();
  const Epsilon base = compute_epsilon(q, sigma, 1000, 1e-5, Conversion::kClassic, orders);
  for (double a = 2.25; a < 20; a += 0.5) orders.push_back(a);
  const Epsilon more = compute_epsilon(q, sigma, 1000, 1e-5, Conversion::kClassic, orders);
  EXPECT_LE(more.epsilon, base.epsilon);
  EXPECT_GT(more.epsilon, base.epsilon * 0.95);
}

TEST(Accountant, NoSubsamplingIsTheGaussianMechanism) {
  for (double sigma : {0.5, 1.0, 5.0})
    for (double a : {1.5, 2.0, 7.0, 100.0, 256.0})
      EXPECT_DOUBLE_EQ(rdp_step(1.0, sigma, a), a / (2 * sigma * sigma));
  // The series reach the closed form as q -> 1.
  EXPECT_LT(rel_err(rdp_step(1 - 1e-12, 2.0, 8), 8 / 8.0), 1e-6);
  EXPECT_LT(rel_err(rdp_step(1 - 1e-12, 2.0, 8.5), 8.5 / 8.0), 1e-6);
  // No data seen, no privacy spent.
  EXPECT_EQ(rdp_step(0.0, 1.0, 4), 0.0);
}

TEST(Accountant, LargeOrdersDoNotOverflow) {
  for (double a : {256.0, 1024.0, 4096.0, 300.5}) {
    const double r = rdp_step(0.02, 0.6, a);
    EXPECT_TRUE(std::isfinite(r) && r > 0) << a << ": " << r;
  }
}

TEST(Accountant, NoiseForEpsilonRoundTrips) {
  for (auto conv : {Conversion::kClassic, Conversion::kImproved})
    for (auto [q, steps, target] :
         std::vector<std::tuple<double, int64_t, double>>{{0.01, 1000, 2.0},
                                                          {256.0 / 60000, 14063, 3.0},
                                                          {0.05, 2000, 8.0},
                                                          {1.0, 10, 1.0},
                                                          {0.001, 100, 0.5}}) {
      const double sigma = noise_for_epsilon(q, steps, 1e-5, target, conv);
      const double got = compute_epsilon(q, sigma, steps, 1e-5, conv).epsilon;
      EXPECT_LE(got, target * (1 + 1e-12)) << q << " " << steps;
      EXPECT_GT(got, target * (1 - 1e-6)) << q << " " << steps;
      // Slightly less noise breaks the target.
      EXPECT_GT(compute_epsilon(q, sigma * (1 - 1e-6), steps, 1e-5, conv).epsilon, target);
    }
  // Back to the fixture's first row: σ = 1.1 gives ε = 2.0868 (classic).
  EXPECT_NEAR(noise_for_epsilon(0.01, 1000, 1e-5, 2.086796113574304), 1.1, 1e-8);
}

TEST(Accountant, BadInputIsAClearError) {
  using xdrec::testing_util::throws_error;
  EXPECT_TRUE(throws_error([] { compute_epsilon(1.5, 1.0, 10, 1e-5); }, {"sampling rate"}));
  EXPECT_TRUE(throws_error([] { compute_epsilon(0.1, 0.0, 10, 1e-5); }, {"noise multiplier"}));
  EXPECT_TRUE(throws_error([] { compute_epsilon(0.1, 1.0, 10, 0.0); }, {"delta"}));
  EXPECT_TRUE(
      throws_error([] { compute_epsilon(0.1, 1.0, 10, 1e-5, Conversion::kClassic, {0.5}); }, {"order"}));
  EXPECT_TRUE(throws_error([] { parse_conversion("best"); }, {"classic or improved"}));
  // Infinite noise still costs log(1/δ)/(α − 1) at the largest order: ε = 0.01 cannot be reached.
  EXPECT_TRUE(throws_error([] { noise_for_epsilon(0.01, 1000, 1e-5, 0.01); }, {"cannot be reached"}));
}
