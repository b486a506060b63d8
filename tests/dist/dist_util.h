// Helpers of the distributed tests: the collectives of dist.h between the threads of one process (any build),
// fits over such ranks, bitwise comparison of model tensors, and running the CLI under mpirun.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "xdrec/dist.h"
#include "xdrec/recommender.h"

namespace xdrec::testing_util {

namespace fs = std::filesystem;

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
        for (size_t i = 0; i < n; ++i) sum[i] += static_cast<const float*>(g_.ptrs_[size_t(r)])[i];
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
        if (r != rank_)
          std::memcpy(data + off, static_cast<const float*>(g_.ptrs_[size_t(r)]) + off, n * sizeof(float));
        off += n;
      }
      g_.sync_.arrive_and_wait();
    }
    void allgather_bytes(void* data, std::span<const size_t> bytes) override {
      g_.ptrs_[size_t(rank_)] = data;
      g_.sync_.arrive_and_wait();
      size_t off = 0;
      for (int r = 0; r < g_.n_; ++r) {
        if (r != rank_ && bytes[size_t(r)])
          std::memcpy(static_cast<char*>(data) + off, static_cast<char*>(g_.ptrs_[size_t(r)]) + off,
                      bytes[size_t(r)]);
        off += bytes[size_t(r)];
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
  std::vector<void*> ptrs_;
};

inline TensorMap tensors_of(const Recommender& m) {
  TensorMap t;
  nlohmann::json extra;
  m.save(t, extra);
  return t;
}

// Fits `spec` on `ranks` ranks (threads) and returns every rank's model tensors.
inline std::vector<TensorMap> fit_distributed(const std::string& spec, const Csr& train, int ranks,
                                              const FitContext& base = FitContext{}) {
  ThreadGroup group(ranks);
  std::vector<TensorMap> out(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      ThreadGroup::Comm comm(group, r);
      FitContext ctx = base;
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

inline void expect_same(const TensorMap& a, const TensorMap& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    const Tensor& u = get_tensor(b, name);
    EXPECT_EQ(t.shape, u.shape) << what << ": " << name;
    EXPECT_TRUE(t.bytes == u.bytes) << what << ": tensor " << name << " differs";
  }
}

inline std::string cli() {
  const char* p = std::getenv("XDREC_CLI");
  return p ? p : std::string(XDREC_BINARY_DIR) + "/xdrec";
}

inline int run(const std::string& cmd, std::string& out) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return -1;
  std::array<char, 4096> buf;
  size_t n;
  out.clear();
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  const int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

inline std::string read_bytes(const fs::path& p) {
  std::string s;
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return s;
  std::array<char, 65536> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) s.append(buf.data(), n);
  std::fclose(f);
  return s;
}

// mpirun with loopback only, shared memory without single-copy attach (refused in many containers), root
// allowed (CI), more ranks than cores allowed: the prefix of a command line up to "-np N".
inline std::string mpirun_prefix() {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 " +
         std::string(XDREC_MPIEXEC) +
         " --oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism none ";
}

// Whether this build can run mpirun (MPI found, mpirun found).
inline bool mpirun_available() {
  return mpi_available() && !std::string(XDREC_MPIEXEC).empty();
}

}  // namespace xdrec::testing_util
