// Per-list metrics, beyond-accuracy metrics and confidence intervals on hand-computed cases.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "xdrec/metrics.h"

using namespace xdrec;

namespace {

using V = std::vector<uint32_t>;
constexpr double kEps = 1e-9;
const double kL3 = 1.0 / std::log2(3.0);  // discount of rank 2: 0.630930
const double kL5 = 1.0 / std::log2(5.0);  // discount of rank 4: 0.430677

}  // namespace

// ranked = [5, 3, 8, 1, 9], relevant = {1, 3, 7}: hits at ranks 2 (item 3) and 4 (item 1).
TEST(ListMetrics, MixedHitsAtFive) {
  const V ranked{5, 3, 8, 1, 9}, rel{1, 3, 7};
  // precision = 2 hits / 5 = 0.4
  EXPECT_NEAR(precision_at_k(ranked, rel, 5), 0.4, kEps);
  // recall = 2 hits / 3 relevant
  EXPECT_NEAR(recall_at_k(ranked, rel, 5), 2.0 / 3.0, kEps);
  // f1 = 2 * 0.4 * (2/3) / (0.4 + 2/3) = 0.5333 / 1.0667 = 0.5
  EXPECT_NEAR(f1_at_k(ranked, rel, 5), 0.5, kEps);
  // DCG = 1/log2(3) + 1/log2(5); IDCG over min(3, 5) = 3 positions = 1 + 1/log2(3) + 1/log2(4)
  EXPECT_NEAR(ndcg_at_k(ranked, rel, 5), (kL3 + kL5) / (1.0 + kL3 + 0.5), kEps);
  EXPECT_NEAR(ndcg_at_k(ranked, rel, 5), 0.498190, 1e-6);
  EXPECT_EQ(hit_rate_at_k(ranked, rel, 5), 1.0);
  // AP = (precision@2 + precision@4) / min(3, 5) = (1/2 + 2/4) / 3 = 1/3
  EXPECT_NEAR(average_precision_at_k(ranked, rel, 5), 1.0 / 3.0, kEps);
  // first hit at rank 2
  EXPECT_NEAR(reciprocal_rank_at_k(ranked, rel, 5), 0.5, kEps);
}

TEST(ListMetrics, MixedHitsAtThreeAndOne) {
  const V ranked{5, 3, 8, 1, 9}, rel{1, 3, 7};
  // k = 3: one hit (rank 2).
  EXPECT_NEAR(precision_at_k(ranked, rel, 3), 1.0 / 3.0, kEps);
  EXPECT_NEAR(recall_at_k(ranked, rel, 3), 1.0 / 3.0, kEps);
  EXPECT_NEAR(f1_at_k(ranked, rel, 3), 1.0 / 3.0, kEps);  // P = R = 1/3 -> F1 = 1/3
  // DCG = 1/log2(3); IDCG over min(3, 3) = 3 positions
  EXPECT_NEAR(ndcg_at_k(ranked, rel, 3), kL3 / (1.0 + kL3 + 0.5), kEps);
  EXPECT_NEAR(average_precision_at_k(ranked, rel, 3), 0.5 / 3.0, kEps);  // (1/2) / 3
  EXPECT_NEAR(reciprocal_rank_at_k(ranked, rel, 3), 0.5, kEps);
  // k = 1: item 5 is not relevant -> everything 0.
  for (auto f : {precision_at_k, recall_at_k, f1_at_k, ndcg_at_k, hit_rate_at_k, average_precision_at_k,
                 reciprocal_rank_at_k})
    EXPECT_EQ(f(ranked, rel, 1), 0.0);
}

TEST(ListMetrics, IdealDcgAndApUseMinOfRelevantAndK) {
  // 4 relevant items, the list's first 2 are relevant: at k = 2 this is a perfect list.
  const V ranked{1, 2, 9}, rel{1, 2, 3, 4};
  EXPECT_NEAR(ndcg_at_k(ranked, rel, 2), 1.0, kEps);               // DCG = IDCG = 1 + 1/log2(3)
  EXPECT_NEAR(average_precision_at_k(ranked, rel, 2), 1.0, kEps);  // (1/1 + 2/2) / min(4, 2)
  EXPECT_NEAR(recall_at_k(ranked, rel, 2), 0.5, kEps);             // recall still divides by |relevant|
  // k = 3: DCG = 1 + 1/log2(3); IDCG = 1 + 1/log2(3) + 1/2; AP = (1 + 1) / 3
  EXPECT_NEAR(ndcg_at_k(ranked, rel, 3), (1.0 + kL3) / (1.5 + kL3), kEps);
  EXPECT_NEAR(average_precision_at_k(ranked, rel, 3), 2.0 / 3.0, kEps);
}

