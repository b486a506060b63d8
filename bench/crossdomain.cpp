// Cross-domain and cold-start benchmark: Amazon Food-Kitchen (fixed split, sampled and full ranking, cross-
// vs single-domain training), Douban Book<->Music cold users (20% / 50%, both directions) and MovieLens
// latest-small cold items (20% of the movies held out, reachable only through their text), with the text
// encoder, autoencoder and transfer ablations. Results: mean and 95% CI (Student t) over seeds.
//
// A thin configuration of the pipeline (include/xdrec/pipeline.h): each protocol is an Experiment (split
// protocol, seeds, evaluations) over this benchmark's model list; fitting, evaluation, isolation of each run
// in a worker process, text vectors and the mean ± CI all come from there.
//
// Usage: bench/crossdomain OUT.json [DATA_ROOT] [options]
//   DATA_ROOT      default: $XDREC_SHARED_DATA, else <repository>/../shared/data
//   --seeds N      seeds per protocol (default 3)
//   --threads N    threads for fitting and evaluation (default: all cores)
//   --quick        smoke run (about a minute): one seed, tiny epochs, one encoder
//   --ablation     adds the full text ablation (tfidf, glove, use-lite and bert:DIR, each with and without
//                  the autoencoder), EASE on the 50% protocols and the slow text models on Food-Kitchen
//   --only P[,P]   protocols whose name starts with one of these (e.g. douban, food-kitchen/sampled)
//   --filter S     only the model keys containing S (repeatable)
//   --model SPEC[@TEXT]  replaces the default model list (repeatable); TEXT is none, tfidf, glove, use-lite
//                  or bert:DIR (default: none)
//   --bert DIR     adds the encoder bert:DIR to the text ablation
//   --encoders E[,E]  replaces the encoders of the text ablation (default: tfidf, glove, use-lite on the
//                  cold-item protocol, use-lite on Food-Kitchen; an encoder not installed is skipped)
//   --task-timeout S  gives up a (model, seed) fit after S seconds (default 3600)
//   --no-fork      fits in this process (by default each (model, seed) runs in a forked worker, so that a
//                  crashing model costs only its own result)
//   --validate     fit on the training part and evaluate on the validation part (for tuning); the default is
//                  the test part, fitted on training + validation
//   --merge        keep the protocols of an existing OUT.json that this run does not produce
//   --no-single-domain  skip the single-domain ablation of the fixed-split protocols
//   --dataset DIR --protocol cold-items|cold-users:target=X|fixed|leave-last-out   a dataset (may repeat
//                  --protocol); protocols named "<dataset name>/<protocol>"
//
// JSON: {"<protocol>": {"<model key>": {"<metric>": {"mean": m, "ci95": c}}}, "_meta": {...}}. A model key is
// the spec exactly as given to create_model, followed by " [text=ENCODER]" for the models given text vectors
// (text=none: the same model fitted without them) and " [single-domain]" for the single-domain ablation.
// Every model has "tied_share": the mean share of candidates scored exactly like the held-out item (ties are
// broken pessimistically in the sampled protocol and in a seeded random order in full ranking).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "xdrec/pipeline.h"
#include "xdrec/readers.h"

using namespace xdrec;
namespace fs = std::filesystem;

namespace {

// ---- Options ----

struct Options {
  std::string out, data_root;
  int seeds = 3;
  int threads = 0;
  bool quick = false, validate = false, merge = false, no_fork = false, ablation = false;
  bool no_single = false;  // --no-single-domain: skip the single-domain ablation of the fixed-split protocols
  int task_timeout = 3600;  // seconds per (model, seed) worker
  std::vector<std::string> only, filters, models;
  std::string bert;
  std::vector<std::string> encoders;  // --encoders: replaces the encoder list of the text ablation
  std::string dataset;
  std::vector<std::string> dataset_protocols;
  std::string command_line;
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(
      stderr,
      "usage: %s OUT.json [DATA_ROOT] [--seeds N] [--threads N] [--quick] [--only P[,P]] [--filter S]\n"
      "          [--model SPEC[@TEXT]] [--bert DIR] [--encoders E[,E]] [--ablation] [--validate]\n"
      "          [--merge] [--task-timeout S] [--no-fork] [--no-single-domain]\n"
      "          [--dataset DIR --protocol cold-items|cold-users:target=X|fixed|leave-last-out]\n",
      argv0);
  std::exit(2);
}

// The shared data directory: the argument, else $XDREC_SHARED_DATA, else <repository>/../shared/data (the
// repository found from this source file's path, then from the executable's), else ../shared/data.
std::string resolve_data_root(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* e = std::getenv("XDREC_SHARED_DATA"); e && *e) return e;
  std::vector<fs::path> tries;
  const fs::path src = fs::path(__FILE__);
  if (src.is_absolute()) tries.push_back(src.parent_path().parent_path().parent_path() / "shared" / "data");
  std::error_code ec;
  const fs::path exe = fs::canonical("/proc/self/exe", ec);
  if (!ec) tries.push_back(exe.parent_path().parent_path().parent_path() / "shared" / "data");
  tries.push_back(fs::path("..") / "shared" / "data");
  for (const auto& p : tries)
    if (fs::is_directory(p, ec)) return fs::weakly_canonical(p, ec).string();
  return tries.front().string();
}

