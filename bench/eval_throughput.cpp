// Evaluation throughput on fake models (bench/eval_models.h): a factor model whose score() is one GEMM per
// block of users, as in the real factor models, and a model that copies precomputed rows (the evaluator's own
// cost). Default size: 100,000 users x 50,000 items, 64 factors, 20 train / 5 test interactions per user.
//
//   bench_eval_throughput OUT.json [--users N] [--items N] [--threads N] [--only 0|1|2] [--models 1|2|3]
//
// --only runs one evaluation (0 full, 1 full per domain, 2 sampled with 100 negatives; for profiling);
// --models 1 runs the GEMM model only, 2 the precomputed rows only, 3 both (default). Writes
// {"config": {...}, "score_only": {...}, "gemm": {...}, "copy": {...}} to OUT.json and a table to stdout.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval_models.h"
#include "xdrec/metrics.h"

using namespace xdrec;
using namespace xdrec::eval_bench;

namespace {

struct Args {
  std::string out;
  uint32_t users = 100000, items = 50000;
  int threads = 2, only = -1;
  uint32_t models = 3;
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s OUT.json [--users N] [--items N] [--threads N] [--only 0|1|2] [--models 1|2|3]\n",
               argv0);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') usage(argv[0]);
  Args a;
  a.out = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(argv[0]);
    const std::string v = argv[++i];
    try {
      if (k == "--users") {
        a.users = static_cast<uint32_t>(std::stoul(v));
      } else if (k == "--items") {
        a.items = static_cast<uint32_t>(std::stoul(v));
      } else if (k == "--threads") {
        a.threads = std::stoi(v);
      } else if (k == "--only") {
        a.only = std::stoi(v);
      } else if (k == "--models") {
        a.models = static_cast<uint32_t>(std::stoul(v));
      } else {
        usage(argv[0]);
      }
    } catch (const std::logic_error&) {
      usage(argv[0]);
    }
  }
  if (a.users == 0 || a.items == 0 || a.threads < 1 || a.only > 2 || a.models < 1 || a.models > 3)
    usage(argv[0]);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  openblas_set_num_threads(1);  // the evaluator parallelises over blocks of users
  nlohmann::json out;
  Timer setup;
  FactorModel model(a.users, a.items, 64, 1);
  const Interactions data = random_interactions(a.users, a.items, 20, 5, 2);
  Dataset ds;
  ds.domains.get_or_add("a");
  ds.domains.get_or_add("b");
  ds.item_domain.resize(a.items);
  for (uint32_t i = 0; i < a.items; ++i) ds.item_domain[i] = i % 2;
  std::printf(
      "setup %.1f s: %u users x %u items, 64 factors, %zu train / %zu test interactions, %d threads\n",
      setup.seconds(), a.users, a.items, data.train.nnz(), data.test.nnz(), a.threads);
  out["config"] = {{"users", a.users},
                   {"items", a.items},
                   {"factors", 64},
                   {"threads", a.threads},
                   {"train_interactions", data.train.nnz()},
                   {"test_interactions", data.test.nnz()}};

  // Scoring alone (the same blocks as the evaluator, same threads): the floor for any evaluation.
  {
    const size_t block = std::clamp<size_t>((size_t{4} << 20) / a.items, 8, 512);
    std::vector<uint32_t> users(a.users);
    for (uint32_t u = 0; u < a.users; ++u) users[u] = u;
    const size_t n_blocks = (a.users + block - 1) / block;
    std::atomic<size_t> next{0};
    Timer t;
    const std::clock_t c0 = std::clock();
    parallel_for(static_cast<size_t>(a.threads), a.threads, 1, [&](size_t, size_t) {
      Matrix scores;
      for (size_t b; (b = next.fetch_add(1)) < n_blocks;) {
        const size_t lo = b * block, hi = std::min<size_t>(a.users, lo + block);
        model.score(std::span<const uint32_t>(users).subspan(lo, hi - lo), scores, 1);
      }
    });
    const double wall = t.seconds();
    const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    std::printf("score only (GEMM):               %6.1f s  %8.0f users/s  (CPU %6.1f s: %6.1f us/user)\n",
                wall, a.users / wall, cpu, 1e6 * cpu / a.users);
    out["score_only"] = {{"seconds", wall}, {"users_per_second", a.users / wall}, {"cpu_seconds", cpu}};
  }
  EvalOptions opt;
  opt.ks = {10, 20};
  opt.threads = a.threads;
  const CopyModel copy(a.users, a.items, 512, 3);
  for (const Recommender* m :
       {static_cast<const Recommender*>(&model), static_cast<const Recommender*>(&copy)}) {
    const bool gemm = m == &model;
    if (!(a.models & (gemm ? 1u : 2u))) continue;
    std::printf("%s\n", gemm ? "GEMM model:" : "precomputed rows (evaluator cost only):");
    nlohmann::json& jm = out[gemm ? "gemm" : "copy"];
    for (int variant = 0; variant < 3; ++variant) {
      if (a.only >= 0 && variant != a.only) continue;
      opt.per_domain = variant == 1;
      opt.sampled_negatives = variant == 2 ? 100 : 0;
      const std::clock_t c0 = std::clock();
      const EvalResult r = evaluate(*m, data.train, data.test, variant == 0 ? nullptr : &ds, opt);
      const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
      const char* label = variant == 0   ? "  evaluate full, 1 domain:    "
                          : variant == 1 ? "  evaluate full, 2 domains:   "
                                         : "  evaluate sampled (100 neg.):";
      std::printf("%s %6.1f s  %8.0f users/s  (CPU %6.1f s: %6.1f us/user)  ndcg@10 %.5f\n", label, r.seconds,
                  r.n_users / r.seconds, cpu, 1e6 * cpu / r.n_users, r.overall.at("ndcg@10"));
      const char* key = variant == 0 ? "full" : variant == 1 ? "full_per_domain" : "sampled_100";
      jm[key] = {{"seconds", r.seconds},
                 {"users_per_second", r.n_users / r.seconds},
                 {"cpu_seconds", cpu},
                 {"users", r.n_users},
                 {"ndcg@10", r.overall.at("ndcg@10")}};
    }
  }
  std::ofstream f(a.out);
  f << out.dump(2) << "\n";
  if (!f) {
    std::fprintf(stderr, "%s: cannot write %s\n", argv[0], a.out.c_str());
    return 1;
  }
  std::printf("wrote %s\n", a.out.c_str());
  return 0;
}
