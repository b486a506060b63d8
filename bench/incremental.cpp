// Incremental updates against a full retrain, on a time-ordered split. Each user's last interaction (by time)
// is the test item; of the rest, the interactions up to the 90% quantile of time are the "old" data a model
// was trained on, the later ones arrive as new data (with new users and items). Compared, by NDCG@10 and
// HR@10 on the test items (full ranking) and by the seconds of the update:
//   full             the model trained from scratch on old + new
//   stale            the old model, not updated (new users and items get nothing from their interactions)
//   resume:sweeps=K  the old model resumed on old + new (xdrec train --resume): touched rows, then K sweeps
//                    (iALS) or K epochs over the new and as many replayed old entries (bpr, hybrid,
//                    twotower)
// Models: ials, bpr, hybrid and twotower (the text models with tfidf item text, so that items new to the
// model enter through text). Mean +- 95% CI over model seeds 1-3. MovieLens latest-small and Amazon
// Food-Kitchen.
//
// Usage: bench_incremental OUT.json [DATA_ROOT] [--seeds N] [--model SPEC]... [--encoder SPEC]
//        [--sgd-sweeps LIST (epochs of the SGD models' resumes, default 0,2,5)] [--quick]
// JSON: {"<dataset>": {"<spec>": {"<variant>": {"ndcg@10": {"mean", "ci95"}, "hr@10": {...},
//        "seconds": {...}, "time_vs_full" (resume variants)}, "_info": {...}}}, "_meta"}
#include "incremental.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "args.h"
#include "xdrec/readers.h"

using namespace xdrec;
using json = nlohmann::json;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  int seeds = 3;
  std::vector<std::string> models;
  std::string encoder = "tfidf";
  std::vector<int> sgd_sweeps;
  bench::BenchArgs b;
  if (!bench::parse_bench_args(argc, argv,
                               "usage: bench_incremental OUT.json [DATA_ROOT] [--seeds N] [--model SPEC]... "
                               "[--encoder SPEC] [--sgd-sweeps 0,2,5] [--quick]\n",
                               b, [&](const std::string& a, const auto& value) {
                                 if (a != "--seeds" && a != "--model" && a != "--encoder" &&
                                     a != "--sgd-sweeps")
                                   return false;
                                 const char* v = value();
                                 if (!v) return false;
                                 if (a == "--seeds") seeds = std::max(1, std::atoi(v));
                                 if (a == "--model") models.push_back(v);
                                 if (a == "--encoder") encoder = v;
                                 if (a == "--sgd-sweeps") {
                                   std::stringstream ss(v);
                                   for (std::string x; std::getline(ss, x, ',');)
                                     sgd_sweeps.push_back(std::max(0, std::atoi(x.c_str())));
                                 }
                                 return true;
                               }))
    return 2;
  const std::string &out = b.out, &root = b.root;
  const bool quick = b.quick;
  if (quick) seeds = 1;
  try {
    json res;
    res["_meta"] = {{"machine", machine_description()}};
    if (models.empty())
      models = quick ? std::vector<std::string>{"ials:iterations=3", "bpr:epochs=20", "hybrid:epochs=2",
                                                "twotower:epochs=2"}
                     : std::vector<std::string>{"ials", "bpr", "hybrid", "twotower"};
    res["_meta"]["encoder"] = encoder;
    if (sgd_sweeps.empty()) sgd_sweeps = quick ? std::vector<int>{0, 2} : std::vector<int>{0, 2, 5};
    const json parts =
        bench::incremental_models(root, models, encoder, seeds, 2, sgd_sweeps, [&](const json& p) {
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
