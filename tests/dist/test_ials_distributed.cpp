// Distributed iALS: the model fitted over several ranks equals the one-process model bitwise. In process,
// over a communicator of threads (any build, several Gram blocks, both solvers); and end to end, `mpirun -np
// 2/3 xdrec train --distributed` against `xdrec train` (skipped where the build has no MPI).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "models/clustered.h"
#include "xdrec/dist.h"
#include "xdrec/recommender.h"

using namespace xdrec;
namespace fs = std::filesystem;

namespace {

// The collectives of dist.h between threads of one process: rank k is thread k. Sums are taken in rank order.
class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), sync_(n), ptrs_(size_t(n)) {}

  class Comm final : public Communicator {
   public:
    Comm(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return g_.n_; }
    void allreduce_sum(float* data, size_t n) override {
      g_.ptrs_[size_t(rank_)] = data;
      g_.sync_.arrive_and_wait();
      std::vector<float> sum(n, 0.0f);
      for (int r = 0; r < g_.n_; ++r)
        for (size_t i = 0; i < n; ++i) sum[i] += g_.ptrs_[size_t(r)][i];
      g_.sync_.arrive_and_wait();
      std::copy(sum.begin(), sum.end(), data);
      g_.sync_.arrive_and_wait();
    }
    void allgather_rows(float* data, size_t row_floats, std::span<const size_t> rows) override {
      g_.ptrs_[size_t(rank_)] = data;
      g_.sync_.arrive_and_wait();
      size_t off = 0;
      for (int r = 0; r < g_.n_; ++r) {
        const size_t n = rows[size_t(r)] * row_floats;
        if (r != rank_) std::memcpy(data + off, g_.ptrs_[size_t(r)] + off, n * sizeof(float));
        off += n;
      }
      g_.sync_.arrive_and_wait();
    }
    void barrier() override { g_.sync_.arrive_and_wait(); }

   private:
    ThreadGroup& g_;
    int rank_;
  };

 private:
  int n_;
  std::barrier<> sync_;
  std::vector<float*> ptrs_;
};

TensorMap tensors_of(const Recommender& m) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  return t;
}

// Fits `spec` on `ranks` ranks (threads) and returns every rank's model tensors.
std::vector<TensorMap> fit_distributed(const std::string& spec, const Csr& train, int ranks) {
  ThreadGroup group(ranks);
  std::vector<TensorMap> out(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      ThreadGroup::Comm comm(group, r);
      FitContext ctx;
      ctx.threads = 1;
      ctx.seed = 7;
      ctx.comm = &comm;
      auto m = create_model(spec);
      m->fit(train, ctx);
      out[size_t(r)] = tensors_of(*m);
    });
  for (auto& t : threads) t.join();
  return out;
}

void expect_same(const TensorMap& a, const TensorMap& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    const Tensor& u = get_tensor(b, name);
    EXPECT_EQ(t.shape, u.shape) << what << ": " << name;
    EXPECT_TRUE(t.bytes == u.bytes) << what << ": tensor " << name << " differs";
  }
}

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
  EXPECT_EQ(names, std::vector<std::string>{"ials"});
}

// ---- End to end over MPI --------------------------------------------------------------------------------

std::string cli() {
  const char* p = std::getenv("XDREC_CLI");
  return p ? p : std::string(XDREC_BINARY_DIR) + "/xdrec";
}

int run(const std::string& cmd, std::string& out) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return -1;
  std::array<char, 4096> buf;
  size_t n;
  out.clear();
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  const int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string read_bytes(const fs::path& p) {
  std::string s;
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return s;
  std::array<char, 65536> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) s.append(buf.data(), n);
  std::fclose(f);
  return s;
}

TEST(IalsDistributed, MpirunTrainEqualsSingleProcessBitwise) {
  const std::string mpirun = XDREC_MPIEXEC;
  if (!mpi_available() || mpirun.empty())
    GTEST_SKIP() << "built without MPI (install libopenmpi-dev openmpi-bin)";
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
    const int rc = run(env + mpirun + opts + "-np " + std::to_string(ranks) + " " + cli() + " train " + data +
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
  const int rc = run(env + mpirun + opts + "-np 2 " + cli() + " train " + data + " -m bpr -o " +
                         (dir / "bpr").string() + " --distributed --quiet",
                     out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("cannot be fitted distributed"), std::string::npos) << out;
  fs::remove_all(dir);
}

}  // namespace