// ---- Model configurations ----

struct Config {
  std::string spec;
  std::string text;   // "" for models that never take text (no suffix); "none" or an encoder label otherwise
  int max_seeds = 0;  // run only the first max_seeds seeds (0: all)
  bool single_domain = true;  // also run the single-domain ablation (fixed-split protocols)
};

// Notes printed at the end and written into _meta.notes (each once).
struct Notes {
  std::vector<std::string> list;
  std::set<std::string> seen;
  void add(const std::string& n) {
    if (seen.insert(n).second) {
      list.push_back(n);
      std::printf("  note: %s\n", n.c_str());
      std::fflush(stdout);
    }
  }
};

struct Env {
  Options opt;
  int threads = 1;
  Notes notes;
  std::unique_ptr<TextVectorSource> text;
};

bool key_selected(const Options& o, const std::string& key) {
  if (o.filters.empty()) return true;
  for (const auto& f : o.filters)
    if (key.find(f) != std::string::npos) return true;
  return false;
}

bool protocol_selected(const Options& o, const std::string& name) {
  if (o.only.empty()) return true;
  for (const auto& p : o.only)
    if (name.rfind(p, 0) == 0) return true;
  return false;
}

// Whether any selected protocol lies under `prefix` (a dataset's protocols).
bool dataset_selected(const Options& o, const std::string& prefix) {
  if (o.only.empty()) return true;
  for (const auto& p : o.only)
    if (p.rfind(prefix, 0) == 0 || prefix.rfind(p, 0) == 0) return true;
  return false;
}

bool has_item_text(const Dataset& ds) {
  for (const auto& t : ds.item_text)
    if (!t.title.empty() || !t.description.empty() || !t.categories.empty()) return true;
  return !ds.tags.empty();
}

std::vector<uint64_t> seed_list(const Options& o) {
  std::vector<uint64_t> s;
  for (int i = 0; i < o.seeds; ++i) s.push_back(uint64_t(1 + i));
  return s;
}

// ---- Model lists ----

// EASE needs 12 bytes per item pair while fitting and O(n^3) time: limited to catalogues of this size.
constexpr uint32_t kEaseMaxItems = 15000;

struct ListOptions {
  bool text = true;              // the dataset has item text
  bool cross_domain = true;      // more than one domain
  bool ease_fits = true;         // the catalogue is small enough for EASE's dense item x item inverse
  bool encoder_ablation = true;  // with --ablation: every encoder, with and without the autoencoder
  bool ease_default = true;      // EASE in the default list (else with --ablation only)
  bool text_dim_cheap = true;    // raw text vectors (ae=0) are affordable for the hybrid model by default
  int slow_seeds = 0;            // seeds of the slow text models (0: every seed)
  bool fewer_epochs = false;     // large catalogue: fewer epochs for the hybrid and two-tower models
};

// The list options a dataset implies: item text, several domains, a catalogue small enough for EASE.
ListOptions list_options(const Dataset& ds) {
  ListOptions lo;
  lo.text = has_item_text(ds);
  lo.cross_domain = ds.n_domains() > 1;
  lo.ease_fits = ds.n_items() <= kEaseMaxItems;
  return lo;
}

// Encoders of the text ablation that can run here (--encoders, else tfidf, glove, use-lite, and bert:DIR
// with --bert).
std::vector<std::string> encoder_labels(Env& env, bool all) {
  std::vector<std::string> wanted = env.opt.encoders;
  if (wanted.empty()) {
    wanted =
        all ? std::vector<std::string>{"tfidf", "glove", "use-lite"} : std::vector<std::string>{"use-lite"};
    if (!env.opt.bert.empty()) wanted.push_back("bert:" + env.opt.bert);
  }
  std::vector<std::string> l;
  for (const auto& e : wanted) {
    std::string why;
    if (env.text->available(e, &why)) {
      l.push_back(e);
      continue;
    }
    std::string hint;
    if (e == "glove") hint = " (scripts/fetch-glove installs it)";
    if (e == "use-lite") hint = " (scripts/setup installs it)";
    env.notes.add("encoder " + e + " unavailable, its variants are skipped" + hint + ": " + why);
  }
  return l;
}

