// The incremental-update measurement shared by bench/incremental and bench/scale: a model resumed on new data
// (xdrec train --resume) against a full retrain and the stale model on a time-ordered split (see
// bench/incremental.cpp for the protocol).
#pragma once

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "xdrec/embed.h"
#include "xdrec/metrics.h"
#include "xdrec/pipeline.h"
#include "xdrec/readers.h"

namespace xdrec::bench {

using json = nlohmann::json;

inline json incremental_mean_ci(const std::vector<double>& v) {
  const MeanCI m = mean_ci95(v);
  return {{"mean", m.mean}, {"ci95", m.ci95}};
}

// One model on one dataset. `text` (may be null): the item text vectors given to the fits and the resume (a
// text model's new items enter through them). `sweeps`: the resume's passes (iALS) or epochs (SGD models).
inline json incremental_part(const Dataset& ds, const std::string& spec, int seeds, int threads,
                             const TextVectors* text = nullptr,
                             const std::vector<int>& sweeps_list = {0, 1, 2}) {
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
  std::printf("%s, %s: %zu old and %zu new interactions (after t=%lld), %zu touched users\n", ds.name.c_str(),
              spec.c_str(), old.size(), sp.train.size() - old.size(), (long long)cut, touched.size());
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
    if (text) {
      ctx.item_text = &text->items;
      ctx.text_encoder = text->encoder_spec;
    }
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
    for (int sweeps : sweeps_list) {
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
    out[k] = {{"ndcg@10", incremental_mean_ci(v)},
              {"hr@10", incremental_mean_ci(hr[k])},
              {"seconds", incremental_mean_ci(secs[k])}};
  // The resume's time as a share of the full retrain's (means over the seeds, same run).
  for (const auto& [k, v] : secs)
    if (k.rfind("resume", 0) == 0)
      out[k]["time_vs_full"] = mean_ci95(v).mean / std::max(mean_ci95(secs["full"]).mean, 1e-9);
  out["_info"] = {{"spec", spec},
                  {"text", text ? text->encoder_spec : ""},
                  {"old_interactions", old.size()},
                  {"new_interactions", sp.train.size() - old.size()},
                  {"touched_users", touched.size()},
                  {"test", "each user's last interaction by time, full ranking"}};
  return out;
}

// The datasets of the measurement: name, directory under DATA_ROOT, format.
inline std::vector<std::tuple<std::string, std::string, std::string>> incremental_datasets() {
  return {{"ml-latest-small", "movielens_ml-latest-small", "auto"},
          {"food-kitchen", "amazon_food-kitchen_llmcdsr", "food-kitchen"}};
}

// The datasets of the measurement under DATA_ROOT (those present): {"<dataset>": incremental_part(...)}.
inline json incremental_all(const std::string& root, const std::string& spec, int seeds, int threads,
                            const std::function<void(const json&)>& partial = {}) {
  json res = json::object();
  for (const auto& [name, dir, format] : incremental_datasets()) {
    if (!std::filesystem::exists(root + "/" + dir)) continue;
    const Dataset ds = read_dataset(root + "/" + dir, format);
    res[name] = incremental_part(ds, spec, seeds, threads);
    if (partial) partial(res);
  }
  return res;
}

// Several models on the datasets under DATA_ROOT (those present): {"<dataset>": {"<spec>":
// incremental_part}}. Models that use text get the items' text vectors of `encoder` (tags left out: they leak
// on MovieLens); models with epochs (every model but ials) resume with `sgd_sweeps` epochs.
inline json incremental_models(const std::string& root, const std::vector<std::string>& specs,
                               const std::string& encoder, int seeds, int threads,
                               const std::vector<int>& sgd_sweeps,
                               const std::function<void(const json&)>& partial = {}) {
  json res = json::object();
  for (const auto& [name, dir, format] : incremental_datasets()) {
    if (!std::filesystem::exists(root + "/" + dir)) continue;
    const Dataset ds = read_dataset(root + "/" + dir, format);
    std::optional<TextVectors> text;
    for (const std::string& spec : specs) {
      const bool uses_text = model_info(Spec::parse(spec).name).traits.uses_text;
      if (uses_text && !text) {
        auto enc = make_text_encoder(encoder);
        EmbedOptions eo;
        eo.include_tags = false;
        eo.threads = threads;
        text = embed_dataset(ds, *enc, eo);
      }
      const bool sgd = Spec::parse(spec).name != "ials";
      res[name][spec] = incremental_part(ds, spec, seeds, threads, uses_text ? &*text : nullptr,
                                         sgd ? sgd_sweeps : std::vector<int>{0, 1, 2});
      if (partial) partial(res);
    }
  }
  return res;
}

}  // namespace xdrec::bench
