// The federated section of bench/privacy: fcf (federated collaborative filtering, simulated clients with
// secure aggregation) at 10, 100 and 943 expected clients per round against centralised iALS with the same
// factors on the same splits and seeds. Full ranking, mean +- 95% CI over the seeds; rounds, time and bytes
// per round from each model's manifest (extra.federated).
//
// Returned JSON: {"<model spec key>": {"<epsilon or inf>": {"ndcg@10": {"mean", "ci95"}, "hr@10": {...},
//   "fit_seconds": {...}, "spec", "federated": {rounds, clients_per_round, bytes_*_per_round, ...},
//   "privacy": {...}}}}, keyed "fcf:clients=10" etc. and "ials:factors=32".
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "xdrec/pipeline.h"

namespace xdrec::bench {

struct FederatedOptions {
  std::vector<uint64_t> seeds{1, 2, 3};
  int threads = 1;
  bool quick = false;
};

inline nlohmann::json federated_vs_centralised(const Dataset& ds, const FederatedOptions& o) {
  using json = nlohmann::json;
  // (table key, epsilon key, spec). Rounds and server learning rates chosen without DP on seed 1 of this
  // split among lr 0.1 / 0.05 / 0.02 / 0.005 and a few round counts (secure_agg=false gives bitwise the same
  // models); dp_clip 1 against 10 at epsilon 8 on seed 1 made little difference (Adam rescales the step).
  const std::string f = "fcf:factors=32,";
  std::vector<std::tuple<std::string, std::string, std::string>> runs = {
      {"ials:factors=32", "inf", "ials:factors=32"},
      {"fcf:clients=943", "inf", f + "clients=943,rounds=100,lr=0.05"},
      {"fcf:clients=100", "inf", f + "clients=100,rounds=500,lr=0.02"},
      {"fcf:clients=10", "inf", f + "clients=10,rounds=3000,lr=0.005"},
      {"fcf:clients=943,secure_agg=false", "inf", f + "clients=943,rounds=100,lr=0.05,secure_agg=false"},
      {"fcf:clients=100", "8", f + "clients=100,rounds=500,lr=0.02,dp_epsilon=8,dp_clip=1"},
      {"fcf:clients=100", "1", f + "clients=100,rounds=500,lr=0.02,dp_epsilon=1,dp_clip=1"},
      {"fcf:clients=943", "8", f + "clients=943,rounds=100,lr=0.05,dp_epsilon=8,dp_clip=1"},
  };
  if (o.quick)
    runs = {{"ials:factors=32", "inf", "ials:factors=32"},
            {"fcf:clients=100", "inf", f + "clients=100,rounds=60,lr=0.05"}};
  ExperimentOptions x;
  x.protocol = "random";
  x.split.test_ratio = 0.2;
  x.seeds = o.seeds;
  x.threads = o.threads;
  for (size_t k = 0; k < runs.size(); ++k) {
    ModelRun m = ModelRun::of(std::get<2>(runs[k]));
    m.key = std::to_string(k);
    x.models.push_back(m);
  }
  x.keep_models = true;
  Experiment exp(ds, x);
  exp.on_run = [&](const RunRecord& r) {
    if (!r.error.empty()) throw Error(r.key + ": " + r.error);
    const auto& run = runs[std::stoul(r.key)];
    std::fprintf(stderr, "  %s [%s] seed %llu: ndcg@10 %.4f hr@10 %.4f (%.1f s)\n", std::get<0>(run).c_str(),
                 std::get<1>(run).c_str(), (unsigned long long)r.seed, r.metrics.at("ndcg@10"),
                 r.metrics.at("hr@10"), r.metrics.at("fit_seconds"));
  };
  const ExperimentResult res = exp.run();
  json out;
  for (size_t k = 0; k < runs.size(); ++k) {
    const auto& [key, eps, spec] = runs[k];
    json row;
    const auto sum = res.summary(std::to_string(k));
    for (const char* m : {"ndcg@10", "hr@10", "fit_seconds"})
      if (auto it = sum.find(m); it != sum.end())
        row[m] = {{"mean", it->second.mean}, {"ci95", it->second.ci95}};
    row["spec"] = spec;
    // Rounds, bytes and the guarantee (the last seed's model; they do not depend on the split).
    if (auto it = res.models.find(std::to_string(k)); it != res.models.end() && it->second) {
      TensorMap t;
      json extra;
      it->second->save(t, extra);
      for (const char* e : {"federated", "privacy"})
        if (extra.contains(e)) row[e] = extra[e];
    }
    out[key][eps] = row;
  }
  return out;
}

}  // namespace xdrec::bench
