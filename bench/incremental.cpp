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

#include "xdrec/readers.h"

using namespace xdrec;
using json = nlohmann::json;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::string out, root;
  int seeds = 3;
  bool quick = false;
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    if (a == "--seeds" && k + 1 < argc)
      seeds = std::max(1, std::atoi(argv[++k]));
    else if (a == "--quick")
      quick = true;
    else if (a[0] != '-' && out.empty())
      out = a;
    else if (a[0] != '-' && root.empty())
      root = a;
    else {
      std::fprintf(stderr, "usage: bench_incremental OUT.json [DATA_ROOT] [--seeds N] [--quick]\n");
      return 2;
    }
  }
  if (out.empty()) {
    std::fprintf(stderr, "usage: bench_incremental OUT.json [DATA_ROOT] [--seeds N] [--quick]\n");
    return 2;
  }
  if (root.empty()) root = "../shared/data";
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
