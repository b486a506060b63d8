// The experiment runner: per seed a split, per model run a fit (or one per domain), every evaluation of the
// fitted model, flattened metrics; then mean and 95% CI over seeds.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <set>

#include "xdrec/augment.h"
#include "xdrec/dist.h"
#include "xdrec/pipeline.h"

namespace xdrec {

namespace {

Csr part_matrix(const Dataset& ds, const std::vector<Interaction>& a, const std::vector<Interaction>* b,
                bool binary, bool use_ratings) {
  Csr m;
  if (b && !b->empty()) {
    std::vector<Interaction> all = a;
    all.insert(all.end(), b->begin(), b->end());
    m = ds.user_item_matrix(all, use_ratings);
  } else {
    m = ds.user_item_matrix(a, use_ratings);
  }
  if (binary)
    for (auto& v : m.values) v = 1.0f;
  return m;
}

// The entries of m whose item lies in domain d.
Csr restrict_to_domain(const Csr& m, std::span<const uint16_t> item_domain, uint16_t d) {
  std::vector<uint32_t> r, c;
  std::vector<float> v;
  for (uint32_t u = 0; u < m.n_rows; ++u) {
    const auto idx = m.row_indices(u);
    const auto val = m.row_values(u);
    for (size_t j = 0; j < idx.size(); ++j)
      if (item_domain[idx[j]] == d) r.push_back(u), c.push_back(idx[j]), v.push_back(val[j]);
  }
  return Csr::from_triplets(m.n_rows, m.n_cols, r, c, v);
}

// The items of s that lie in domain d, order kept.
Sequences restrict_to_domain(const Sequences& s, std::span<const uint16_t> item_domain, uint16_t d) {
  Sequences out;
  out.offsets.assign(s.offsets.size(), 0);
  for (uint32_t u = 0; u < s.n_users(); ++u) {
    for (uint32_t i : s.of(u))
      if (item_domain[i] == d) out.items.push_back(i);
    out.offsets[u + 1] = out.items.size();
  }
  return out;
}

// Overall metrics of prefix P as the user-weighted mean of the per-domain ones ("P<domain>/<metric>", with
// "P<domain>/n_users" the weights).
void overall_from_domains(const Dataset& ds, const std::string& prefix, std::map<std::string, double>& m) {
  std::map<std::string, double> sum;
  double total = 0;
  for (uint32_t d = 0; d < ds.n_domains(); ++d) {
    const std::string dp = prefix + ds.domains.name(d) + "/";
    auto nu = m.find(dp + "n_users");
    if (nu == m.end() || nu->second <= 0) continue;
    total += nu->second;
    for (const auto& [k, v] : m)
      if (k.rfind(dp, 0) == 0 && k != dp + "n_users") sum[prefix + k.substr(dp.size())] += nu->second * v;
  }
  if (total <= 0) return;
  for (const auto& [k, v] : sum) m[k] = v / total;
  m[prefix + "n_users"] = total;
}

// A run's record as JSON for the distributed runner: every metric as the bits of its double (exact, NaN
// included).
nlohmann::json record_to_json(const RunRecord& r) {
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [k, v] : r.metrics) metrics[k] = std::bit_cast<uint64_t>(v);
  return {{"key", r.key},
          {"spec", r.spec},
          {"seed", r.seed},
          {"metrics", metrics},
          {"text_encoder", r.text_encoder},
          {"error", r.error},
          {"rating_pairs", r.rating_pairs},
          {"extras", r.extras}};
}

RunRecord record_from_json(const nlohmann::json& j) {
  RunRecord r;
  r.key = j.at("key").get<std::string>();
  r.spec = j.at("spec").get<std::string>();
  r.seed = j.at("seed").get<uint64_t>();
  for (const auto& [k, v] : j.at("metrics").items()) r.metrics[k] = std::bit_cast<double>(v.get<uint64_t>());
  r.text_encoder = j.at("text_encoder").get<std::string>();
  r.error = j.at("error").get<std::string>();
  r.rating_pairs = j.at("rating_pairs").get<std::vector<std::pair<float, float>>>();
  r.extras = j.at("extras");
  return r;
}

}  // namespace

