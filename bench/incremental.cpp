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
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "xdrec/metrics.h"
#include "xdrec/pipeline.h"
#include "xdrec/readers.h"

using namespace xdrec;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

json mean_ci(const std::vector<double>& v) {
  const MeanCI m = mean_ci95(v);
  return {{"mean", m.mean}, {"ci95", m.ci95}};
}

json run_dataset(const Dataset& ds, const std::string& spec, int seeds, int threads) {
  SplitOptions so;
  const Split sp = split_leave_last_out(ds, so);
  std::vector<int64_t> times;
  for (const auto& e : sp.train) times.push_back(e.timestamp);
  std::sort(times.begin(), times.end());
  const int64_t cut = times[size_t(double(times.size() - 1) * 0.9)];
  std::vector<Interaction> old;
  std::vector<uint8_t> touched_mark(ds.n_users(), 0);
  for (const auto& e : sp.train) {
    if (e.timestamp <= cut)
      old.push_back(e);
    else
      touched_mark[e.user] = 1;
  }
  std::vector<uint32_t> touched;
  for (uint32_t u = 0; u < ds.n_users(); ++u)
    if (touched_mark[u]) touched.push_back(u);
  const Csr full_train = ds.user_item_matrix(sp.train), old_train = ds.user_item_matrix(old),
            test = ds.user_item_matrix(sp.test);
  std::printf("%s: %zu old and %zu new interactions (after t=%lld), %zu touched users\n", ds.name.c_str(),
              old.size(), sp.train.size() - old.size(), (long long)cut, touched.size());
  EvalOptions eo;
  eo.ks = {10};
  eo.threads = threads;
  std::map<std::string, std::vector<double>> ndcg, hr, secs;
  auto score = [&](const std::string& key, const Recommender& m, double s) {
    const EvalResult r = evaluate(m, full_train, test, &ds, eo);
    ndcg[key].push_back(r.overall.at("ndcg@10"));
    hr[key].push_back(r.overall.at("hr@10"));
    secs[key].push_back(s);
    std::printf("  %-18s ndcg@10 %.4f hr@10 %.4f  %.2f s\n", key.c_str(), r.overall.at("ndcg@10"),
                r.overall.at("hr@10"), s);
  };
  for (int seed = 1; seed <= seeds; ++seed) {
    FitContext ctx;
    ctx.threads = threads;
    ctx.seed = uint64_t(seed);
    ctx.item_domain = ds.item_domain;
    {
      auto m = create_model(spec);
      Timer t;
      m->fit(full_train, ctx);
      score("full", *m, t.seconds());
    }
    auto base = create_model(spec);
    Timer t0;
    base->fit(old_train, ctx);
    const double old_fit = t0.seconds();
    score("stale", *base, 0.0);
    (void)old_fit;
    for (int sweeps : {0, 1, 2}) {
      auto m = create_model(spec);
      TensorMap tensors;
      json extra;
      base->save(tensors, extra);
      m->load(tensors, extra);
      Timer t;
      check(m->resume(full_train, touched, ctx, sweeps), "the model has no incremental update");
      score("resume:sweeps=" + std::to_string(sweeps), *m, t.seconds());
    }
  }
  json out;
  for (const auto& [k, v] : ndcg)
    out[k] = {{"ndcg@10", mean_ci(v)}, {"hr@10", mean_ci(hr[k])}, {"seconds", mean_ci(secs[k])}};
  out["_info"] = {{"spec", spec},
                  {"old_interactions", old.size()},
                  {"new_interactions", sp.train.size() - old.size()},
                  {"touched_users", touched.size()},
                  {"test", "each user's last interaction by time, full ranking"}};
  return out;
}

}  // namespace

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
    for (const auto& [name, dir, format] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"ml-latest-small", "movielens_ml-latest-small", "auto"},
             {"food-kitchen", "amazon_food-kitchen_llmcdsr", "food-kitchen"}}) {
      if (!fs::exists(root + "/" + dir)) continue;
      const Dataset ds = read_dataset(root + "/" + dir, format);
      res[name] = run_dataset(ds, spec, seeds, 2);
      write_file_atomic(out, res.dump(1) + "\n");
    }
    write_file_atomic(out, res.dump(1) + "\n");
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_incremental: %s\n", e.what());
    return 1;
  }
  return 0;
}