std::vector<Config> parse_model_options(const Options& o) {
  std::vector<Config> out;
  for (const auto& m : o.models) {
    const auto at = m.rfind('@');
    Config c;
    if (at == std::string::npos) {
      c.spec = m;
    } else {
      c.spec = m.substr(0, at);
      c.text = m.substr(at + 1);
    }
    out.push_back(c);
  }
  return out;
}

// The models of one protocol. The default lists are sized so that the whole run stays near 25 minutes on
// 2 cores (see BENCHMARKS.md): the main comparisons on every seed, the slow text models on Food-Kitchen on
// the first seed only. --ablation adds the full encoder x autoencoder grid; --model replaces the lists.
std::vector<Config> model_list(Env& env, const ListOptions& lo, const std::string& protocol) {
  std::vector<Config> out;
  const bool ablation = env.opt.ablation;
  const std::vector<std::string> encoders =
      lo.text ? encoder_labels(env, lo.encoder_ablation && ablation && !env.opt.quick)
              : std::vector<std::string>{};
  if (!env.opt.models.empty()) {
    for (Config c : parse_model_options(env.opt)) {
      if (!c.text.empty() && c.text != "none" && (!lo.text || !env.text->available(c.text))) continue;
      out.push_back(c);
    }
  } else if (env.opt.quick) {
    // Smoke run: every code path once, tiny epochs.
    out.push_back({"popular", ""});
    out.push_back({"ials:iterations=4", ""});
    if (lo.cross_domain) out.push_back({"emcdr:iterations=4", "", 0, false});
    for (const auto& e : encoders) {
      out.push_back({"hybrid:epochs=1,ae=0", e, 0, false});
      out.push_back({"hybrid:epochs=1,ae=16,ae_epochs=2", e, 0, false});
      out.push_back({"twotower:epochs=1,merge=dot,ae=0", e, 0, false});
      out.push_back({"twotower:epochs=1,merge=dot,ae=16,ae_epochs=2", e, 0, false});
      out.push_back({"twotower:epochs=1,merge=mlp", e, 0, false});
      out.push_back({"textbridge", e, 0, false});
    }
  } else {
    const int slow = lo.slow_seeds;  // seeds of the slow text models (0: all)
    out.push_back({"popular", ""});
    out.push_back({"itemknn", ""});
    out.push_back({"ials", ""});
    if (lo.ease_fits && (lo.ease_default || ablation)) out.push_back({"ease:lambda=300", "", 1});
    if (lo.cross_domain) out.push_back({"emcdr", ""});
    // Fewer epochs on the large catalogue (a two-tower epoch takes about 10 s there, a hybrid fit minutes).
    const bool fewer = lo.fewer_epochs && !ablation;
    const std::string tt = fewer ? "twotower:epochs=5," : "twotower:";
    const std::string hy = fewer ? "hybrid:epochs=10," : "hybrid:";
    // Shared users without text: the hybrid factorisation and the two towers fitted on ids only.
    out.push_back({hy + "ae=0", "none", slow});
    out.push_back({tt + "merge=dot,ae=0", "none", slow});
    if (ablation) out.push_back({tt + "merge=mlp", "none", slow});
    for (size_t k = 0; k < encoders.size(); ++k) {
      const std::string& e = encoders[k];
      const bool main = e == "use-lite" || e.rfind("bert:", 0) == 0 ||
                        (k + 1 == encoders.size() && !env.text->available("use-lite"));
      if (!main && !ablation) continue;
      // Hybrid factorisation with and without the autoencoder (the 512-d raw vectors are slow on the large
      // Food-Kitchen catalogue: there in the ablation only).
      if (lo.text_dim_cheap || ablation) out.push_back({hy + "ae=0", e, slow});
      out.push_back({hy + "ae=64", e, slow});
      // Two towers: dot product and concatenation + MLP.
      // Two towers: dot product with and without the autoencoder, concatenation + MLP.
      out.push_back({tt + "merge=dot,ae=0", e, slow});
      if (main) out.push_back({tt + "merge=dot,ae=64", e, slow});
      if (main) out.push_back({tt + "merge=mlp", e, slow});
      // Text bridge (fast).
      out.push_back({"textbridge", e});
      if (main && ablation) out.push_back({"textbridge:ae=64", e});
    }
  }
  if (!lo.text)
    env.notes.add(protocol +
                  ": the dataset has no text; the text ablations (encoders, autoencoder, "
                  "text bridge) are not applicable and not run");
  if (!lo.ease_fits && env.opt.models.empty() && !env.opt.quick)
    env.notes.add(protocol + ": EASE not run: its dense item x item inverse is limited to catalogues of " +
                  std::to_string(kEaseMaxItems) + " items here (12 bytes per item pair, O(n^3) time)");
  if (lo.ease_fits && !lo.ease_default && !ablation && env.opt.models.empty() && !env.opt.quick)
    env.notes.add(protocol +
                  ": EASE (minutes per fit here) runs on the 20% protocols only; --ablation adds it");
  if (lo.ease_fits && env.opt.models.empty() && !env.opt.quick && env.opt.seeds > 1)
    env.notes.add("EASE runs on the first seed only (minutes per fit here): no CI");
  if (lo.slow_seeds > 0 && env.opt.models.empty() && !env.opt.quick && env.opt.seeds > lo.slow_seeds)
    env.notes.add(protocol + ": the hybrid and two-tower models run on the first " +
                  std::to_string(lo.slow_seeds) +
                  " seed(s) only (minutes per fit on this catalogue): no CI for them");
  if (!ablation && lo.text && env.opt.models.empty() && !env.opt.quick)
    env.notes.add(protocol +
                  ": text models with use-lite only; --ablation adds tfidf, glove (and bert with --bert) "
                  "with and without the autoencoder");
  return out;
}