int domain_index(const Dataset& ds, const std::string& name) {
  if (name.empty()) return -1;
  auto d = ds.domains.find(name);
  if (!d) {
    std::string known;
    for (auto& n : ds.domains.names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown domain '" + name + "' (domains: " + known + ")");
  }
  return int(*d);
}

std::string format_bytes(double bytes) {
  char buf[64];
  if (bytes >= double(1ULL << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(1ULL << 30));
  else
    std::snprintf(buf, sizeof buf, "%.0f MiB", bytes / double(1ULL << 20));
  return buf;
}

DataShape data_shape(const Dataset& ds, const Csr& train, const TextVectors* text) {
  DataShape s;
  s.n_users = train.n_rows;
  s.n_items = train.n_cols;
  s.nnz = train.nnz();
  s.text_dim = text ? uint32_t(text->items.cols) : 0;
  s.n_domains = std::max<uint32_t>(1, ds.n_domains());
  return s;
}

void check_cost(const std::string& spec, const ModelCost& cost, const DataShape& shape, size_t available) {
  if (available == 0) available = available_memory_bytes();
  if (available == 0 || cost.bytes <= available) return;
  // Registered models (default settings) whose estimate fits, cheapest first.
  std::vector<std::pair<uint64_t, std::string>> fits;
  for (const ModelInfo& m : registered_models()) {
    try {
      const ModelCost c = estimate_model_cost(m.name, shape);
      if (c.bytes <= available)
        fits.emplace_back(c.bytes, m.name + " (~" + format_bytes(double(c.bytes)) + ")");
    } catch (const Error&) {
    }
  }
  std::sort(fits.begin(), fits.end());
  std::string alt;
  for (size_t k = 0; k < fits.size() && k < 4; ++k) alt += (k ? ", " : "") + fits[k].second;
  throw Error("model '" + spec + "' needs about " + format_bytes(double(cost.bytes)) + " for " +
              std::to_string(shape.n_users) + " users x " + std::to_string(shape.n_items) + " items" +
              (cost.note.empty() ? "" : " (" + cost.note + ")") + ", but only " +
              format_bytes(double(available)) + " are available; it was not started" +
              (alt.empty() ? "" : ". Models that fit: " + alt));
}

namespace {
std::string distributed_models() {
  std::string names;
  for (const ModelInfo& m : registered_models())
    if (m.traits.distributed) names += (names.empty() ? "" : ", ") + m.name;
  return names.empty() ? "none" : names;
}
}  // namespace

FitContext fit_context(const Dataset& ds, const FitRequest& req) {
  FitContext ctx;
  ctx.threads = resolve_threads(req.threads);
  ctx.seed = req.seed;
  ctx.item_domain = ds.item_domain;
  ctx.item_categories = req.item_categories && req.item_categories->rows ? req.item_categories : nullptr;
  ctx.progress = req.progress;
  ctx.sequences = req.sequences;
  ctx.comm = req.comm;
  ctx.verbose = req.verbose;
  if (req.text) attach_text(*req.text, ctx);
  return ctx;
}

Fitted fit_model(const Dataset& ds, const Csr& train, const FitRequest& req) {
  Fitted f;
  const DataShape shape = data_shape(ds, train, req.text);
  const ModelCost cost = estimate_model_cost(req.spec, shape);
  if (req.on_cost) req.on_cost(cost);
  if (req.check_cost) check_cost(req.spec, cost, shape);
  if (req.comm && req.comm->size() > 1)
    check(model_info(Spec::parse(req.spec).name).traits.distributed,
          "model '" + Spec::parse(req.spec).name +
              "' cannot be fitted distributed (models that can: " + distributed_models() + ")");
  f.model = create_model(req.spec);
  const FitContext ctx = fit_context(ds, req);
  RssSampler sampler;
  Timer t;
  f.model->fit(train, ctx);
  f.seconds = t.seconds();
  f.rss_delta_mb = sampler.stop();
  return f;
}

std::string ModelRun::result_key() const {
  if (!key.empty()) return key;
  std::string k = spec;
  if (!encoder.empty()) k += " [text=" + encoder + "]";
  if (single_domain) k += " [single-domain]";
  if (!augment.empty()) k += " +" + augment;
  return k;
}

void Experiment::flatten(const EvalResult& r, const std::string& prefix, std::map<std::string, double>& out) {
  for (const auto& [k, v] : r.overall) out[prefix + k] = v;
  out[prefix + "n_users"] = double(r.n_users);
  for (const auto& [d, m] : r.by_domain)
    for (const auto& [k, v] : m) out[prefix + d + "/" + k] = v;
  for (const auto& [c, m] : r.by_cohort)
    for (const auto& [k, v] : m) out[prefix + c + "/" + k] = v;
}

Experiment::Experiment(const Dataset& ds, ExperimentOptions opt) : ds_(ds), opt_(std::move(opt)) {
  check(!opt_.seeds.empty(), "experiment: no seed given");
  check(!opt_.evaluations.empty(), "experiment: no evaluation given");
  if (opt_.item_categories || !opt_.item_vectors) categories_ = ds_.category_vectors();
  domain_index(ds_, opt_.target_domain);  // an unknown name fails here, before any work
}

const Split& Experiment::split(uint64_t seed) {
  if (opt_.given_split) return *opt_.given_split;
  if (auto it = splits_.find(seed); it != splits_.end()) return it->second;
  Split s;
  if (opt_.make_split) {
    s = opt_.make_split(seed);
  } else {
    SplitOptions o = opt_.split;
    o.seed = seed;
    if (!opt_.target_domain.empty()) o.target_domain = domain_index(ds_, opt_.target_domain);
    s = make_split(ds_, opt_.protocol, o);
  }
  return splits_.emplace(seed, std::move(s)).first->second;
}

RunRecord Experiment::run_one(const ModelRun& m, uint64_t seed, std::unique_ptr<Recommender>* keep) {
  RunRecord rec;
  rec.key = m.result_key();
  rec.seed = seed;
  const Split& sp = split(seed);
  const bool with_text = !m.encoder.empty() && m.encoder != "none";
  const TextVectors* tv = nullptr;
  if (with_text) {
    check(opt_.text != nullptr,
          "experiment: model '" + rec.key + "' names an encoder but no text source is set");
    if (opt_.isolate && !opt_.text->has(ds_, &sp, m.encoder)) {
      // Encode in a worker with every thread (it fills the embedding cache); this process then reads the
      // vectors from the cache, so it never starts a thread pool that a later fork would break.
      std::string error;
      auto warm = [&]() -> nlohmann::json {
        TextOptions to = opt_.text->options();
        to.threads = opt_.threads;
        TextVectorSource w(to);
        (void)w.get(ds_, &sp, m.encoder);
        return nlohmann::json::object();
      };
      if (!run_isolated(warm, true, opt_.task_timeout, error))
        throw Error("encoding with " + m.encoder + " failed: " + error);
    }
    tv = &opt_.text->get(ds_, &sp, m.encoder);
    rec.text_encoder = tv->encoder_spec;
  }
  const Csr train = part_matrix(ds_, sp.train, opt_.fit_on_validation ? &sp.validation : nullptr, opt_.binary,
                                opt_.use_ratings || opt_.rating_task);
  const Csr test = part_matrix(ds_, opt_.evaluate_on_validation ? sp.validation : sp.test, nullptr,
                               opt_.binary, opt_.rating_task);
  const int threads = resolve_threads(opt_.threads);
  const int target = domain_index(ds_, opt_.target_domain);
  const Matrix* item_vectors =
      opt_.item_vectors ? opt_.item_vectors : (categories_.rows ? &categories_ : nullptr);

  auto eval_options = [&](const Evaluation& ev) {
    EvalOptions eo = ev.options;
    eo.threads = threads;
    eo.seed = seed;
    eo.cold_user = sp.cold_user;
    eo.target_domain = target;
    if (!eo.item_vectors) eo.item_vectors = item_vectors;
    if (!eo.progress) eo.progress = opt_.progress;
    if (ev.candidates == Evaluation::Candidates::kHeldOutItems) {
      check(std::find(sp.cold_item.begin(), sp.cold_item.end(), uint8_t(1)) != sp.cold_item.end(),
            "candidates cold-items: split '" + sp.protocol +
                "' holds out no items (use --protocol cold-items)");
      // The held-out items of the evaluated part (a split may hold out items for validation too).
      eo.candidate_items.assign(ds_.n_items(), 0);
      for (uint32_t i : test.indices)
        if (sp.cold_item[i]) eo.candidate_items[i] = 1;
    }
    return eo;
  };
  const Sequences sequences =
      user_sequences(ds_.n_users(), sp.train, opt_.fit_on_validation ? &sp.validation : nullptr);
  auto fit = [&](const Csr& tr, const Sequences& seqs, nlohmann::json& out, double& fit_s, double& rss) {
    FitRequest req;
    req.sequences = &seqs;
    req.spec = m.spec;
    req.seed = seed;
    req.threads = threads;
    req.text = tv;
    req.item_categories = opt_.item_categories ? &categories_ : nullptr;
    req.progress = opt_.progress;
    if (opt_.on_cost) req.on_cost = [&](const ModelCost& c) { opt_.on_cost(m.result_key(), c); };
    Csr augmented;
    if (!m.augment.empty()) {
      AugmentReport ar;
      augmented =
          augment_interactions(tr, ds_.item_domain, parse_augment(m.augment, ds_), seed, threads, &ar);
      fit_s += ar.seconds;
      out["extras"]["augment"] = {
          {"users", ar.users}, {"added", ar.added}, {"seconds", ar.seconds}, {"generator", ar.generator}};
    }
    Fitted f = fit_model(ds_, m.augment.empty() ? tr : augmented, req);
    fit_s += f.seconds;
    rss = std::max(rss, f.rss_delta_mb);
    if (tv && !f.model->uses_text()) {
      if (!m.text_optional)
        throw Error("model '" + f.model->name() + "' did not use the text vectors it was given");
      out["text_unused"] = true;
    }
    out["spec"] = f.model->spec();
    return std::move(f.model);
  };

  auto work = [&]() -> nlohmann::json {
    nlohmann::json out;
    std::map<std::string, double> metrics;
    double fit_s = 0, eval_s = 0, rss = 0;
    if (!m.single_domain) {
      auto model = fit(train, sequences, out, fit_s, rss);
      if (const auto curves = model->training_curves(); !curves.empty())
        out["extras"]["training_curves"] = curves;
      // The guarantee of a model trained with differential privacy (its manifest's "privacy").
      const auto& values = Spec::parse(m.spec).values;
      if (std::any_of(values.begin(), values.end(),
                      [](const auto& kv) { return kv.first.rfind("dp", 0) == 0; })) {
        TensorMap tensors;
        nlohmann::json extra;
        model->save(tensors, extra);
        if (extra.contains("privacy")) out["extras"]["privacy"] = extra["privacy"];
      }
      for (const Evaluation& ev : opt_.evaluations) {
        const std::string prefix = ev.name.empty() ? "" : ev.name + "/";
        const EvalResult r = evaluate(*model, train, test, &ds_, eval_options(ev));
        eval_s += r.seconds;
        if (!r.long_tail.recommended.empty() && !out["extras"].contains("long_tail"))
          out["extras"]["long_tail"] = {{"recommended", r.long_tail.recommended},
                                        {"interacted", r.long_tail.interacted}};
        flatten(r, prefix, metrics);
        if (ev.overall_from_domains) overall_from_domains(ds_, prefix, metrics);
      }
      if (opt_.rating_task) {
        std::vector<std::pair<float, float>> pairs;
        const EvalResult r = evaluate_ratings(*model, test, &ds_, sp.cold_user, threads, &pairs, 20000);
        out["rating_pairs"] = pairs;
        eval_s += r.seconds;
        for (const auto& [k, v] : r.overall) metrics[k] = v;
        for (const auto& [d, mm] : r.by_domain)
          for (const auto& [k, v] : mm) metrics[d + "/" + k] = v;
        for (const auto& [c, mm] : r.by_cohort)
          for (const auto& [k, v] : mm) metrics[c + "/" + k] = v;
      }
      if (keep) *keep = std::move(model);
    } else {
      // One model per domain, fitted and evaluated on that domain's interactions only.
      for (uint16_t d = 0; d < ds_.n_domains(); ++d) {
        if (target >= 0 && d != target) continue;
        const Csr te = restrict_to_domain(test, ds_.item_domain, d);
        if (te.nnz() == 0) continue;
        const Csr tr = restrict_to_domain(train, ds_.item_domain, d);
        const Sequences sq = restrict_to_domain(sequences, ds_.item_domain, d);
        auto model = fit(tr, sq, out, fit_s, rss);
        for (const Evaluation& ev : opt_.evaluations) {
          const std::string prefix = ev.name.empty() ? "" : ev.name + "/";
          EvalOptions eo = eval_options(ev);
          eo.per_domain = true;
          const EvalResult r = evaluate(*model, tr, te, &ds_, eo);
          eval_s += r.seconds;
          const std::string dn = ds_.domains.name(d);
          if (auto it = r.by_domain.find(dn); it != r.by_domain.end())
            for (const auto& [k, v] : it->second) metrics[prefix + dn + "/" + k] = v;
        }
      }
      for (const Evaluation& ev : opt_.evaluations)
        overall_from_domains(ds_, ev.name.empty() ? "" : ev.name + "/", metrics);
    }
    metrics["fit_seconds"] = fit_s;
    metrics["eval_seconds"] = eval_s;
    metrics["peak_rss_delta_mb"] = rss;
    out["metrics"] = metrics;
    return out;
  };
  std::string error;
  auto res = run_isolated(work, opt_.isolate, opt_.task_timeout, error);
  if (!res) {
    rec.error = error;
    return rec;
  }
  rec.spec = (*res)["spec"].get<std::string>();
  if (res->value("text_unused", false)) rec.text_encoder.clear();
  rec.metrics = (*res)["metrics"].get<std::map<std::string, double>>();
  if (res->contains("rating_pairs"))
    rec.rating_pairs = (*res)["rating_pairs"].get<std::vector<std::pair<float, float>>>();
  if (res->contains("extras")) rec.extras = (*res)["extras"];
  return rec;
}

ExperimentResult Experiment::run() {
  ExperimentResult res;
  const Split& first = split(opt_.seeds.front());
  res.protocol = first.protocol;
  // Cost before work: every model's estimate on the first split's shape, before any fit; a model that cannot
  // fit in memory is refused here (its record carries why) instead of failing after the others ran.
  std::set<std::string> refused;
  {
    const Csr train = part_matrix(ds_, first.train, opt_.fit_on_validation ? &first.validation : nullptr,
                                  opt_.binary, opt_.use_ratings || opt_.rating_task);
    const DataShape shape = data_shape(ds_, train, nullptr);
    for (const ModelRun& m : opt_.models) {
      const std::string key = m.result_key();
      try {
        check_cost(m.spec, estimate_model_cost(m.spec, shape), shape);
      } catch (const Error& e) {
        if (!refused.insert(key).second) continue;
        RunRecord rec;
        rec.key = key;
        rec.seed = opt_.seeds.front();
        rec.error = e.what();
        res.keys.push_back(key);
        res.notes.push_back("'" + key + "' refused: " + rec.error);
        if (on_run) on_run(rec);
        res.runs[key].push_back(std::move(rec));
      }
    }
  }
  // The (model, seed) runs in order.
  struct Task {
    size_t model, seed;
  };
  std::vector<Task> tasks;
  for (size_t mi = 0; mi < opt_.models.size(); ++mi) {
    const ModelRun& m = opt_.models[mi];
    if (refused.count(m.result_key())) continue;
    for (size_t si = 0; si < opt_.seeds.size(); ++si) {
      if (m.max_seeds > 0 && si >= size_t(m.max_seeds)) break;
      tasks.push_back({mi, si});
    }
  }
  auto run_task = [&](const Task& t) {
    const ModelRun& m = opt_.models[t.model];
    RunRecord rec;
    try {
      std::unique_ptr<Recommender> kept;
      const bool keep = opt_.keep_models && !opt_.isolate && !m.single_domain;
      rec = run_one(m, opt_.seeds[t.seed], keep ? &kept : nullptr);
      if (kept) res.models[m.result_key()] = std::move(kept);
    } catch (const std::exception& e) {
      rec.key = m.result_key();
      rec.seed = opt_.seeds[t.seed];
      rec.error = e.what();
    }
    return rec;
  };
  // Records in task order, each key's runs ending at its first failure (the remaining seeds would fail the
  // same way): one process runs the tasks one by one and stops a key there; distributed, every rank runs its
  // share and the records are gathered, then cut the same way.
  std::vector<RunRecord> records;
  Communicator* comm = opt_.comm && opt_.comm->size() > 1 ? opt_.comm : nullptr;
  std::set<size_t> failed;  // models
  if (!comm) {
    for (const Task& t : tasks) {
      if (failed.count(t.model)) continue;
      records.push_back(run_task(t));
      if (!records.back().error.empty()) failed.insert(t.model);
    }
  } else {
    check(!opt_.keep_models && !opt_.isolate,
          "experiment: a distributed run keeps no models and runs no isolated workers");
    const size_t rank = size_t(comm->rank()), ranks = size_t(comm->size());
    nlohmann::json mine = nlohmann::json::array();
    for (size_t k = rank; k < tasks.size(); k += ranks) mine.push_back(record_to_json(run_task(tasks[k])));
    const std::vector<std::string> parts = allgather_strings(*comm, mine.dump());
    std::vector<nlohmann::json> got;
    for (const std::string& p : parts) got.push_back(nlohmann::json::parse(p));
    for (size_t k = 0; k < tasks.size(); ++k) {
      if (failed.count(tasks[k].model)) continue;
      RunRecord rec = record_from_json(got[k % ranks].at(k / ranks));
      if (!rec.error.empty()) failed.insert(tasks[k].model);
      records.push_back(std::move(rec));
    }
  }
  for (RunRecord& rec : records) {
    const std::string key = rec.key;
    if (!res.runs.count(key)) res.keys.push_back(key);
    if (!rec.error.empty())
      res.notes.push_back("'" + key + "' failed (seed " + std::to_string(rec.seed) + "): " + rec.error);
    if (on_run) on_run(rec);
    res.runs[key].push_back(std::move(rec));
  }
  return res;
}

std::map<std::string, MeanCI> ExperimentResult::summary(const std::string& key) const {
  std::map<std::string, std::vector<double>> vals;
  if (auto it = runs.find(key); it != runs.end())
    for (const RunRecord& r : it->second)
      if (r.error.empty())
        for (const auto& [k, v] : r.metrics)
          if (std::isfinite(v)) vals[k].push_back(v);
  std::map<std::string, MeanCI> out;
  for (const auto& [k, v] : vals) out[k] = mean_ci95(v);
  return out;
}

nlohmann::json ExperimentResult::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& key : keys) {
    nlohmann::json mj = nlohmann::json::object();
    for (const auto& [metric, ci] : summary(key)) mj[metric] = {{"mean", ci.mean}, {"ci95", ci.ci95}};
    if (!mj.empty()) j[key] = mj;
  }
  return j;
}

