// Distributed SGD models: BPR in its synchronous mode (bpr:batch=B) and the hybrid model, fitted over several
// ranks, equal the one-process model bitwise. In process over a communicator of threads (any build), and end
// to end, `mpirun -np 2 xdrec train --distributed` against `xdrec train` (skipped where the build has no
// MPI).
#include <gtest/gtest.h>
#include <unistd.h>

#include "dist/dist_util.h"
#include "models/clustered.h"

using namespace xdrec;
using namespace xdrec::testing_util;

namespace {

TensorMap fit_single(const std::string& spec, const Csr& train, int threads, FitContext ctx = FitContext{}) {
  ctx.threads = threads;
  ctx.seed = 7;
  auto m = create_model(spec);
  m->fit(train, ctx);
  return tensors_of(*m);
}

void expect_ranks_equal_single(const std::string& spec, const Csr& train, const FitContext& base = {}) {
  const TensorMap want = fit_single(spec, train, 2, base);
  for (int ranks : {2, 3}) {
    const std::vector<TensorMap> got = fit_distributed(spec, train, ranks, base);
    for (int r = 0; r < ranks; ++r)
      expect_same(want, got[size_t(r)],
                  spec + " on " + std::to_string(ranks) + " ranks, rank " + std::to_string(r));
  }
}

TEST(SgdDistributed, BprSynchronousRanksEqualOneProcessBitwise) {
  const auto data = testing_util::make_clustered(500, 240, 6, 10, 3);
  // Batches that do not divide the epoch (4500 triples) nor the ranks; one without item bias or negative
  // checks.
  for (const std::string spec :
       {"bpr:factors=12,epochs=3,batch=700", "bpr:factors=9,epochs=2,batch=64,bias=false",
        "bpr:factors=8,epochs=2,batch=5000,verify_negatives=false"})
    expect_ranks_equal_single(spec, data.train);
}

TEST(SgdDistributed, BprSynchronousIsThreadIndependentAndLearns) {
  const auto data = testing_util::make_clustered(600, 300, 6, 12, 5);
  const std::string spec = "bpr:factors=16,epochs=25,batch=512";
  expect_same(fit_single(spec, data.train, 1), fit_single(spec, data.train, 2), "threads 1 vs 2");
  FitContext ctx;
  ctx.threads = 2;
  ctx.seed = 3;
  auto m = create_model(spec);
  m->fit(data.train, ctx);
  EXPECT_GT(testing_util::held_out_auc(*m, data), 0.85);
  // Hogwild (the default) is another optimiser: its model differs.
  auto h = create_model("bpr:factors=16,epochs=25");
  ctx.threads = 1;
  h->fit(data.train, ctx);
  EXPECT_GT(testing_util::held_out_auc(*h, data), 0.85);
}

TEST(SgdDistributed, HogwildBprRefusesSeveralRanks) {
  const auto data = testing_util::make_clustered(100, 50, 2, 5, 1);
  // Rank 0 of two: the check comes before any collective.
  ThreadGroup group(2);
  ThreadGroup::Comm comm(group, 0);
  FitContext ctx;
  ctx.comm = &comm;
  try {
    create_model("bpr:epochs=1")->fit(data.train, ctx);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch=B > 0"), std::string::npos) << e.what();
  }
}

TEST(SgdDistributed, HybridRanksEqualOneProcessBitwise) {
  const auto data = testing_util::make_clustered(400, 200, 5, 8, 11);
  // Text vectors (item and profile) so that the projections' gradients are split over the ranks, and
  // categories; items 0-9 have no text (their ids are kept).
  Matrix item_text(200, 24), user_text(400, 24), cats(200, 3);
  Rng rng(5);
  for (size_t i = 10; i < item_text.rows; ++i)
    for (size_t k = 0; k < item_text.cols; ++k) item_text(i, k) = rng.normal() + (k == i % 5 ? 2.0f : 0.0f);
  for (float& v : user_text.data) v = rng.normal();
  for (size_t i = 0; i < cats.rows; ++i) cats(i, i % 3) = 1.0f;
  FitContext base;
  base.item_text = &item_text;
  base.user_text = &user_text;
  base.item_categories = &cats;
  for (const std::string spec : {"hybrid:factors=8,epochs=2,batch=300", "hybrid:factors=6,epochs=2,loss=bpr",
                                 "hybrid:factors=5,epochs=2,loss=mse,batch=777,ae=8,ae_epochs=2"})
    expect_ranks_equal_single(spec, data.train, base);
  // And without any text (ids only: nothing dense to split).
  expect_ranks_equal_single("hybrid:factors=8,epochs=2", data.train);
}

// ---- End to end over MPI ----------------------------------------------------------------------------------

TEST(SgdDistributed, MpirunTrainEqualsSingleProcessBitwise) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI (install libopenmpi-dev openmpi-bin)";
  const fs::path dir = fs::temp_directory_path() / ("xdrec_mpi_sgd_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = "synthetic:users=300,items=60";
  const std::string text = " --encoder tfidf:dim=16 --cache-dir " + (dir / "cache").string();
  struct Case {
    std::string name, model, extra;
  };
  for (const Case& c : {Case{"bpr", "bpr:factors=8,epochs=3,batch=256", ""},
                        Case{"hybrid", "hybrid:factors=8,epochs=2", text}}) {
    std::string out;
    const fs::path single = dir / (c.name + "_single"), two = dir / (c.name + "_2");
    ASSERT_EQ(run(cli() + " train " + data + " -m " + c.model + c.extra + " -o " + single.string() +
                      " --threads 2 --quiet",
                  out),
              0)
        << out;
    const int rc = run(mpirun_prefix() + "-np 2 " + cli() + " train " + data + " -m " + c.model + c.extra +
                           " -o " + two.string() + " --distributed --threads 1 --quiet",
                       out);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("over 2 processes"), std::string::npos) << out;
    const std::string want = read_bytes(single / "model.safetensors");
    ASSERT_FALSE(want.empty());
    EXPECT_TRUE(read_bytes(two / "model.safetensors") == want) << c.name << ": the tensors differ";
  }
  fs::remove_all(dir);
}

}  // namespace