TEST(ListMetrics, SingleTargetAndShortList) {
  const V rel{7};
  // Target at rank 3 of 10: P = 1/10, NDCG = 1/log2(4) = 0.5, AP = (1/3)/1, RR = 1/3.
  const V ranked{1, 2, 7, 4, 5, 6, 8, 9, 10, 11};
  EXPECT_NEAR(precision_at_k(ranked, rel, 10), 0.1, kEps);
  EXPECT_NEAR(recall_at_k(ranked, rel, 10), 1.0, kEps);
  EXPECT_NEAR(f1_at_k(ranked, rel, 10), 2 * 0.1 / 1.1, kEps);
  EXPECT_NEAR(ndcg_at_k(ranked, rel, 10), 0.5, kEps);
  EXPECT_NEAR(average_precision_at_k(ranked, rel, 10), 1.0 / 3.0, kEps);
  EXPECT_NEAR(reciprocal_rank_at_k(ranked, rel, 10), 1.0 / 3.0, kEps);
  // A list shorter than k: precision still divides by k (1 hit / 10).
  const V short_list{7};
  EXPECT_NEAR(precision_at_k(short_list, rel, 10), 0.1, kEps);
  EXPECT_NEAR(ndcg_at_k(short_list, rel, 10), 1.0, kEps);
}

TEST(ListMetrics, EmptyRelevantAndBadArguments) {
  const V ranked{1, 2}, none{};
  for (auto f : {precision_at_k, recall_at_k, f1_at_k, ndcg_at_k, hit_rate_at_k, average_precision_at_k,
                 reciprocal_rank_at_k})
    EXPECT_EQ(f(ranked, none, 2), 0.0);
  EXPECT_THROW(ndcg_at_k(ranked, V{3, 1}, 2), Error);    // relevant not sorted
  EXPECT_THROW(precision_at_k(ranked, V{1}, 0), Error);  // k = 0
}

TEST(BeyondAccuracy, Coverage) {
  // distinct {0, 1, 2} of 5 items
  EXPECT_NEAR(catalogue_coverage({{0, 1}, {1, 2}}, 5), 3.0 / 5.0, kEps);
  EXPECT_EQ(catalogue_coverage({}, 5), 0.0);
  EXPECT_THROW(catalogue_coverage({{5}}, 5), Error);
}

TEST(BeyondAccuracy, IntraListDiversity) {
  // item 0 = (1,0), 1 = (0,1), 2 = (1,1), 3 = (0,0)
  Matrix v(4, 2);
  v(0, 0) = 1;
  v(1, 1) = 1;
  v(2, 0) = v(2, 1) = 1;
  // {0,1,2}: cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/sqrt(2): 1 - (sqrt(2)/3) = 0.528595
  // {0,2}: 1 - 1/sqrt(2) = 0.292893. {1} has < 2 items: skipped. Mean = 0.410744.
  const double a = 1.0 - std::sqrt(2.0) / 3.0, b = 1.0 - 1.0 / std::sqrt(2.0);
  EXPECT_NEAR(intra_list_diversity({{0, 1, 2}, {0, 2}, {1}}, v), (a + b) / 2, 1e-7);
  EXPECT_NEAR(intra_list_diversity({{0, 1, 2}, {0, 2}, {1}}, v), 0.410744, 1e-6);
  // A zero vector is orthogonal to everything: diversity 1. Identical directions: 0.
  EXPECT_NEAR(intra_list_diversity({{0, 3}}, v), 1.0, kEps);
  Matrix w(2, 3, 2.0f);
  EXPECT_NEAR(intra_list_diversity({{0, 1}}, w), 0.0, 1e-7);
  EXPECT_EQ(intra_list_diversity({{1}}, v), 0.0);  // no list with 2 items
}

