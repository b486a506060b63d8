// Cross-domain training with the auxiliary domain down-weighted, on Amazon Food-Kitchen (fixed split, target
// vs 999 sampled same-domain negatives). For each target domain, iALS is fitted on:
//   single    the target domain's interactions only (auxiliary weight 0)
//   joint     every interaction with weight 1 (shared users, plain joint training)
//   balanced  auxiliary interactions weighted min(1, n_target / n_aux), so that neither domain outweighs the
//             other (no tuning)
//   tuned     the auxiliary weight from {0.1, 0.25, 0.5, 1} that is best on the validation users
// and evaluated on the test users, mean ± 95% CI over seeds (model initialisation and negative sampling).
//
//   bench/domain_weight OUT.json [DATA_ROOT] [--seeds N] [--threads N] [--model SPEC]
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "xdrec/pipeline.h"
#include "xdrec/readers.h"

using namespace xdrec;
namespace fs = std::filesystem;

namespace {

// Training interactions with the target domain at weight 1 and every other domain at `aux` (dropped at 0).
std::vector<Interaction> weighted(const Dataset& ds, const std::vector<Interaction>& train, int target,
                                  double aux) {
  std::vector<Interaction> out;
  out.reserve(train.size());
  for (Interaction x : train) {
    const bool in_target = ds.item_domain[x.item] == target;
    if (!in_target && aux == 0) continue;
    x.rating = in_target ? 1.0f : float(aux);
    out.push_back(x);
  }
  return out;
}

// Fits `spec` on the fixed split's training part with the auxiliary domains at weight `aux`, evaluated on
// validation or test users of domain `target` (999 sampled negatives), one run per seed.
ExperimentResult fit_weighted(const Dataset& ds, const Split& sp, const std::string& spec, int target,
                              double aux, bool validation, const std::vector<uint64_t>& seeds, int threads) {
  Split weighted_split = sp;
  weighted_split.train = weighted(ds, sp.train, target, aux);
  ExperimentOptions x;
  x.given_split = weighted_split;
  x.seeds = seeds;
  x.use_ratings = true;  // the interaction weights above
  x.evaluate_on_validation = validation;
  x.threads = threads;
  x.evaluations[0].options.ks = {10};
  x.evaluations[0].options.sampled_negatives = 999;
  x.models = {ModelRun::of(spec)};
  Experiment exp(ds, x);
  exp.on_run = [](const RunRecord& r) {
    if (!r.error.empty()) throw Error(r.key + ": " + r.error);
  };
  return exp.run();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.json [DATA_ROOT] [--seeds N] [--threads N] [--model SPEC]\n",
                 argv[0]);
    return 2;
  }
  std::string out = argv[1], root = (fs::path(__FILE__).parent_path() / "../../shared/data").string();
  int seeds = 3, threads = 2;
  std::string spec = "ials";
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seeds" && i + 1 < argc)
      seeds = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (a == "--model" && i + 1 < argc)
      spec = argv[++i];
    else if (a.rfind("--", 0) != 0)
      root = a;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    Dataset ds = read_dataset((fs::path(root) / "amazon_food-kitchen_llmcdsr").string());
    Split sp = split_fixed(ds);
    std::vector<size_t> per_domain(ds.n_domains(), 0);
    for (auto& x : sp.train) ++per_domain[ds.item_domain[x.item]];
    nlohmann::json j;
    std::printf("%s on %s, test users, sampled 999 negatives, %d seeds\n", spec.c_str(), ds.name.c_str(),
                seeds);
    std::printf("%-8s %-9s %-6s %-18s %-18s\n", "target", "variant", "aux w", "ndcg@10", "hr@10");
    for (int t = 0; t < int(ds.n_domains()); ++t) {
      size_t n_aux = 0;
      for (int d = 0; d < int(ds.n_domains()); ++d)
        if (d != t) n_aux += per_domain[d];
      const double balanced = std::min(1.0, double(per_domain[t]) / double(n_aux));
      // Validation picks the tuned weight (first seed).
      double best_w = 1, best = -1;
      const std::string dn = ds.domains.name(t);
      for (double w : {0.1, 0.25, 0.5, 1.0}) {
        const ExperimentResult r = fit_weighted(ds, sp, spec, t, w, true, {1}, threads);
        const double v = r.summary(spec).at(dn + "/ndcg@10").mean;
        if (v > best) best = v, best_w = w;
      }
      const std::vector<std::pair<std::string, double>> variants{
          {"single", 0.0}, {"joint", 1.0}, {"balanced", balanced}, {"tuned", best_w}};
      std::vector<uint64_t> seed_list;
      for (int s = 0; s < seeds; ++s) seed_list.push_back(uint64_t(1 + s));
      for (auto& [name, w] : variants) {
        const auto summary = fit_weighted(ds, sp, spec, t, w, false, seed_list, threads).summary(spec);
        const MeanCI a = summary.at(dn + "/ndcg@10"), b = summary.at(dn + "/hr@10");
        std::printf("%-8s %-9s %-6.3f %.4f ± %.4f    %.4f ± %.4f\n", dn.c_str(), name.c_str(), w, a.mean,
                    a.ci95, b.mean, b.ci95);
        std::fflush(stdout);
        j[dn][name] = {{"aux_weight", w},
                       {"ndcg@10", {{"mean", a.mean}, {"ci95", a.ci95}}},
                       {"hr@10", {{"mean", b.mean}, {"ci95", b.ci95}}}};
      }
    }
    j["model"] = spec;
    j["seeds"] = seeds;
    write_file_atomic(out, j.dump(2) + "\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