// ---- Protocols ----

using Results = std::map<std::string, nlohmann::json>;  // protocol -> {model key -> {metric -> mean, ci95}}
using Infos = std::map<std::string, nlohmann::json>;    // protocol -> description

// The experiment's model runs: the configurations selected by --filter (and, with `single_domain`, their
// single-domain ablation right after each).
std::vector<ModelRun> model_runs(const Env& env, const std::vector<Config>& configs, bool single_domain) {
  std::vector<ModelRun> runs;
  for (const Config& c : configs) {
    for (int single = 0; single <= (single_domain && c.single_domain ? 1 : 0); ++single) {
      ModelRun m;
      m.spec = c.spec;
      m.encoder = c.text == "none" ? "" : c.text;
      m.max_seeds = c.max_seeds;
      m.single_domain = single != 0;
      m.key = c.spec + (c.text.empty() ? "" : " [text=" + c.text + "]") + (single ? " [single-domain]" : "");
      if (key_selected(env.opt, m.key)) runs.push_back(m);
    }
  }
  return runs;
}

// Runs an experiment over `runs`, printing a line per (model, seed); notes for failures.
ExperimentResult run_experiment(Env& env, const Dataset& ds, ExperimentOptions x, std::vector<ModelRun> runs,
                                const std::string& label, const std::vector<std::string>& line_metrics) {
  // Models that cannot be created here (unknown parameter, not registered) are skipped with a note.
  std::vector<ModelRun> ok;
  for (auto& m : runs) {
    try {
      (void)create_model(m.spec);
      ok.push_back(m);
    } catch (const std::exception& e) {
      env.notes.add("model '" + m.spec + "' skipped: " + e.what());
    }
  }
  x.models = ok;
  x.threads = env.threads;
  x.isolate = !env.opt.no_fork;
  x.task_timeout = env.opt.task_timeout;
  x.text = env.text.get();
  x.binary = true;
  x.fit_on_validation = !env.opt.validate;
  x.evaluate_on_validation = env.opt.validate;
  Experiment exp(ds, x);
  exp.on_run = [&](const RunRecord& r) {
    if (!r.error.empty()) {
      env.notes.add(label + ": '" + r.key + "' failed: " + r.error);
      return;
    }
    auto get = [&](const std::string& k) { return r.metrics.count(k) ? r.metrics.at(k) : -1.0; };
    std::string what;
    char buf[96];
    for (const auto& m : line_metrics) {
      std::snprintf(buf, sizeof buf, "%s %.4f  ", m.c_str(), get(m));
      what += buf;
    }
    std::printf("  [%s] seed %llu %-52s fit %6.1f s  eval %5.1f s  %s\n", label.c_str(),
                (unsigned long long)r.seed, r.key.c_str(), get("fit_seconds"), get("eval_seconds"),
                what.c_str());
    std::fflush(stdout);
  };
  return exp.run();
}