TEST(BeyondAccuracy, NoveltyWithZeroPopularity) {
  // pop = {8, 2, 1, 0}, 8 users. {0,1}: (-log2(8/8) - log2(2/8)) / 2 = (0 + 2) / 2 = 1.
  // {2,3}: -log2(1/8) = 3; item 3 never seen in training counts as popularity 1: 3. Mean (3+3)/2 = 3.
  // Over the lists: (1 + 3) / 2 = 2.
  const std::vector<uint32_t> pop{8, 2, 1, 0};
  EXPECT_NEAR(novelty({{0, 1}, {2, 3}}, pop, 8), 2.0, kEps);
  EXPECT_NEAR(novelty({{3}}, pop, 8), 3.0, kEps);
  EXPECT_THROW(novelty({{0}}, pop, 4), Error);  // popularity 8 > 4 users
  EXPECT_THROW(novelty({{4}}, pop, 8), Error);  // no popularity for item 4
}

TEST(BeyondAccuracy, Gini) {
  // counts over 3 items: item0 3, item1 1, item2 0 -> sorted [0, 1, 3], total 4.
  // sum (2j - n - 1) c_j = (-2)(0) + (0)(1) + (2)(3) = 6; G = 6 / (3 * 4) = 0.5
  EXPECT_NEAR(gini_index({{0}, {0}, {1}, {0}}, 3), 0.5, kEps);
  // every item equally often: 0
  EXPECT_NEAR(gini_index({{0, 1}, {2, 0}, {1, 2}}, 3), 0.0, kEps);
  // one item of 4 gets everything: [0,0,0,5] -> (8-5)*5 / (4*5) = 3/4 = (n-1)/n
  EXPECT_NEAR(gini_index({{2}, {2}, {2}, {2}, {2}}, 4), 0.75, kEps);
  EXPECT_EQ(gini_index({}, 4), 0.0);
}

TEST(ConfidenceInterval, MeanAndHalfWidth) {
  // {1,2,3,4}: mean 2.5; s^2 = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; half-width = t(0.975, 3) * s / sqrt(4)
  // = 3.182446 * 1.290994 / 2 = 2.054260
  const std::vector<double> x{1, 2, 3, 4};
  const MeanCI ci = mean_ci95(x);
  EXPECT_EQ(ci.n, 4u);
  EXPECT_NEAR(ci.mean, 2.5, kEps);
  EXPECT_NEAR(ci.ci95, 3.182446305 * std::sqrt(5.0 / 3.0) / 2.0, 1e-9);
  EXPECT_NEAR(ci.ci95, 2.054260, 1e-6);
  // constant sample: zero width; one value: undefined (NaN); none: NaN mean
  EXPECT_EQ(mean_ci95(std::vector<double>{0.3, 0.3, 0.3}).ci95, 0.0);
  EXPECT_TRUE(std::isnan(mean_ci95(std::vector<double>{1.0}).ci95));
  EXPECT_NEAR(mean_ci95(std::vector<double>{1.0}).mean, 1.0, kEps);
  EXPECT_TRUE(std::isnan(mean_ci95(std::vector<double>{}).mean));
}

// The t quantile is checked against the distribution itself: the integral of the density of Student's t
// from 0 to t_{0.975}(df) must be 0.475 (Simpson's rule).
TEST(ConfidenceInterval, StudentTQuantileMatchesTheDensity) {
  for (size_t df : {1, 2, 3, 5, 10, 29, 30, 31, 45, 100, 1000, 100000}) {
    const double v = static_cast<double>(df);
    const double c = std::exp(std::lgamma((v + 1) / 2) - std::lgamma(v / 2)) / std::sqrt(v * M_PI);
    auto pdf = [&](double x) { return c * std::pow(1 + x * x / v, -(v + 1) / 2); };
    const double t = student_t_975(df);
    const int n = 20000;
    const double h = t / n;
    double s = pdf(0) + pdf(t);
    for (int i = 1; i < n; ++i) s += (i % 2 ? 4 : 2) * pdf(i * h);
    EXPECT_NEAR(s * h / 3, 0.475, 1e-7) << "df=" << df;
  }
  EXPECT_NEAR(student_t_975(1000000), 1.959964, 1e-5);  // tends to the normal quantile
  EXPECT_THROW(student_t_975(0), Error);
}
