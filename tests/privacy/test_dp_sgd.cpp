// The clip-and-noise aggregation of a DP-SGD step: each contribution is bounded by the clipping norm over all
// its pieces together, small ones pass unchanged, the noise has the stated scale, and without noise the
// result is the plain sum over the denominator.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "xdrec/privacy.h"

using namespace xdrec;
using privacy::DpAggregator;

namespace {

double norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

}  // namespace

TEST(DpAggregator, ClipsEachContributionOverAllItsPieces) {
  // One contribution in two pieces, norm sqrt(3^2 + 4^2 + 12^2) = 13: scaled to the clip (2) as a whole.
  DpAggregator agg(10, 2.0);
  const std::vector<float> a{3, 4}, b{12};
  const std::vector<DpAggregator::Piece> pieces{{0, a}, {7, b}};
  EXPECT_NEAR(agg.add(pieces), 2.0 / 13.0, 1e-12);
  EXPECT_NEAR(norm(agg.sum()), 2.0, 1e-9);
  EXPECT_NEAR(agg.sum()[0], 3.0 * 2.0 / 13.0, 1e-9);
  EXPECT_NEAR(agg.sum()[7], 12.0 * 2.0 / 13.0, 1e-9);
  EXPECT_EQ(agg.clipped(), 1u);
  // A contribution within the clip is added as it is.
  const std::vector<float> c{0.5f, -0.5f};
  const std::vector<DpAggregator::Piece> small{{2, c}};
  EXPECT_EQ(agg.add(small), 1.0);
  EXPECT_EQ(agg.sum()[2], 0.5);
  EXPECT_EQ(agg.sum()[3], -0.5);
  EXPECT_EQ(agg.contributions(), 2u);
  EXPECT_EQ(agg.clipped(), 1u);
}

TEST(DpAggregator, OneUnitMovesTheSumByAtMostTheClip) {
  // Neighbouring sets of contributions (one unit added, however large) give sums at most `clip` apart.
  Rng rng(5);
  std::vector<std::vector<float>> units(20, std::vector<float>(16));
  for (auto& u : units)
    for (float& v : u) v = 10.0f * rng.normal();
  const double clip = 1.5;
  DpAggregator with(16, clip), without(16, clip);
  for (size_t k = 0; k < units.size(); ++k) {
    const std::vector<DpAggregator::Piece> p{{0, units[k]}};
    with.add(p);
    if (k != 7) without.add(p);
  }
  std::vector<double> diff(16);
  for (size_t j = 0; j < 16; ++j) diff[j] = with.sum()[j] - without.sum()[j];
  EXPECT_LE(norm(diff), clip + 1e-9);
  EXPECT_GT(norm(diff), clip - 1e-6);  // this unit was far above the clip
}

TEST(DpAggregator, NoiseHasTheStatedScaleAndTheDenominatorDivides) {
  const size_t dim = 200000;
  DpAggregator agg(dim, 0.5);
  Rng rng(11);
  agg.finish(2.0, 4.0, rng);  // N(0, (2 * 0.5)^2) / 4: standard deviation 0.25
  double s = 0, s2 = 0;
  for (double v : agg.sum()) s += v, s2 += v * v;
  const double mean = s / dim, sd = std::sqrt(s2 / dim - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.005);
  EXPECT_NEAR(sd, 0.25, 0.005);
  // No noise: the plain sum over the denominator.
  DpAggregator plain(3, 1e30);
  const std::vector<float> a{1, 2, 3}, b{4, 5, 6};
  plain.add(std::vector<DpAggregator::Piece>{{0, a}});
  plain.add(std::vector<DpAggregator::Piece>{{0, b}});
  plain.finish(0.0, 2.0, rng);
  EXPECT_EQ(plain.sum(), (std::vector<double>{2.5, 3.5, 4.5}));
}

TEST(DpAggregator, RejectsBadInput) {
  EXPECT_THROW(DpAggregator(4, 0.0), Error);
  DpAggregator agg(4, 1.0);
  const std::vector<float> a{1, 2, 3};
  EXPECT_THROW(agg.add(std::vector<DpAggregator::Piece>{{2, a}}), Error);
  const std::vector<float> bad{NAN};
  EXPECT_THROW(agg.add(std::vector<DpAggregator::Piece>{{0, bad}}), Error);
  Rng rng(1);
  EXPECT_THROW(agg.finish(1.0, 0.0, rng), Error);
}