// The metrics of `res` whose name starts with `prefix` (stripped), plus the run's own (fit_seconds, ...).
nlohmann::json protocol_json(const ExperimentResult& res, const std::string& prefix) {
  nlohmann::json out = nlohmann::json::object();
  const nlohmann::json all = res.to_json();
  for (const auto& [key, metrics] : all.items()) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& [name, v] : metrics.items()) {
      if (prefix.empty() || name.rfind(prefix, 0) == 0)
        m[name.substr(prefix.size())] = v;
      else if (name.find('/') == std::string::npos)
        m[name] = v;  // fit_seconds, eval_seconds, peak_rss_delta_mb
    }
    out[key] = m;
  }
  return out;
}

void print_table(const std::string& name, const ExperimentResult& res,
                 const std::vector<std::string>& metrics) {
  std::printf("\n== %s ==\n%s", name.c_str(), res.table(metrics).c_str());
  std::fflush(stdout);
}

// Fixed split (Food-Kitchen): the last item of each validation / test user is the target. Sampled (999
// negatives of the target's domain, pessimistic ties) and full ranking within the target's domain (seeded
// random ties), per domain; cross-domain training (all interactions) and single-domain training (only the
// target domain's) for every model. Overall = the user-weighted mean over the target domains: every test
// user has exactly one target, so this is the mean over test users of the ranking within their target's
// domain.
void run_fixed(Env& env, Results& res, Infos& info, const Dataset& ds, const std::string& prefix) {
  const std::string p_sampled = prefix + "/sampled", p_full = prefix + "/full";
  const bool want_sampled = protocol_selected(env.opt, p_sampled),
             want_full = protocol_selected(env.opt, p_full);
  if (!want_sampled && !want_full) return;
  ListOptions lo = list_options(ds);
  lo.encoder_ablation = false;  // use-lite only here: the encoder ablation runs on the cold-item protocol
  lo.text_dim_cheap = false;
  lo.fewer_epochs = ds.n_items() > 20000;
  const auto configs = model_list(env, lo, prefix);
  ExperimentOptions x;
  x.protocol = "fixed";
  x.seeds = seed_list(env.opt);
  if (want_sampled) {
    Evaluation ev;
    ev.name = "sampled";
    ev.options.ks = {1, 5, 10, 1000};
    ev.options.sampled_negatives = 999;
    ev.overall_from_domains = true;
    x.evaluations.push_back(ev);
  }
  if (want_full) {
    Evaluation ev;
    ev.name = "full";
    ev.options.ks = {1, 5, 10};
    ev.overall_from_domains = true;
    x.evaluations.push_back(ev);
  }
  x.evaluations.erase(x.evaluations.begin());  // the default evaluation
  std::vector<std::string> line;
  for (uint32_t d = 0; d < ds.n_domains(); ++d) {
    if (want_sampled) line.push_back("sampled/" + ds.domains.name(d) + "/hr@10");
    if (want_full) line.push_back("full/" + ds.domains.name(d) + "/ndcg@10");
  }
  std::printf("\n%s (fixed split): %s\n", prefix.c_str(), ds.summary().c_str());
  const ExperimentResult r = run_experiment(
      env, ds, x, model_runs(env, configs, lo.cross_domain && !env.opt.no_single), prefix, line);
  for (const auto& [pname, ev] :
       {std::pair{p_sampled, std::string("sampled/")}, std::pair{p_full, std::string("full/")}}) {
    if (!protocol_selected(env.opt, pname)) continue;
    res[pname] = protocol_json(r, ev);
    std::vector<std::string> cols;
    for (uint32_t d = 0; d < ds.n_domains(); ++d)
      for (const char* m : {"hr@10", "ndcg@10"}) cols.push_back(ev + ds.domains.name(d) + "/" + m);
    cols.push_back(ev + "hr@10");
    cols.push_back(ev + "ndcg@10");
    cols.push_back(ev + "tied_share");
    print_table(pname, r, cols);
    info[pname] = {{"dataset", ds.name},
                   {"users", ds.n_users()},
                   {"items", ds.n_items()},
                   {"split", "fixed: the last item of each validation / test user is the target"},
                   {"ranking", pname == p_sampled
                                   ? "target vs 999 negatives drawn from its own domain; ties pessimistic"
                                   : "full ranking within the target domain; ties in seeded random order"},
                   {"evaluated_on", env.opt.validate ? "validation (fitted on train)"
                                                     : "test (fitted on train + validation)"},
                   {"seeds", x.seeds}};
  }
}

