// The pruning and retrieval-codes rows of bench/scale's "compression" table (MovieLens 100k, the same split
// and fitted model as the fp16 / int8 rows beside them):
//   "prune:F" / "prune:F+int8"  the model saved with each prunable matrix pruned to fraction F by magnitude
//       (and int8), loaded back and evaluated like the other rows (full ranking, random ties, seed 42):
//       ndcg@10, ndcg@10_delta against fp32, bytes of the tensor file, ratio, sparsity of each matrix.
//   "sq8" / "pq:m=.." (dot-product models)  the item vectors as codes (item_codes.h): every test user's
//       top-10 through the codes and by an exact brute-force scan of the float item vectors, measured in the
//       same run on one thread (queries/s of each and the speed-up), recall@10 of the coded lists against
//       the exact ones, ndcg@10 of both (both lists break ties by lower index, so this delta is against the
//       exact scan's ndcg@10, not the fp32 row's), and bytes of the item codes against the float vectors.
#pragma once

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "xdrec/item_codes.h"
#include "xdrec/metrics.h"
#include "xdrec/recommender.h"

namespace xdrec::bench {

using json = nlohmann::json;

// Adds the pruning rows to `row` (the model's entry, with "fp32": {"ndcg@10", "bytes"}); nothing for a model
// without prunable matrices.
inline void add_prune_rows(json& row, const Recommender& model, const Dataset& ds, const Csr& train,
                           const Csr& test, const EvalOptions& eo, const std::filesystem::path& tmp,
                           const std::vector<double>& fractions = {0.5, 0.8}) {
  namespace fs = std::filesystem;
  const double base = row.at("fp32").at("ndcg@10").get<double>(),
               fp32_bytes = row.at("fp32").at("bytes").get<double>();
  for (const double f : fractions)
    for (const Store store : {Store::kFp32, Store::kInt8}) {
      char key[64];
      std::snprintf(key, sizeof key, "prune:%g%s", f, store == Store::kInt8 ? "+int8" : "");
      const fs::path dir = tmp / "compress_prune";
      fs::remove_all(dir);
      try {
        save_model(model, dir.string(), ds.fingerprint(), store, f);
      } catch (const Error&) {
        return;  // no prunable matrices
      }
      const double ndcg = evaluate(*load_model(dir.string()), train, test, &ds, eo).overall.at("ndcg@10");
      const double bytes = double(fs::file_size(dir / "model.safetensors"));
      const json manifest = json::parse(read_file((dir / "manifest.json").string()));
      row[key] = {{"ndcg@10", ndcg},
                  {"ndcg@10_delta", ndcg - base},
                  {"bytes", bytes},
                  {"ratio", fp32_bytes / bytes},
                  {"sparsity", manifest.at("sparsity")}};
      std::fprintf(stderr, "  %s %s: ndcg@10 %.4f (%+.4f), %.0f bytes\n", model.name().c_str(), key, ndcg,
                   ndcg - base, bytes);
    }
}

// Adds the retrieval-codes rows to `row`; nothing for a model without a dot-product form.
inline void add_codes_rows(json& row, const Recommender& model, const Csr& train, const Csr& test,
                           const std::vector<std::string>& specs = {"sq8", "pq:m=16", "pq:m=16,rerank=50",
                                                                    "pq:m=8"}) {
  Matrix items, uv;
  std::vector<float> bias;
  if (!model.item_vectors(items, bias)) return;
  std::vector<uint32_t> users;
  for (uint32_t u = 0; u < test.n_rows; ++u)
    if (test.indptr[u + 1] > test.indptr[u]) users.push_back(u);
  model.user_vectors(users, uv);
  const size_t k = 10, n = items.rows, f = items.cols;
  auto ndcg = [&](const std::vector<std::vector<ScoredItem>>& lists) {
    double s = 0;
    for (size_t r = 0; r < users.size(); ++r) {
      std::vector<uint32_t> ranked;
      for (const ScoredItem& si : lists[r]) ranked.push_back(si.item);
      s += ndcg_at_k(ranked, test.row_indices(users[r]), k);
    }
    return s / double(users.size());
  };
  // Queries per second of `one(r)` over every test user, repeated until at least a second has passed.
  auto rate = [&](const std::function<void(size_t)>& one) {
    Timer t;
    size_t done = 0;
    do {
      for (size_t r = 0; r < users.size(); ++r) one(r);
      done += users.size();
    } while (t.seconds() < 1.0);
    return double(done) / t.seconds();
  };
  std::vector<std::vector<ScoredItem>> exact(users.size());
  std::vector<float> scores(n);
  const double exact_qps = rate([&](size_t r) {
    exact_scores(items, bias, uv.row(r), scores.data());
    exact[r] = top_k(scores.data(), uint32_t(n), k, train.row_indices(users[r]), {}, -1);
  });
  const double base = ndcg(exact);
  row["exact_scan"] = {
      {"queries_per_s", exact_qps}, {"ndcg@10", base}, {"bytes", double(n * f * sizeof(float))}};
  for (const std::string& spec : specs) {
    const ItemCodes codes = ItemCodes::build(items, bias, CodesSpec::parse(spec), 1);
    std::vector<std::vector<ScoredItem>> lists(users.size());
    const double qps = rate([&](size_t r) {
      lists[r] = codes_top_k(codes, uv.row(r), k, train.row_indices(users[r]), {}, -1, items, bias);
    });
    double hit = 0, total = 0;
    for (size_t r = 0; r < users.size(); ++r) {
      for (const ScoredItem& e : exact[r])
        for (const ScoredItem& a : lists[r]) hit += a.item == e.item;
      total += double(exact[r].size());
    }
    const double got = ndcg(lists);
    row[spec] = {{"recall@10_vs_exact", hit / total},
                 {"ndcg@10", got},
                 {"ndcg@10_delta", got - base},
                 {"bytes", double(codes.code_bytes())},
                 {"float_bytes", double(n * f * sizeof(float))},
                 {"queries_per_s", qps},
                 {"speedup_vs_exact_scan", qps / exact_qps}};
    std::fprintf(
        stderr, "  %s %s: recall@10 %.4f, ndcg@10 %.4f (%+.4f), %zu code bytes, %.0f q/s (exact %.0f)\n",
        model.name().c_str(), spec.c_str(), hit / total, got, got - base, codes.code_bytes(), qps, exact_qps);
  }
}

}  // namespace xdrec::bench