std::string ExperimentResult::table(const std::vector<std::string>& metrics) const {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header{"model"};
  for (const auto& m : metrics) header.push_back(m);
  header.push_back("fit s");
  rows.push_back(header);
  auto fmt = [](double v, int prec) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", prec, v);
    return std::string(buf);
  };
  for (const auto& key : keys) {
    const auto s = summary(key);
    if (s.empty()) continue;
    std::vector<std::string> row{key};
    for (const auto& m : metrics) {
      auto it = s.find(m);
      if (it == s.end()) {
        row.push_back("-");
        continue;
      }
      row.push_back(it->second.n > 1 ? fmt(it->second.mean, 4) + "±" + fmt(it->second.ci95, 3)
                                     : fmt(it->second.mean, 4));
    }
    auto f = s.find("fit_seconds");
    row.push_back(f == s.end() ? "-" : fmt(f->second.mean, 2));
    rows.push_back(row);
  }
  std::vector<size_t> w(header.size(), 0);
  for (auto& r : rows)
    for (size_t j = 0; j < r.size(); ++j) w[j] = std::max(w[j], r[j].size());
  std::string out;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string line;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      std::string cell = rows[i][j];
      // "±" is two bytes but one column
      size_t shown = cell.size();
      for (size_t p = cell.find("±"); p != std::string::npos; p = cell.find("±", p + 1)) --shown;
      const size_t width = w[j];
      if (shown < width) cell.append(width - shown, ' ');
      line += (j ? "  " : "") + cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
    if (i == 0) {
      size_t total = 0;
      for (auto x : w) total += x + 2;
      out += std::string(total - 2, '-') + "\n";
    }
  }
  return out;
}

}  // namespace xdrec