// Cold users: a fraction of the users active in the target domain and another one lose all their
// target-domain interactions; full ranking within the target domain for those users.
void run_cold_users(Env& env, Results& res, Infos& info, const Dataset& ds, const std::string& protocol,
                    const std::string& target, double cold) {
  if (!protocol_selected(env.opt, protocol)) return;
  ListOptions lo = list_options(ds);
  lo.cross_domain = true;
  lo.ease_default = cold < 0.5;
  const auto configs = model_list(env, lo, protocol);
  ExperimentOptions x;
  x.protocol = "cold-users";
  x.target_domain = target;
  x.split.cold_ratio = cold;
  x.split.val_ratio = env.opt.validate ? 0.5 : 0.0;
  x.seeds = seed_list(env.opt);
  x.evaluations[0].options.ks = {10};
  std::printf("\n%s: %s; target %s\n", protocol.c_str(), ds.summary().c_str(), target.c_str());
  const ExperimentResult r = run_experiment(env, ds, x, model_runs(env, configs, false), protocol,
                                            {"recall@10", "ndcg@10", "hr@10"});
  res[protocol] = protocol_json(r, "");
  print_table(protocol, r, {"recall@10", "ndcg@10", "hr@10", "tied_share"});
  info[protocol] = {
      {"dataset", ds.name},
      {"users", ds.n_users()},
      {"items", ds.n_items()},
      {"target_domain", target},
      {"split", r.protocol},
      {"ranking", "full ranking within the target domain, cold users only; ties in seeded random order"},
      {"evaluated_on", env.opt.validate ? "validation" : "test"},
      {"seeds", x.seeds}};
}

// Cold items: a fraction of the items are held out entirely. (a) ranking among the held-out items only, for
// the users who interacted with them; (b) full ranking over every item.
void run_cold_items(Env& env, Results& res, Infos& info, const Dataset& ds, const std::string& protocol,
                    double cold) {
  if (!protocol_selected(env.opt, protocol)) return;
  ListOptions lo = list_options(ds);
  const auto configs = model_list(env, lo, protocol);
  ExperimentOptions x;
  x.protocol = "cold-items";
  x.split.cold_ratio = cold;
  x.split.val_ratio = env.opt.validate ? 0.25 : 0.0;
  x.seeds = seed_list(env.opt);
  Evaluation ec, ea;
  ec.name = "cold";
  ec.options.ks = {10};
  ec.options.per_domain = false;
  ec.candidates = Evaluation::Candidates::kHeldOutItems;
  ea.name = "all";
  ea.options.ks = {10};
  ea.options.per_domain = false;
  x.evaluations = {ec, ea};
  std::printf("\n%s: %s\n", protocol.c_str(), ds.summary().c_str());
  const ExperimentResult r = run_experiment(env, ds, x, model_runs(env, configs, false), protocol,
                                            {"cold/ndcg@10", "cold/recall@10", "all/ndcg@10"});
  res[protocol] = protocol_json(r, "");
  print_table(protocol, r,
              {"cold/recall@10", "cold/ndcg@10", "cold/tied_share", "all/recall@10", "all/ndcg@10"});
  info[protocol] = {
      {"dataset", ds.name},
      {"users", ds.n_users()},
      {"items", ds.n_items()},
      {"split", r.protocol},
      {"ranking",
       "cold/*: among the held-out items only; all/*: full ranking over every item; ties in "
       "seeded random order"},
      {"text", "title, genres/categories and the tags of pairs not held out (item_text_with_tags)"},
      {"evaluated_on", env.opt.validate ? "validation" : "test"},
      {"seeds", x.seeds}};
}

// Leave-last-out by timestamp: each user's last interaction is the target (the one before it is validation
// with --validate), ranked against every item the user has not interacted with (full ranking, seeded random
// ties) and, as the sequential-recommendation papers do, against 99 sampled negatives.
void run_leave_last_out(Env& env, Results& res, Infos& info, const Dataset& ds, const std::string& protocol) {
  if (!protocol_selected(env.opt, protocol)) return;
  ListOptions lo = list_options(ds);
  const auto configs = model_list(env, lo, protocol);
  ExperimentOptions x;
  x.protocol = "leave-last-out";
  x.split.val_ratio = env.opt.validate ? 0.5 : 0.0;  // any fraction > 0: the item before the last
  x.seeds = seed_list(env.opt);
  Evaluation full, sampled;
  full.name = "full";
  full.options.ks = {10};
  sampled.name = "sampled";
  sampled.options.ks = {10};
  sampled.options.sampled_negatives = 99;
  x.evaluations = {full, sampled};
  std::printf("\n%s: %s\n", protocol.c_str(), ds.summary().c_str());
  const ExperimentResult r = run_experiment(env, ds, x, model_runs(env, configs, false), protocol,
                                            {"full/ndcg@10", "full/hr@10", "sampled/hr@10"});
  res[protocol] = protocol_json(r, "");
  print_table(protocol, r,
              {"full/hr@10", "full/ndcg@10", "full/tied_share", "sampled/hr@10", "sampled/ndcg@10"});
  info[protocol] = {{"dataset", ds.name},
                    {"users", ds.n_users()},
                    {"items", ds.n_items()},
                    {"split", r.protocol},
                    {"ranking",
                     "full/*: the user's last item (by timestamp) against every item not in their training "
                     "history, ties in "
                     "seeded random order; sampled/*: against 99 sampled negatives, ties pessimistic"},
                    {"evaluated_on", env.opt.validate ? "validation (the second-to-last item)" : "test"},
                    {"seeds", x.seeds}};
}

