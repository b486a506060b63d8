// The HTML report from JSON shapes: every chart carries its data, unknown inputs are listed, none is an
// error.
#include <gtest/gtest.h>

#include <regex>

#include "test_util.h"
#include "xdrec/report.h"

using namespace xdrec;
using json = nlohmann::json;

TEST(Report, ChartsFromEvalReplayAndRatings) {
  const json eval = json::parse(R"({"dataset": "d", "task": "rating", "models": {"svd": {
      "overall": {"rmse": 0.9, "mae": 0.7, "ndcg@10": 0.1, "diversity@10": 0.5},
      "by_domain": {"books": {"rmse": 0.8}, "films": {"rmse": 1.0}},
      "ci95_by_domain": {"books": {"rmse": 0.01}},
      "by_cohort": {"warm-users": {"rmse": 0.85}},
      "rating_pairs": [[3.5, 4.0], [2.0, 1.0], [4.5, 5.0]]}}})");
  const json replay = json::parse(R"({"rounds": [{"round": 1, "no_feedback": {"ndcg": 0.1},
      "exclusion_only": {"ndcg": 0.1}, "feedback": {"ndcg": 0.1}}]})");
  const json ratings = json::parse(R"({"models": {"svd": {"rmse": {"mean": 0.93, "ci95": 0.01}}}})");
  const json other = json::parse(R"({"a": 1})");
  const std::string html =
      render_report({{"e.json", eval}, {"r.json", replay}, {"b.json", ratings}, {"x.json", other}});
  std::map<std::string, int> points;
  const std::regex fig("data-chart='([a-z-]+)' data-points='([0-9]+)'");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), fig); it != std::sregex_iterator(); ++it)
    points[(*it)[1]] = std::stoi((*it)[2]);
  EXPECT_EQ(points["per-domain"], 2);
  EXPECT_EQ(points["per-cohort"], 1);
  EXPECT_EQ(points["rating-scatter"], 3);
  EXPECT_EQ(points["rating-error"], 3);  // true ratings 1, 4, 5
  EXPECT_EQ(points["accuracy-diversity"], 1);
  EXPECT_EQ(points["replay"], 3);
  EXPECT_EQ(points["ratings-rmse"], 1);
  EXPECT_NE(html.find("RMSE 0.7071, MAE 0.6667"), std::string::npos);  // sqrt((0.25 + 1 + 0.25) / 3), 2 / 3
  EXPECT_NE(html.find("x.json: not a shape"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained, nothing runs
  EXPECT_TRUE(testing_util::throws_error(
      [&] {
        render_report({{"x.json", other}});
      },
      {"none of the inputs"}));
}

TEST(Report, LongTailTrainingCurvesAndTheGanBenchmark) {
  const json eval = json::parse(R"({"dataset": "d", "models": {"cfgan": {
      "overall": {"ndcg@10": 0.2, "serendipity@10": 0.05},
      "long_tail": {"recommended": [0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0, 0, 0, 0],
                    "interacted": [0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01]},
      "training_curves": {"discriminator": [1.2, 1.0, 0.9], "generator": [3.0, 2.0, 1.5]}}}})");
  const json gan = json::parse(R"({"cfgan-protocol": {"cfgan": {"p@5": {"mean": 0.4, "ci95": 0.01},
      "ndcg@5": {"mean": 0.42, "ci95": 0.01}}, "ials": {"p@5": {"mean": 0.45, "ci95": 0.01}}},
      "augmentation": {"synthetic/sparse-kitchen": {"ials": {"ndcg@10": {"mean": 0.1, "ci95": 0.01}},
                                                    "ials +gan:domain=kitchen": {"ndcg@10": {"mean": 0.11, "ci95": 0.02}}}}})");
  const std::string html = render_report({{"e.json", eval}, {"g.json", gan}});
  std::map<std::string, int> points;
  const std::regex fig("data-chart='([a-z/+-]+)' data-points='([0-9]+)'");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), fig); it != std::sregex_iterator(); ++it)
    points[(*it)[1]] = std::stoi((*it)[2]);
  EXPECT_EQ(points["long-tail"], 20);       // interacted + one model, ten deciles each
  EXPECT_EQ(points["training-curves"], 6);  // two curves of three epochs
  EXPECT_EQ(points["cfgan-protocol"], 3);   // ials has no ndcg@5
  EXPECT_EQ(points["augmentation-synthetic/sparse-kitchen"], 2);
  EXPECT_NE(html.find("serendipity@10"), std::string::npos);
}
