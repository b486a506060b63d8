// Incremental updates against a full retrain, on a time-ordered split. Each user's last interaction (by time)
// is the test item; of the rest, the interactions up to the 90% quantile of time are the "old" data a model
// was trained on, the later ones arrive as new data (with new users and items). Compared, by NDCG@10 and
// HR@10 on the test items (full ranking) and by the seconds of the update:
//   full             iALS trained from scratch on old + new
//   stale            the old model, not updated (new users and items get nothing)
//   resume:sweeps=K  the old model resumed on old + new (xdrec train --resume): touched rows, then K sweeps
// Mean +- 95% CI over model seeds 1-3. MovieLens latest-small and Amazon Food-Kitchen.
//
// Usage: bench_incremental OUT.json [DATA_ROOT] [--seeds N] [--quick]
// JSON: {"<dataset>": {"<variant>": {"ndcg@10": {"mean", "ci95"}, "hr@10": {...}, "seconds": {...}},
//        "_info": {...}}, "_meta"}
#include "incremental.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "args.h"
#include "xdrec/readers.h"

using namespace xdrec;
using json = nlohmann::json;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  int seeds = 3;
  bench::BenchArgs b;
  if (!bench::parse_bench_args(argc, argv,
                               "usage: bench_incremental OUT.json [DATA_ROOT] [--seeds N] [--quick]\n", b,
                               [&](const std::string& a, const auto& value) {
                                 const char* v = a == "--seeds" ? value() : nullptr;
                                 if (v) seeds = std::max(1, std::atoi(v));
                                 return v != nullptr;
                               }))
    return 2;
  const std::string &out = b.out, &root = b.root;
  const bool quick = b.quick;
  if (quick) seeds = 1;
  try {
    json res;
    res["_meta"] = {{"machine", machine_description()}};
    const std::string spec = quick ? "ials:iterations=3" : "ials";
    const json parts = bench::incremental_all(root, spec, seeds, 2, [&](const json& p) {
      for (auto& [k, v] : p.items()) res[k] = v;
      write_file_atomic(out, res.dump(1) + "\n");
    });
    for (auto& [k, v] : parts.items()) res[k] = v;
    write_file_atomic(out, res.dump(1) + "\n");
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_incremental: %s\n", e.what());
    return 1;
  }
  return 0;
}