Dataset load(const std::string& path, const std::string& format = "auto") {
  Timer t;
  ReadReport rep;
  Dataset ds = read_dataset(path, format, ReadOptions{}, &rep);
  std::printf("read %s in %.1f s%s\n", path.c_str(), t.seconds(), rep.from_cache ? " (cache)" : "");
  return ds;
}

// "cold-users:target=X,cold=R" -> (X, R); "cold-items:cold=R" -> R.
std::map<std::string, std::string> protocol_args(const std::string& p) {
  std::map<std::string, std::string> out;
  const auto colon = p.find(':');
  if (colon == std::string::npos) return out;
  const std::string rest = p.substr(colon + 1);
  for (size_t b = 0; b <= rest.size();) {
    const size_t e = std::min(rest.find(',', b), rest.size());
    const std::string kv = rest.substr(b, e - b);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
    b = e + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> pos;
  for (int i = 0; i < argc; ++i) o.command_line += (i ? " " : "") + std::string(argv[i]);
  auto split_list = [](const std::string& s, std::vector<std::string>& out) {
    for (size_t b = 0; b <= s.size();) {
      const size_t e = std::min(s.find(',', b), s.size());
      if (e > b) out.push_back(s.substr(b, e - b));
      b = e + 1;
    }
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0]);
      return argv[++i];
    };
    if (a == "--seeds")
      o.seeds = std::atoi(next().c_str());
    else if (a == "--threads")
      o.threads = std::atoi(next().c_str());
    else if (a == "--quick")
      o.quick = true;
    else if (a == "--ablation")
      o.ablation = true;
    else if (a == "--validate")
      o.validate = true;
    else if (a == "--merge")
      o.merge = true;
    else if (a == "--no-fork")
      o.no_fork = true;
    else if (a == "--no-single-domain")
      o.no_single = true;
    else if (a == "--task-timeout")
      o.task_timeout = std::atoi(next().c_str());
    else if (a == "--only")
      split_list(next(), o.only);
    else if (a == "--filter")
      o.filters.push_back(next());
    else if (a == "--model")
      o.models.push_back(next());
    else if (a == "--encoders")
      split_list(next(), o.encoders);
    else if (a == "--bert")
      o.bert = next();
    else if (a == "--dataset")
      o.dataset = next();
    else if (a == "--protocol")
      o.dataset_protocols.push_back(next());
    else if (a == "-h" || a == "--help")
      usage(argv[0]);
    else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      usage(argv[0]);
    } else {
      pos.push_back(a);
    }
  }
  if (pos.empty() || pos.size() > 2 || o.seeds < 1) usage(argv[0]);
  if (!o.dataset.empty() && o.dataset_protocols.empty()) {
    std::fprintf(stderr, "--dataset needs at least one --protocol\n");
    return 2;
  }
  if (o.quick && o.seeds == 3) o.seeds = 1;
  o.out = pos[0];
  o.data_root = resolve_data_root(pos.size() > 1 ? pos[1] : "");

  Env env;
  env.opt = o;
  env.threads = resolve_threads(o.threads);
  // With workers, this process reads text vectors from the embedding cache on one thread (a worker encodes
  // them with every thread), so it never starts a thread pool that a later fork would break.
  TextOptions to;
  to.threads = o.no_fork ? env.threads : 1;
  env.text = std::make_unique<TextVectorSource>(to);
  Timer total;
  Results res;
  Infos info;
  nlohmann::json previous = nlohmann::json::object();
  if (o.merge && fs::exists(o.out)) {
    try {
      previous = nlohmann::json::parse(read_file(o.out));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "--merge: cannot read %s: %s\n", o.out.c_str(), e.what());
      return 1;
    }
  }
  auto write = [&] {
    nlohmann::json j = previous.is_object() ? previous : nlohmann::json::object();
    for (const auto& [name, pr] : res) j[name] = pr;
    nlohmann::json meta = j.contains("_meta") ? j["_meta"] : nlohmann::json::object();
    meta["command"] = o.command_line;
    meta["machine"] = machine_description();
    meta["threads"] = env.threads;
    meta["seeds"] = seed_list(o);
    meta["quick"] = o.quick;
    meta["data_root"] = o.data_root;
    meta["seconds"] = total.seconds();
    meta["notes"] = env.notes.list;
    meta["ties"] =
        "sampled protocol: the target ranks below every negative with an equal score (pessimistic); full "
        "ranking: equal scores in a seeded random order per (seed, user). tied_share: mean share of "
        "candidates "
        "scored exactly like a held-out item";
    meta["memory_note"] =
        "peak_rss_delta_mb: peak resident set during the fit (sampled every 5 ms) minus the resident set "
        "just before it; includes the fit's temporary buffers, not the data or text vectors held before";
    meta["model_keys"] =
        "the spec exactly as given to create_model, then ' [text=ENCODER]' for models given item text "
        "vectors (text=none: fitted without them) and ' [single-domain]' for fits on the target domain's "
        "interactions only";
    for (const auto& [name, pi] : info) meta["protocols"][name] = pi;
    j["_meta"] = meta;
    write_file_atomic(o.out, j.dump(1));
  };

  std::printf("bench/crossdomain: data %s, %d threads, %d seed(s)%s%s\n", o.data_root.c_str(), env.threads,
              o.seeds, o.quick ? ", quick" : "", o.validate ? ", evaluated on validation" : "");
  std::printf("machine: %s\n", machine_description().c_str());
  try {
    if (o.dataset.empty()) {
      const fs::path root(o.data_root);
      if (dataset_selected(o, "food-kitchen")) {
        Dataset fk = load((root / "amazon_food-kitchen_llmcdsr").string(), "food-kitchen");
        run_fixed(env, res, info, fk, "food-kitchen");
        write();
      }
      if (dataset_selected(o, "douban")) {
        Dataset db = load((root / "douban_book-music_gadtcdr").string(), "douban");
        check(db.domains.find("book") && db.domains.find("music"),
              "douban: expected the domains book and music");
        for (const char* pct : {"20", "50"}) {
          const double cold = std::atof(pct) / 100.0;
          run_cold_users(env, res, info, db, std::string("douban/book->music/cold") + pct, "music", cold);
          write();
          run_cold_users(env, res, info, db, std::string("douban/music->book/cold") + pct, "book", cold);
          write();
        }
      }
      if (dataset_selected(o, "ml-latest-small")) {
        Dataset ml = load((root / "movielens_ml-latest-small").string(), "ml-latest-small");
        run_cold_items(env, res, info, ml, "ml-latest-small/cold-items", 0.2);
        write();
      }
    } else {
      Dataset ds = load(o.dataset);
      const std::string dsname = ds.name.empty() ? fs::path(o.dataset).filename().string() : ds.name;
      env.opt.only.clear();
      for (const auto& p : o.dataset_protocols) {
        const auto args = protocol_args(p);
        const double cold = args.count("cold") ? std::atof(args.at("cold").c_str()) : 0.2;
        if (p == "fixed") {
          run_fixed(env, res, info, ds, dsname);
        } else if (p.rfind("cold-items", 0) == 0) {
          run_cold_items(env, res, info, ds, dsname + "/" + p, cold);
        } else if (p == "leave-last-out") {
          run_leave_last_out(env, res, info, ds, dsname + "/" + p);
        } else if (p.rfind("cold-users", 0) == 0) {
          check(args.count("target"), "--protocol cold-users needs target=DOMAIN");
          run_cold_users(env, res, info, ds, dsname + "/" + p, args.at("target"), cold);
        } else {
          throw Error(
              "--protocol must be fixed, leave-last-out, cold-items[:cold=R] or "
              "cold-users:target=X[,cold=R], got '" +
              p + "'");
        }
        write();
      }
    }
    write();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench/crossdomain: %s\n", e.what());
    write();
    return 1;
  }
  std::printf("\nnotes:\n");
  for (const auto& n : env.notes.list) std::printf("  - %s\n", n.c_str());
  std::printf("total %.1f s; wrote %s\n", total.seconds(), o.out.c_str());
  return 0;
}
