// The distributed experiment runner: (model, seed) runs dealt over the ranks give the same records as one
// process (metrics bitwise; times aside), and a failing model's later seeds are cut the same way. In process
// over a communicator of threads, and end to end, `mpirun -np 2 xdrec eval --distributed` against `xdrec
// eval` (skipped where the build has no MPI).
#include <gtest/gtest.h>
#include <unistd.h>

#include "dist/dist_util.h"
#include "xdrec/pipeline.h"
#include "xdrec/synthetic.h"

using namespace xdrec;
using namespace xdrec::testing_util;

namespace {

const Dataset& data() {
  static const Dataset ds = [] {
    SyntheticOptions o;
    o.n_users = 300;
    o.items_per_domain = 60;
    o.seed = 3;
    return make_synthetic(o);
  }();
  return ds;
}

ExperimentOptions options() {
  ExperimentOptions x;
  x.seeds = {1, 2, 3};
  x.threads = 1;
  for (const char* s : {"popular", "ials:factors=8,iterations=2", "bpr:factors=8,epochs=3,batch=256"})
    x.models.push_back(ModelRun::of(s));
  // Fails at every seed (an encoder but no text source): one record, then the model's seeds are cut.
  x.models.push_back(ModelRun::of("hybrid", "tfidf"));
  return x;
}

// Every record of a result, with the times and memory taken out (they differ between any two runs).
std::vector<std::string> records(const ExperimentResult& r) {
  std::vector<std::string> out;
  for (const std::string& key : r.keys)
    for (const RunRecord& rec : r.runs.at(key)) {
      std::string line = rec.key + " | " + rec.spec + " | " + std::to_string(rec.seed) + " | " + rec.error;
      for (const auto& [name, v] : rec.metrics) {
        if (name == "fit_seconds" || name == "eval_seconds" || name == "peak_rss_delta_mb") continue;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%a", v);
        line += " | " + name + "=" + buf;
      }
      out.push_back(line);
    }
  return out;
}

TEST(ExperimentDistributed, ThreadRanksGiveTheOneProcessRecords) {
  ExperimentResult single = Experiment(data(), options()).run();
  const std::vector<std::string> want = records(single);
  ASSERT_EQ(want.size(), 10u);  // 3 models x 3 seeds, and the failing model's first seed
  ASSERT_EQ(single.keys.size(), 4u);
  ASSERT_EQ(single.runs.at(single.keys.back()).size(), 1u);
  EXPECT_FALSE(single.runs.at(single.keys.back())[0].error.empty());
  for (int ranks : {2, 3, 4}) {
    ThreadGroup group(ranks);
    std::vector<std::vector<std::string>> got(static_cast<size_t>(ranks));
    std::vector<std::vector<std::string>> notes(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        ThreadGroup::Comm comm(group, r);
        ExperimentOptions x = options();
        x.comm = &comm;
        Experiment exp(data(), x);
        size_t calls = 0;
        exp.on_run = [&](const RunRecord&) { ++calls; };
        const ExperimentResult res = exp.run();
        got[size_t(r)] = records(res);
        notes[size_t(r)] = res.notes;
        EXPECT_EQ(calls, 10u);
      });
    for (auto& t : threads) t.join();
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(got[size_t(r)], want) << ranks << " ranks, rank " << r;
      EXPECT_EQ(notes[size_t(r)], single.notes) << ranks << " ranks, rank " << r;
    }
  }
}

// ---- End to end over MPI ----------------------------------------------------------------------------------

// The JSON of `xdrec eval -o` without the times and memory.
nlohmann::json without_times(nlohmann::json j) {
  for (auto& [key, m] : j["models"].items())
    for (const char* t : {"fit_seconds", "eval_seconds", "peak_rss_mb"}) m.erase(t);
  return j;
}

TEST(ExperimentDistributed, MpirunEvalWritesTheOneProcessResults) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI (install libopenmpi-dev openmpi-bin)";
  const fs::path dir = fs::temp_directory_path() / ("xdrec_mpi_eval_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string args =
      " eval synthetic:users=300,items=60 -m popular -m ials:factors=8,iterations=2 -m "
      "bpr:factors=8,epochs=3,batch=256 --seeds 3 --threads 1 --quiet -o ";
  std::string out, out2;
  ASSERT_EQ(run(cli() + args + (dir / "one.json").string(), out), 0) << out;
  ASSERT_EQ(
      run(mpirun_prefix() + "-np 2 " + cli() + args + (dir / "two.json").string() + " --distributed", out2),
      0)
      << out2;
  const nlohmann::json one = nlohmann::json::parse(read_bytes(dir / "one.json"));
  const nlohmann::json two = nlohmann::json::parse(read_bytes(dir / "two.json"));
  ASSERT_EQ(one["models"].size(), 3u);
  EXPECT_EQ(without_times(one), without_times(two));
  // Rank 0 alone reports and writes.
  EXPECT_EQ(out2.find("wrote "), out2.rfind("wrote ")) << out2;
  EXPECT_EQ(out2.find("3 seeds"), out2.rfind("3 seeds")) << out2;
  fs::remove_all(dir);
}

}  // namespace
