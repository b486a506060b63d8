// Cost before work: every registered model estimates its memory (and roughly its time) from its spec and the
// shape of the data. The estimates grow with the data, EASE's dense item x item matrices are counted, and for
// iALS and EASE the estimate is compared with the measured peak memory of a small fit.
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "test_util.h"
#include "xdrec/recommender.h"

using namespace xdrec;

namespace {

constexpr double kGiB = double(1ULL << 30);

DataShape shape(uint64_t users, uint64_t items, uint64_t nnz, uint32_t text_dim = 64, uint32_t domains = 2) {
  DataShape s;
  s.n_users = users;
  s.n_items = items;
  s.nnz = nnz;
  s.text_dim = text_dim;
  s.n_domains = domains;
  return s;
}

// Resident set size and its peak since the last reset, from /proc/self/status (bytes; 0 when unreadable).
uint64_t status_kb(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string k;
  while (f >> k) {
    if (k == key) {
      uint64_t v = 0;
      f >> v;
      return v * 1024;
    }
    std::string rest;
    std::getline(f, rest);
  }
  return 0;
}
// Resets the peak RSS (VmHWM) to the current RSS; false where the kernel does not allow it.
bool reset_peak() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return bool(f);
}

// A random interaction matrix (users x items, about per_user entries per user).
Csr random_matrix(uint32_t users, uint32_t items, uint32_t per_user, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint32_t> r, c;
  std::vector<float> v;
  for (uint32_t u = 0; u < users; ++u)
    for (uint32_t k = 0; k < per_user; ++k) {
      r.push_back(u);
      c.push_back(uint32_t(rng.below(items)));
      v.push_back(1.0f);
    }
  return Csr::from_triplets(users, items, r, c, v);
}

// Peak memory of fitting `spec` on x and scoring 1024 users, above what the process held before.
uint64_t measured_peak(const std::string& spec, const Csr& x) {
  // Large blocks come straight from mmap and go back on free, so that the peak counts this fit only.
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  mallopt(M_TRIM_THRESHOLD, 64 * 1024);
  malloc_trim(0);
  if (!reset_peak()) return 0;
  const uint64_t before = status_kb("VmRSS:");
  {
    auto m = create_model(spec);
    FitContext ctx;
    ctx.threads = 1;
    m->fit(x, ctx);
    std::vector<uint32_t> users(std::min<uint32_t>(1024, x.n_rows));
    for (uint32_t u = 0; u < users.size(); ++u) users[u] = u;
    Matrix out;
    m->score(users, out, 1);
  }
  const uint64_t peak = status_kb("VmHWM:");
  return peak > before ? peak - before : 0;
}

}  // namespace

TEST(Cost, EveryModelEstimatesAndGrowsWithTheData) {
  const DataShape small = shape(1000, 500, 20000), big = shape(8000, 4000, 160000);
  for (auto& m : registered_models()) {
    const ModelCost a = estimate_model_cost(m.name, small), b = estimate_model_cost(m.name, big);
    EXPECT_GT(a.bytes, 0u) << m.name;
    EXPECT_GT(b.bytes, a.bytes) << m.name << ": the estimate does not grow with the data";
    EXPECT_GE(a.seconds, 0.0) << m.name;
    EXPECT_GE(b.seconds, a.seconds) << m.name;
    EXPECT_FALSE(a.note.empty()) << m.name;
    // Each dimension on its own counts too.
    EXPECT_GT(estimate_model_cost(m.name, shape(1000, 4000, 20000)).bytes, a.bytes) << m.name << " items";
    EXPECT_GT(estimate_model_cost(m.name, shape(8000, 500, 20000)).bytes, a.bytes) << m.name << " users";
    EXPECT_GE(estimate_model_cost(m.name, shape(1000, 500, 160000)).bytes, a.bytes) << m.name << " nnz";
  }
}

TEST(Cost, EstimatesFollowTheParameters) {
  const DataShape s = shape(20000, 5000, 400000);
  EXPECT_GT(estimate_model_cost("ials:factors=256", s).bytes,
            estimate_model_cost("ials:factors=32", s).bytes);
  EXPECT_GT(estimate_model_cost("bpr:factors=256", s).bytes, estimate_model_cost("bpr:factors=32", s).bytes);
  EXPECT_GT(estimate_model_cost("ials:iterations=30", s).seconds,
            estimate_model_cost("ials:iterations=5", s).seconds);
  EXPECT_GT(estimate_model_cost("itemknn:neighbours=500", s).bytes,
            estimate_model_cost("itemknn:neighbours=50", s).bytes);
  EXPECT_GT(estimate_model_cost("hybrid:factors=128", s).bytes,
            estimate_model_cost("hybrid:factors=16", s).bytes);
  EXPECT_GT(estimate_model_cost("twotower:factors=128", s).bytes,
            estimate_model_cost("twotower:factors=16", s).bytes);
  DataShape wide = s;
  wide.text_dim = 768;
  EXPECT_GT(estimate_model_cost("textbridge", wide).bytes,
            estimate_model_cost("textbridge:ae=64", wide).bytes);
}

TEST(Cost, EaseCountsItsDenseItemMatrices) {
  const ModelCost c = estimate_model_cost("ease", shape(100000, 38000, 5000000));
  EXPECT_GT(double(c.bytes), 10 * kGiB) << c.bytes;
  EXPECT_GE(double(c.bytes), 12.0 * 38000.0 * 38000.0);
  EXPECT_LT(double(c.bytes), 14.0 * 38000.0 * 38000.0 + 2 * kGiB);
  EXPECT_GT(c.seconds, 60.0);
  EXPECT_NE(c.note.find("n_items^2"), std::string::npos) << c.note;
}

TEST(Cost, UnknownModelsAndBadParametersAreErrors) {
  EXPECT_TRUE(testing_util::throws_error([] { estimate_model_cost("no_such_model", shape(1, 1, 1)); },
                                         {"no_such_model"}));
  EXPECT_TRUE(
      testing_util::throws_error([] { estimate_model_cost("ials:factors=0", shape(1, 1, 1)); }, {"factors"}));
}

TEST(Cost, AvailableMemoryIsReadFromTheSystem) {
  const size_t avail = available_memory_bytes();
  EXPECT_GT(avail, size_t(16) << 20);  // at least 16 MiB free to run this test at all
  EXPECT_LT(double(avail), 64.0 * 1024 * kGiB);
}

// The estimate against the measured peak of a real fit, loosely (within a factor of 4 either way).
TEST(Cost, EstimateMatchesTheMeasuredPeakOfASmallFit) {
  struct Case {
    std::string spec;
    uint32_t users, items, per_user;
  };
  for (const Case& c :
       {Case{"ials:factors=128,iterations=1", 40000, 20000, 10}, Case{"ease:lambda=100", 3000, 2500, 20}}) {
    const Csr x = random_matrix(c.users, c.items, c.per_user, 5);
    const uint64_t measured = measured_peak(c.spec, x);
    if (measured == 0) GTEST_SKIP() << "peak RSS cannot be reset or read here";
    const ModelCost est = estimate_model_cost(c.spec, shape(c.users, c.items, x.nnz(), 0, 1));
    std::printf("%s: estimate %.1f MiB, measured peak %.1f MiB\n", c.spec.c_str(),
                double(est.bytes) / (1 << 20), double(measured) / (1 << 20));
    EXPECT_LT(double(est.bytes), 4.0 * double(measured)) << c.spec;
    EXPECT_GT(double(est.bytes), double(measured) / 4.0) << c.spec;
  }
}
