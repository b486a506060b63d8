// MovieLens 100k, every rating a positive, 20% of each user's ratings held out by a hash of (user, item):
// each personalised model must clearly beat popularity on recall@10 (by the model's own margin).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include "xdrec/rank.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

struct Case {
  std::string spec;
  int threads;
  double margin;  // required recall@10 advantage over popularity
};

struct MovieLens {
  Csr train, test;
  std::vector<uint32_t> users;
};

bool load(MovieLens& ml, const std::string& path) {
  std::ifstream f(path);
  if (!f) return false;
  std::vector<uint32_t> ru, ri, tu, ti;
  uint32_t u, i, nu = 0, ni = 0;
  int rating;
  long ts;
  while (f >> u >> i >> rating >> ts) {
    nu = std::max(nu, u);
    ni = std::max(ni, i);
    const bool test = splitmix64((uint64_t(u) << 20) | i) % 5 == 0;
    (test ? tu : ru).push_back(u - 1);
    (test ? ti : ri).push_back(i - 1);
  }
  std::vector<float> ones(ru.size(), 1.0f), ones_t(tu.size(), 1.0f);
  ml.train = Csr::from_triplets(nu, ni, ru, ri, ones);
  ml.test = Csr::from_triplets(nu, ni, tu, ti, ones_t);
  ml.users.resize(nu);
  for (uint32_t x = 0; x < nu; ++x) ml.users[x] = x;
  return true;
}

std::unique_ptr<Recommender> fit(const std::string& spec, const Csr& x, int threads) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = threads;
  m->fit(x, ctx);
  return m;
}

double recall_at_10(const Recommender& m, const MovieLens& ml) {
  RecommendOptions opt;
  opt.k = 10;
  opt.exclude = &ml.train;
  opt.threads = 2;
  auto recs = recommend(m, ml.users, opt);
  double sum = 0;
  int n = 0;
  for (uint32_t x = 0; x < ml.users.size(); ++x) {
    if (ml.test.row_size(x) == 0) continue;
    int hits = 0;
    for (auto& r : recs[x]) hits += ml.test.contains(x, r.item);
    sum += double(hits) / double(std::min<size_t>(10, ml.test.row_size(x)));
    ++n;
  }
  return sum / n;
}

class MovieLens100k : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(MovieLens100k, BeatsPopularity) {
  const Case& c = GetParam();
  const std::string path = std::string(XDREC_SHARED_DATA) + "/movielens_ml-100k/u.data";
  MovieLens ml;
  if (!load(ml, path)) GTEST_SKIP() << "MovieLens 100k not found at " << path;
  Timer t;
  auto model = fit(c.spec, ml.train, c.threads);
  const double fit_s = t.seconds();
  const double r_model = recall_at_10(*model, ml), r_pop = recall_at_10(*fit("popular", ml.train, 1), ml);
  std::printf("ml-100k recall@10: %s %.4f (fit %.3f s, %d threads), popular %.4f\n", c.spec.c_str(), r_model,
              fit_s, c.threads, r_pop);
  RecordProperty("recall_" + c.spec, std::to_string(r_model));
  EXPECT_GT(r_model, r_pop + c.margin);
}

INSTANTIATE_TEST_SUITE_P(Models, MovieLens100k,
                         ::testing::Values(Case{"ease", 2, 0.15}, Case{"itemknn", 2, 0.08}),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.spec; });
