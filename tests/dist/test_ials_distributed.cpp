// Distributed iALS: the model fitted over several ranks equals the one-process model bitwise. In process,
// over a communicator of threads (any build, several Gram blocks, both solvers); and end to end, `mpirun -np
// 2/3 xdrec train --distributed` against `xdrec train` (skipped where the build has no MPI).
#include <gtest/gtest.h>
#include <unistd.h>

#include "dist/dist_util.h"
#include "models/clustered.h"

using namespace xdrec;
using namespace xdrec::testing_util;

namespace {

TEST(IalsDistributed, ThreadRanksEqualOneProcessBitwise) {
  // 9000 users: three Gram blocks of 4096 rows on the user side, owned by different ranks.
  const auto data = testing_util::make_clustered(9000, 700, 7, 12, 3);
  for (const std::string spec :
       {"ials:factors=12,iterations=2", "ials:factors=8,iterations=2,solver=cholesky"}) {
    auto single = create_model(spec);
    FitContext ctx;
    ctx.threads = 2;
    ctx.seed = 7;
    single->fit(data.train, ctx);
    const TensorMap want = tensors_of(*single);
    for (int ranks : {2, 3}) {
      const std::vector<TensorMap> got = fit_distributed(spec, data.train, ranks);
      for (int r = 0; r < ranks; ++r)
        expect_same(want, got[size_t(r)],
                    spec + " on " + std::to_string(ranks) + " ranks, rank " + std::to_string(r));
    }
  }
}

TEST(IalsDistributed, OnlyDistributedModelsAcceptSeveralRanks) {
  std::vector<std::string> names;
  for (const ModelInfo& m : registered_models())
    if (m.traits.distributed) names.push_back(m.name);
  EXPECT_EQ(names, (std::vector<std::string>{"bpr", "hybrid", "ials"}));
}

// ---- End to end over MPI ----------------------------------------------------------------------------------

TEST(IalsDistributed, MpirunTrainEqualsSingleProcessBitwise) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI (install libopenmpi-dev openmpi-bin)";
  const fs::path dir = fs::temp_directory_path() / ("xdrec_mpi_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string data = "synthetic:users=400,items=80", model = "ials:factors=8,iterations=3";
  std::string out;
  ASSERT_EQ(
      run(cli() + " train " + data + " -m " + model + " -o " + (dir / "single").string() + " --quiet", out),
      0)
      << out;
  const std::string single = read_bytes(dir / "single" / "model.safetensors");
  ASSERT_FALSE(single.empty());
  // Loopback only, shared memory without single-copy attach (refused in many containers), root allowed (CI).
  const std::string env =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 ";
  const std::string opts =
      " --oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism none ";
  for (int ranks : {2, 3}) {
    const fs::path o = dir / ("ranks" + std::to_string(ranks));
    const int rc = run(mpirun_prefix() + "-np " + std::to_string(ranks) + " " + cli() + " train " + data +
                           " -m " + model + " -o " + o.string() + " --distributed --threads 1 --quiet",
                       out);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("over " + std::to_string(ranks) + " processes"), std::string::npos) << out;
    EXPECT_TRUE(read_bytes(o / "model.safetensors") == single) << ranks << " ranks: the tensors differ";
    // And through the library: every user's scores agree exactly.
    auto a = load_model((dir / "single").string()), b = load_model(o.string());
    std::vector<uint32_t> users(a->n_users());
    for (uint32_t u = 0; u < users.size(); ++u) users[u] = u;
    Matrix sa, sb;
    a->score(users, sa, 1);
    b->score(users, sb, 1);
    EXPECT_TRUE(sa.data == sb.data) << ranks << " ranks";
  }
  // A model that cannot be fitted distributed is refused with one clear line (and the job ends).
  const int rc = run(mpirun_prefix() + "-np 2 " + cli() + " train " + data + " -m ease -o " +
                         (dir / "ease").string() + " --distributed --quiet",
                     out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("cannot be fitted distributed"), std::string::npos) << out;
  fs::remove_all(dir);
}

}  // namespace
