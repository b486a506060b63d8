// Rating prediction benchmark. MovieLens 100k with its own five folds: u1..u5 are made by the dataset's
// mku.sh from consecutive 20,000-line blocks of u.data (fold k tests lines 20000(k-1)+1 .. 20000k and trains
// on the rest), which the reader keeps in file order, so the folds are rebuilt exactly; mean +- 95% CI over
// the five folds. Douban (book and music ratings, both domains): random 80/20 per user, seeds 1-3, per
// domain.
//
// Usage: bench_ratings OUT.json [DATA_DIR] [--model SPEC]... [--quick]
// JSON: {"models": {"<spec>": {"rmse": {"mean", "ci95"}, "mae": {...}, "folds": [...], "fit_seconds"}},
//        "douban": {"<spec>": {"rmse": {...}, "mae": {...}, "book/rmse": {...}, "music/rmse": {...}}},
//        "_meta"}
#include <cstdio>
#include <filesystem>

#include "args.h"
#include "xdrec/pipeline.h"
#include "xdrec/readers.h"

using namespace xdrec;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Fold k (1-based) of MovieLens 100k, as mku.sh cuts u.data.
Split fold(const Dataset& ds, uint64_t k) {
  check(ds.interactions.size() == 100000, "MovieLens 100k should have 100,000 ratings");
  Split s;
  s.protocol = "ml100k-u" + std::to_string(k);
  for (size_t e = 0; e < ds.interactions.size(); ++e)
    (e / 20000 + 1 == k ? s.test : s.train).push_back(ds.interactions[e]);
  check_no_leakage(ds, s);
  return s;
}

json summarise(const ExperimentResult& res, const std::string& key, const std::vector<std::string>& metrics) {
  json out;
  const auto sum = res.summary(key);
  for (const auto& m : metrics)
    if (auto it = sum.find(m); it != sum.end())
      out[m] = {{"mean", it->second.mean}, {"ci95", it->second.ci95}};
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> models;
  bench::BenchArgs b;
  if (!bench::parse_bench_args(argc, argv,
                               "usage: bench_ratings OUT.json [DATA_DIR] [--model SPEC]... [--quick]\n", b,
                               [&](const std::string& a, const auto& value) {
                                 const char* v = a == "--model" ? value() : nullptr;
                                 if (v) models.push_back(v);
                                 return v != nullptr;
                               }))
    return 2;
  const std::string& out = b.out;
  std::string root = b.root;
  const bool quick = b.quick;
  if (models.empty())
    models = {"svd",    // Surprise's SVD settings
              "svdpp",  // Surprise's SVD++ settings
              "svd:factors=200,epochs=100,lr=0.005,reg=0.1",
              "svdpp:factors=200,epochs=100,lr=0.005,reg=0.1",
              "bpmf",                     // Bayesian PMF with biases, noise precision sampled
              "bpmf:sample_alpha=false",  // the noise precision fixed at 2, as in the BPMF paper
              "twotower:loss=rating,merge=mlp,epochs=30"};  // the seed's towers -> MLP -> sigmoid, ids only
  try {
    Timer total;
    json res;
    res["_meta"] = {
        {"machine", machine_description()},
        {"ml100k", "the five folds u1..u5 of mku.sh (consecutive 20,000-line blocks of u.data)"},
        {"douban", "random 80/20 per user, seeds 1-3, both domains"},
        {"tuning", "settings chosen on a validation part of a random split of ml-100k (--on-validation)"}};
    auto run = [&](const Dataset& ds, ExperimentOptions x) {
      x.rating_task = true;
      x.threads = 2;
      for (auto& m : models) x.models.push_back(ModelRun::of(m));
      Experiment exp(ds, x);
      exp.on_run = [&](const RunRecord& r) {
        if (!r.error.empty()) throw Error(r.key + ": " + r.error);
        std::fprintf(stderr, "  %s seed %llu: rmse %.4f mae %.4f (%.1f s)\n", r.key.c_str(),
                     (unsigned long long)r.seed, r.metrics.at("rmse"), r.metrics.at("mae"),
                     r.metrics.at("fit_seconds"));
      };
      return exp.run();
    };
    // DATA_DIR is the data root, or MovieLens 100k's own directory (then Douban is looked for beside it).
    std::string ml = root + "/movielens_ml-100k";
    if (fs::exists(root + "/u.data")) ml = root, root = fs::path(root).parent_path().string();
    {
      const Dataset ds = read_dataset(ml);
      std::fprintf(stderr, "MovieLens 100k, folds u1..u5\n");
      ExperimentOptions x;
      x.make_split = [&](uint64_t k) { return fold(ds, k); };
      x.seeds = quick ? std::vector<uint64_t>{1} : std::vector<uint64_t>{1, 2, 3, 4, 5};
      const ExperimentResult r = run(ds, x);
      for (const auto& key : r.keys) {
        json m = summarise(r, key, {"rmse", "mae", "fit_seconds", "ndcg@10"});
        json folds = json::array();
        for (const auto& rec : r.runs.at(key))
          folds.push_back(
              {{"fold", rec.seed}, {"rmse", rec.metrics.at("rmse")}, {"mae", rec.metrics.at("mae")}});
        m["folds"] = folds;
        res["models"][key] = m;
      }
    }
    const std::string douban = root + "/douban_book-music_gadtcdr";
    if (fs::exists(douban) && !quick) {
      const Dataset ds = read_dataset(douban);
      std::fprintf(stderr, "Douban: %s\n", ds.summary().c_str());
      ExperimentOptions x;
      x.protocol = "random";
      x.split.test_ratio = 0.2;
      x.seeds = {1, 2, 3};
      const ExperimentResult r = run(ds, x);
      for (const auto& key : r.keys)
        res["douban"][key] = summarise(
            r, key, {"rmse", "mae", "book/rmse", "music/rmse", "book/mae", "music/mae", "fit_seconds"});
    }
    res["_meta"]["seconds"] = total.seconds();
    write_file_atomic(out, res.dump(1) + "\n");
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ratings: %s\n", e.what());
    return 1;
  }
  return 0;
}
