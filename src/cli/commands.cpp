#include "cli/commands.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "cli/progress.h"
#include "xdrec/anonymise.h"
#include "xdrec/augment.h"
#include "xdrec/dist.h"
#include "xdrec/encoder.h"
#include "xdrec/item_codes.h"
#include "xdrec/metrics.h"
#include "xdrec/params.h"
#include "xdrec/pipeline.h"
#include "xdrec/rank.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"
#include "xdrec/serve.h"
#include "xdrec/synthetic.h"

namespace fs = std::filesystem;

namespace xdrec::cli {

namespace {

SyntheticOptions synthetic_options(const std::string& spec_text, uint64_t seed) {
  Spec spec = Spec::parse(spec_text);
  SyntheticOptions o;
  o.seed = seed;
  int users = static_cast<int>(o.n_users), items = static_cast<int>(o.items_per_domain),
      topics = static_cast<int>(o.n_topics);
  double mean = o.mean_interactions, overlap = o.overlap, skew = o.popularity_skew;
  std::string domains = "books|films|kitchen";
  ParamSet p("synthetic");
  p.add("users", &users, users, 1, 100000000, "number of users")
      .add("items", &items, items, 1, 10000000, "items per domain")
      .add("topics", &topics, topics, 1, 1000, "latent topics")
      .add("mean", &mean, mean, 1, 100000, "mean interactions per user and active domain")
      .add("overlap", &overlap, overlap, 0, 1, "fraction of users active in several domains")
      .add("skew", &skew, skew, 0, 5, "popularity skew")
      .add("domains", &domains, domains, {}, "domain names separated by |");
  p.apply(spec.values);
  o.n_users = users;
  o.items_per_domain = items;
  o.n_topics = topics;
  o.mean_interactions = mean;
  o.overlap = overlap;
  o.popularity_skew = skew;
  o.domains.clear();
  std::stringstream ss(domains);
  for (std::string d; std::getline(ss, d, '|');)
    if (!d.empty()) o.domains.push_back(d);
  check(!o.domains.empty(), "synthetic: at least one domain is needed");
  return o;
}

std::string fmt(double v, int prec = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// Prints a left-aligned table; first row is the header.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return;
  std::vector<size_t> w(rows[0].size(), 0);
  for (auto& r : rows)
    for (size_t j = 0; j < r.size() && j < w.size(); ++j) w[j] = std::max(w[j], r[j].size());
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string line;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      std::string cell = rows[i][j];
      cell.resize(w[j], ' ');
      line += (j ? "  " : "") + cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
    if (i == 0) {
      size_t total = 0;
      for (auto x : w) total += x + 2;
      std::printf("%s\n", std::string(total - 2, '-').c_str());
    }
  }
}

Split split_from(const Dataset& ds, const std::string& protocol, SplitOptions opt, const std::string& target,
                 uint64_t seed) {
  opt.seed = seed;
  if (!target.empty()) opt.target_domain = domain_index(ds, target);
  return make_split(ds, protocol, opt);
}

std::vector<std::string> kMainMetrics(size_t k) {
  std::string s = "@" + std::to_string(k);
  return {"ndcg" + s, "precision" + s, "recall" + s, "f1" + s, "hr" + s, "map" + s, "coverage" + s};
}

void print_recommendations(const Dataset& ds, const Recommender& model, const Csr& seen, uint32_t user,
                           size_t k, int domain, int threads) {
  RecommendOptions ro;
  ro.k = k;
  ro.exclude = &seen;
  ro.item_domain = ds.item_domain;
  ro.domain = domain;
  ro.threads = threads;
  uint32_t users[1] = {user};
  auto lists = recommend(model, users, ro);
  for (size_t r = 0; r < lists[0].size(); ++r) {
    const auto& si = lists[0][r];
    std::printf("  %2zu. [%s] %s  (%.3f)\n", r + 1, ds.domains.name(ds.item_domain[si.item]).c_str(),
                ds.item_text[si.item].title.empty() ? ds.items.name(si.item).c_str()
                                                    : ds.item_text[si.item].title.c_str(),
                si.score);
  }
}

// Category names (the synthetic data's topics) that a text mentions as whole words.
std::set<std::string> categories_mentioned(const Dataset& ds, const std::string& text) {
  std::set<std::string> all, found;
  for (auto& t : ds.item_text) all.insert(t.categories.begin(), t.categories.end());
  auto is_word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) != 0; };
  for (auto& cat : all) {
    for (size_t p = text.find(cat); p != std::string::npos; p = text.find(cat, p + 1)) {
      const size_t e = p + cat.size();
      if ((p == 0 || !is_word(text[p - 1])) && (e == text.size() || !is_word(text[e]))) {
        found.insert(cat);
        break;
      }
    }
  }
  return found;
}

bool has_any_category(const ItemText& t, const std::set<std::string>& cats) {
  for (auto& c : t.categories)
    if (cats.count(c)) return true;
  return false;
}

// Quickstart's last step: a text model serves a new user known only by a profile text in a domain they have
// never used. The first registered of `candidates` is trained; nothing happens when none is registered.
void quickstart_cold_user(const Dataset& ds, const Split& split, const Csr& train, const Csr& test,
                          const EvalOptions& eopt, const QuickstartArgs& a, const Common& quiet,
                          const std::string& best_spec, double best_ndcg, nlohmann::json& out) {
  // Registered text models in order of preference, each with quick settings for this demo.
  const std::vector<std::pair<std::string, std::string>> candidates{
      {"hybrid", "hybrid:factors=32,epochs=5,max_sampled=10"}, {"textbridge", "textbridge"}};
  std::string name, spec;
  for (auto& [cand, quick] : candidates)
    for (auto& m : registered_models())
      if (name.empty() && m.name == cand) name = cand, spec = quick;
  if (name.empty()) {
    std::printf("\n(cold start with text skipped: no text model (hybrid, textbridge) in this build)\n");
    return;
  }
  Timer t;
  auto encoder = cli_encoder(a.encoder, quiet.quiet);
  EmbedOptions eo;
  eo.cache_dir = a.cache_dir;
  eo.threads = quiet.threads;
  const TextVectors text = embed_dataset(ds, *encoder, eo, &split);
  try {
    (void)create_model(spec);
  } catch (const Error&) {
    spec = name;  // the quick settings name a parameter this build's model does not declare
  }
  FitRequest req;
  req.spec = spec;
  req.seed = quiet.seed;
  req.threads = quiet.threads;
  req.text = &text;
  const Matrix categories = ds.category_vectors();
  req.item_categories = &categories;
  Fitted fitted = fit_model(ds, train, req);
  std::unique_ptr<Recommender> model = std::move(fitted.model);
  const EvalResult r = evaluate(*model, train, test, &ds, eopt);
  out[name] = r.to_json();
  out[name]["text_encoder"] = text.encoder_spec;
  const double nd = r.overall.count("ndcg@10") ? r.overall.at("ndcg@10") : 0.0;
  std::printf("\ncold start with text: %s fitted on item and profile texts from %s in %.1f s\n", spec.c_str(),
              encoder->name().c_str(), fitted.seconds);
  std::printf("  (warm users of the split above: ndcg@10 %s; %s %s)\n", fmt(nd).c_str(), best_spec.c_str(),
              fmt(best_ndcg).c_str());

  // A profile like the synthetic users' own, naming two topics; the user has no interactions at all.
  const uint32_t target = ds.n_domains() > 1 ? 1 : 0;
  std::string profile;
  std::set<std::string> topics;
  for (uint32_t u = 0; u < ds.n_users() && profile.empty(); ++u) {
    auto found = categories_mentioned(ds, ds.user_profile[u].text);
    if (found.size() == 2) profile = ds.user_profile[u].text, topics = std::move(found);
  }
  if (profile.empty()) return;
  const std::vector<float> v = encode_one(*encoder, profile, quiet.threads);
  const uint32_t nu = model->fold_in_profile(model->n_users(), v, {}, {});
  RecommendOptions ro;
  ro.k = 5;
  ro.item_domain = ds.item_domain;
  ro.domain = static_cast<int>(target);
  ro.threads = eopt.threads;
  const uint32_t who[1] = {nu};
  const auto lists = recommend(*model, who, ro);
  const std::string dname = ds.domains.name(target);
  std::printf("new user with only a profile, \"%s\"; top 5 in %s:\n", profile.c_str(), dname.c_str());
  size_t match = 0;
  for (size_t j = 0; j < lists[0].size(); ++j) {
    const ItemText& it = ds.item_text[lists[0][j].item];
    std::string cats;
    for (auto& c : it.categories) cats += (cats.empty() ? "" : ", ") + c;
    match += has_any_category(it, topics);
    std::printf("  %zu. %s  (%s)\n", j + 1, it.title.c_str(), cats.c_str());
  }
  size_t in_domain = 0, by_chance = 0;
  for (uint32_t i = 0; i < ds.n_items(); ++i)
    if (ds.item_domain[i] == target) ++in_domain, by_chance += has_any_category(ds.item_text[i], topics);
  std::string tl;
  for (auto& x : topics) tl += (tl.empty() ? "" : ", ") + x;
  std::printf("  %zu of %zu match the profile's topics (%s); %.0f%% of %s items do\n", match, lists[0].size(),
              tl.c_str(), in_domain ? 100.0 * double(by_chance) / double(in_domain) : 0.0, dname.c_str());
  out["cold_user"] = {{"model", name},
                      {"encoder", text.encoder_spec},
                      {"profile", profile},
                      {"domain", dname},
                      {"top5_matching", match},
                      {"domain_share_matching", in_domain ? double(by_chance) / double(in_domain) : 0.0},
                      {"seconds", t.seconds()}};
}

}  // namespace

Dataset load_data(const DataArg& d, bool quiet, int threads) {
  if (d.path.rfind("synthetic", 0) == 0) {
    std::string spec = d.path;
    uint64_t seed = 42;
    Spec s = Spec::parse(spec);
    if (s.values.count("seed")) {
      seed = std::stoull(s.values["seed"]);
      s.values.erase("seed");
    }
    SyntheticOptions so = synthetic_options(s.str(), seed);
    so.threads = resolve_threads(threads);
    return make_synthetic(so);
  }
  if (d.path.size() > 4 && d.path.substr(d.path.size() - 4) == ".xdb") return load_dataset_binary(d.path);
  ReadReport rep;
  Dataset ds = read_dataset(d.path, d.format, ReadOptions{}, &rep);
  if (!quiet)
    std::fprintf(stderr, "read %s: %s%s\n", d.path.c_str(), ds.summary().c_str(),
                 rep.from_cache ? " (cached)" : "");
  return ds;
}

void write_split(const Dataset& ds, const Split& s, const std::string& dir) {
  fs::create_directories(dir);
  auto write_part = [&](const std::string& name, const std::vector<Interaction>& part) {
    std::string out = "user\titem\tdomain\trating\ttimestamp\n";
    for (auto& it : part) {
      out += ds.users.name(it.user) + "\t" + ds.items.name(it.item) + "\t" +
             ds.domains.name(ds.item_domain[it.item]) + "\t" + (it.has_rating() ? fmt(it.rating, 6) : "") +
             "\t" + (it.has_timestamp() ? std::to_string(it.timestamp) : "") + "\n";
    }
    write_file_atomic((fs::path(dir) / name).string(), out);
  };
  write_part("train.tsv", s.train);
  write_part("validation.tsv", s.validation);
  write_part("test.tsv", s.test);
  nlohmann::json meta = {{"protocol", s.protocol},
                         {"dataset_fingerprint", hex64(ds.fingerprint())},
                         {"train", s.train.size()},
                         {"validation", s.validation.size()},
                         {"test", s.test.size()}};
  std::vector<std::string> cold_users, cold_items;
  for (uint32_t u = 0; u < s.cold_user.size(); ++u)
    if (s.cold_user[u]) cold_users.push_back(ds.users.name(u));
  for (uint32_t i = 0; i < s.cold_item.size(); ++i)
    if (s.cold_item[i]) cold_items.push_back(ds.items.name(i));
  meta["cold_users"] = cold_users;
  meta["cold_items"] = cold_items;
  meta["target_domain"] = s.target_domain >= 0 ? ds.domains.name(s.target_domain) : "";
  write_file_atomic((fs::path(dir) / "split.json").string(), meta.dump(2) + "\n");
}

Split read_split(const Dataset& ds, const std::string& dir) {
  const std::string meta_path = (fs::path(dir) / "split.json").string();
  check(fs::exists(meta_path),
        "'" + dir + "' is not a split directory (no split.json; make one with `xdrec split`)");
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(meta_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(meta_path + ": malformed JSON: " + e.what());
  }
  check(meta.value("dataset_fingerprint", "") == hex64(ds.fingerprint()),
        "split '" + dir + "' was made from a different dataset (fingerprint mismatch)");
  Split s;
  s.protocol = meta.value("protocol", "");
  auto read_part = [&](const std::string& name, std::vector<Interaction>& part) {
    const std::string path = (fs::path(dir) / name).string();
    std::ifstream f(path);
    check(bool(f), "cannot open '" + path + "'");
    std::string line;
    size_t lineno = 0;
    while (std::getline(f, line)) {
      ++lineno;
      if (lineno == 1 || line.empty()) continue;
      std::vector<std::string> col;
      std::stringstream ss(line);
      for (std::string x; std::getline(ss, x, '\t');) col.push_back(x);
      while (col.size() < 5) col.emplace_back();
      auto u = ds.users.find(col[0]);
      auto i = ds.items.find(col[1]);
      if (!u) throw ParseError(path, lineno, 1, "unknown user '" + col[0] + "'");
      if (!i) throw ParseError(path, lineno, col[0].size() + 2, "unknown item '" + col[1] + "'");
      Interaction it;
      it.user = *u;
      it.item = *i;
      if (!col[3].empty()) it.rating = std::stof(col[3]);
      if (!col[4].empty()) it.timestamp = std::stoll(col[4]);
      part.push_back(it);
    }
  };
  read_part("train.tsv", s.train);
  read_part("validation.tsv", s.validation);
  read_part("test.tsv", s.test);
  s.cold_user.assign(ds.n_users(), 0);
  s.cold_item.assign(ds.n_items(), 0);
  for (auto& id : meta.value("cold_users", std::vector<std::string>{}))
    if (auto u = ds.users.find(id)) s.cold_user[*u] = 1;
  for (auto& id : meta.value("cold_items", std::vector<std::string>{}))
    if (auto i = ds.items.find(id)) s.cold_item[*i] = 1;
  std::string target = meta.value("target_domain", "");
  s.target_domain = target.empty() ? -1 : domain_index(ds, target);
  check_no_leakage(ds, s);
  return s;
}

int cmd_import(const ImportArgs& a, const Common& c) {
  const bool anonymise_ids = !a.anonymise_key.empty();
  std::string key;
  if (anonymise_ids) {
    key = read_key_file(a.anonymise_key);  // a bad key fails before any reading
    if (key.size() < 16)
      std::fprintf(
          stderr,
          "note: the key has %zu bytes; a short key can be guessed (e.g. head -c 32 /dev/urandom > KEY)\n",
          key.size());
  }
  ReadOptions ro;
  ro.skip_errors = a.on_error == "skip";
  ro.use_cache = false;
  ReadReport rep;
  Dataset ds = read_dataset(a.input, a.format, ro, &rep);
  ds.validate();
  std::printf("%s\n", ds.summary().c_str());
  std::printf("parsed %zu records (%.1f MB) in %.3f s: %.0f lines/s\n", rep.records, rep.bytes / 1e6,
              rep.seconds, rep.lines_per_second());
  if (rep.skipped) {
    if (anonymise_ids) {
      std::printf("skipped %zu malformed records (not shown: they may quote raw records)\n", rep.skipped);
    } else {
      std::printf("skipped %zu malformed records; first ones:\n", rep.skipped);
      for (auto& e : rep.examples) std::printf("  %s\n", e.c_str());
    }
  }
  if (anonymise_ids) {
    AnonymiseOptions ao;
    ao.key = key;
    ao.coarsen_time = parse_time_coarsening(a.coarsen_time);
    Anonymised anon = anonymise(ds, ao);
    const ScrubCounts& n = anon.scrubbed;
    std::printf(
        "pseudonymised %u users and %u items (%zu hex digits); scrubbed %zu URLs, %zu e-mail addresses, %zu "
        "phone "
        "numbers, %zu raw ids from the text%s\n",
        anon.data.n_users(), anon.data.n_items(), ao.hex_chars, n.urls, n.emails, n.phones, n.ids,
        a.coarsen_time == "none" ? "" : ("; timestamps floored to the " + a.coarsen_time).c_str());
    if (!a.id_map.empty()) {
      write_id_map(anon, a.id_map);
      std::printf("wrote the id map %s (keep it as secret as the key)\n", a.id_map.c_str());
    }
    ds = std::move(anon.data);
  }
  if (!a.output.empty()) {
    if (a.output.size() > 4 && a.output.substr(a.output.size() - 4) == ".xdb") {
      save_dataset_binary(ds, a.output);
    } else {
      write_canonical(ds, a.output);
    }
    std::printf("wrote %s\n", a.output.c_str());
  }
  (void)c;
  return 0;
}

int cmd_split(const SplitArgs& a, const Common& c) {
  Dataset ds = load_data(a.data, c.quiet, c.threads);
  Split s = split_from(ds, a.protocol, a.opt, a.target_domain, c.seed);
  write_split(ds, s, a.output);
  std::printf("%s: train %zu, validation %zu, test %zu interactions (leakage check passed) -> %s\n",
              s.protocol.c_str(), s.train.size(), s.validation.size(), s.test.size(), a.output.c_str());
  return 0;
}

// Flattened metrics (Experiment::flatten) nested as EvalResult::to_json lays them out: "overall",
// "by_domain", "by_cohort" (the run's own seconds and memory are left out). Prints a fit's estimated cost
// when the job is long or large (stderr; not with --quiet).
void print_cost(const std::string& spec, const ModelCost& c, bool quiet) {
  if (quiet || (c.seconds < 10 && c.bytes < (size_t{1} << 30))) return;
  std::fprintf(
      stderr, "%s: estimated %s%s%s\n", spec.c_str(), format_bytes(double(c.bytes)).c_str(),
      c.seconds > 0 ? (", ~" + std::to_string(int(c.seconds + 0.5)) + " s on one thread").c_str() : "",
      c.note.empty() ? "" : (" (" + c.note + ")").c_str());
}

nlohmann::json nest_metrics(const Dataset& ds, const std::map<std::string, double>& flat) {
  const std::vector<std::string> domains = ds.domains.names();
  nlohmann::json overall = nlohmann::json::object(), by_domain = nlohmann::json::object(),
                 by_cohort = nlohmann::json::object();
  for (const auto& [name, v] : flat) {
    const auto slash = name.find('/');
    if (slash == std::string::npos) {
      if (name != "fit_seconds" && name != "eval_seconds" && name != "peak_rss_delta_mb" && name != "n_users")
        overall[name] = v;
      continue;
    }
    const std::string group = name.substr(0, slash), metric = name.substr(slash + 1);
    // A group is a domain, else a cohort (Experiment::flatten writes no other groups for one evaluation).
    if (std::find(domains.begin(), domains.end(), group) != domains.end())
      by_domain[group][metric] = v;
    else
      by_cohort[group][metric] = v;
  }
  return {{"overall", overall}, {"by_domain", by_domain}, {"by_cohort", by_cohort}};
}

std::unique_ptr<TextEncoder> cli_encoder(const std::string& spec, bool quiet) {
  std::string note;
  auto enc = make_text_encoder(spec, &note);
  if (!note.empty() && !quiet) std::fprintf(stderr, "%s\n", note.c_str());
  return enc;
}

namespace {

// The spec with --dp-delta / --dp-epsilon applied: dp=true and the given keys (over the spec's own). Error
// naming the models that have DP-SGD when this one has none.
std::string with_dp(const std::string& spec, const DpArgs& dp) {
  if (dp.delta <= 0 && dp.epsilon <= 0) return spec;
  Spec s = Spec::parse(spec);
  auto has_dp = [](const ModelInfo& m) { return m.param_help().find("  dp_epsilon (") != std::string::npos; };
  if (!has_dp(model_info(s.name))) {
    std::string names;
    for (const ModelInfo& m : registered_models())
      if (has_dp(m)) names += (names.empty() ? "" : ", ") + m.name;
    throw Error("--dp-delta / --dp-epsilon: model '" + s.name +
                "' has no DP-SGD training (models with it: " + names + ")");
  }
  auto num = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.12g", v);
    return std::string(b);
  };
  s.values["dp"] = "true";
  if (dp.delta > 0) s.values["dp_delta"] = num(dp.delta);
  if (dp.epsilon > 0) s.values["dp_epsilon"] = num(dp.epsilon);
  return s.str();
}

// One line: the (epsilon, delta) guarantee a DP-SGD model reached (its manifest's "privacy").
void print_privacy(const nlohmann::json& pj, const std::string& who) {
  auto str = [&](const char* key) {
    const nlohmann::json v = pj.value(key, nlohmann::json());
    return v.is_string() ? v.get<std::string>() : v.dump();
  };
  const bool fed = pj.value("mechanism", "") == "federated";
  std::printf("privacy%s: epsilon %s at delta %s (%s-level %s: noise %s, clip %s, q %s, %s %s)\n",
              who.empty() ? "" : (" (" + who + ")").c_str(), str("epsilon").c_str(), str("delta").c_str(),
              str("unit").c_str(), fed ? "DP on the federated aggregate" : "DP-SGD", str("noise").c_str(),
              str("clip").c_str(), str("q").c_str(), str("steps").c_str(), fed ? "rounds" : "steps");
}

// `xdrec train` in one process (comm null) or as one rank of a distributed fit: every rank reads the data and
// fits its part; rank 0 alone reports and writes the model.
int train_model(const TrainArgs& a, Common c, Communicator* comm) {
  const bool lead = !comm || comm->rank() == 0;
  if (!lead) c.quiet = true;
  Dataset ds = load_data(a.data, c.quiet, c.threads);
  if (!a.events.empty()) {
    check(a.split_dir.empty(),
          "--events and --split do not go together (the split's ids would not cover the events)");
    const size_t n = serve::fold_events(ds, a.events);
    if (!c.quiet)
      std::fprintf(stderr, "folded %zu events of %s into the data: %s\n", n, a.events.c_str(),
                   ds.summary().c_str());
  }
  std::optional<Split> split;
  if (!a.split_dir.empty()) split = read_split(ds, a.split_dir);
  std::unique_ptr<Recommender> resumed;
  if (!a.resume.empty()) {
    check(a.model.empty(), "--resume continues the saved model's spec: leave out -m");
    resumed = load_model(a.resume);
  } else {
    check(!a.model.empty(), "give a model (-m SPEC), or --resume MODEL_DIR");
  }
  check(!resumed || (a.dp.delta <= 0 && a.dp.epsilon <= 0),
        "--dp-delta / --dp-epsilon do not go with --resume (an incremental update is not DP-SGD training)");
  const std::string model_spec = resumed ? resumed->spec() : with_dp(a.model, a.dp);
  // Rating models (svd, svdpp, bpmf) fit on the ratings; the others on the interactions.
  const bool ratings = model_info(Spec::parse(model_spec).name).traits.rating;
  Csr train = split ? ds.user_item_matrix(split->train, ratings) : ds.user_item_matrix(ratings);
  const Sequences sequences = user_sequences(ds.n_users(), split ? split->train : ds.interactions);
  // Text vectors go to every model; those that do not use text ignore them (uses_text() is known for sure
  // only after the fit).
  std::optional<TextVectors> text;
  // A resumed text model reads its new items through the encoder it was trained with (unless --encoder
  // names one), with the item template recorded beside it.
  TextArgs text_args = a.text;
  std::optional<TextConfig> resumed_text;
  if (resumed && resumed->uses_text() && !resumed->text_encoder().empty()) {
    resumed_text = read_text_config(a.resume);
    if (text_args.encoder.empty()) {
      text_args.encoder = resumed->text_encoder();
      if (resumed_text) text_args.item_template = resumed_text->item_template;
    }
  }
  if (!text_args.encoder.empty()) {
    auto enc = cli_encoder(text_args.encoder, c.quiet);
    EmbedOptions eo;
    eo.item_template = text_args.item_template;
    eo.cache_dir = text_args.cache_dir;
    eo.threads = c.threads;
    eo.batch = 1024;
    eo.progress = progress_bar(!c.quiet);
    text = embed_dataset(ds, *enc, eo, split ? &*split : nullptr);
    // A corpus encoder (tfidf) refitted on data with new texts is another vector space than the model's.
    check(
        !resumed_text || resumed_text->fingerprint.empty() || resumed_text->fingerprint == text->fingerprint,
        "--resume: the text vectors of " + text->encoder_spec +
            " on this data are not those the model was trained with (a corpus encoder such as tfidf, "
            "refitted on new texts, gives another vector space): resume a model of a fixed encoder "
            "(use-lite, bert) or train again with -m");
  }
  const Matrix categories = ds.category_vectors();
  FitRequest req;
  req.spec = model_spec;
  req.seed = c.seed;
  req.threads = c.threads;
  req.text = text ? &*text : nullptr;
  req.item_categories = &categories;
  req.sequences = &sequences;
  req.progress = progress_bar(!c.quiet);
  req.on_cost = [&](const ModelCost& cost) { print_cost(model_spec, cost, c.quiet); };
  if (!a.augment.empty()) {
    AugmentReport ar;
    train = augment_interactions(train, ds.item_domain, parse_augment(a.augment, ds), c.seed, c.threads, &ar);
    if (!c.quiet)
      std::fprintf(stderr, "augmented %u users with %llu generated interactions in %.1f s%s\n", ar.users,
                   (unsigned long long)ar.added, ar.seconds,
                   ar.generator.empty() ? "" : (" (generator " + ar.generator + ")").c_str());
  }
  Fitted f;
  if (resumed) {
    // Touched users: those with interactions after --since (every user without it).
    std::vector<uint32_t> touched;
    const auto& inter = split ? split->train : ds.interactions;
    if (a.since != INT64_MIN) {
      std::vector<uint8_t> t(ds.n_users(), 0);
      for (const auto& e : inter)
        if (e.has_timestamp() && e.timestamp > a.since) t[e.user] = 1;
      for (uint32_t u = 0; u < ds.n_users(); ++u)
        if (t[u]) touched.push_back(u);
    } else {
      for (uint32_t u = 0; u < ds.n_users(); ++u) touched.push_back(u);
    }
    const FitContext ctx = fit_context(ds, req);
    Timer t;
    check(resumed->resume(train, touched, ctx, a.sweeps),
          "model '" + resumed->name() + "' has no incremental update; train it again with -m");
    f.seconds = t.seconds();
    f.model = std::move(resumed);
    if (!c.quiet)
      std::fprintf(stderr, "resumed from %s: %zu touched users, %d sweeps\n", a.resume.c_str(),
                   touched.size(), a.sweeps);
  } else {
    req.comm = comm;
    req.verbose = a.verbose;
    f = fit_model(ds, train, req);
  }
  if (!lead) return 0;
  const Recommender& model = *f.model;
  save_model(model, a.output, ds.fingerprint(), parse_store(a.store), a.prune);
  if (text && !(model.uses_text() && model.text_encoder() == text->encoder_spec)) {
    if (!c.quiet)
      std::fprintf(stderr, "note: --encoder: model '%s' did not use the text vectors\n",
                   model.name().c_str());
    text.reset();
  }
  if (text)
    write_text_config(a.output, *text, text_args.item_template, split.has_value() && !ds.tags.empty(),
                      a.split_dir);
  else
    remove_text_config(a.output);  // a text config left by an earlier model in this directory
  std::printf("trained %s on %zu interactions%s%s in %.2f s (peak memory %.0f MB) -> %s%s\n",
              model.spec().c_str(), train.nnz(),
              text ? (" with text vectors from " + text->encoder_spec + " (dim " +
                      std::to_string(text->items.cols) + ")")
                         .c_str()
                   : "",
              comm ? (" over " + std::to_string(comm->size()) + " processes").c_str() : "", f.seconds,
              peak_rss_mb(), a.output.c_str(), a.store == "fp32" ? "" : (" (" + a.store + ")").c_str());
  if (a.prune > 0) std::printf("pruned %.0f%% of each weight matrix by magnitude\n", 100 * a.prune);
  // A model trained with differential privacy records its guarantee in the manifest: print it.
  const nlohmann::json manifest =
      nlohmann::json::parse(read_file((std::filesystem::path(a.output) / "manifest.json").string()));
  if (manifest.contains("extra") && manifest["extra"].contains("privacy"))
    print_privacy(manifest["extra"]["privacy"], "");
  // A federated model records its rounds and traffic.
  if (manifest.contains("extra") && manifest["extra"].contains("federated")) {
    const nlohmann::json& fj = manifest["extra"]["federated"];
    std::printf(
        "federated: %lld rounds, %.1f clients per round, %.3g MB down and %.3g MB up per round "
        "(%s; unmasked sparse updates would be %.3g MB)\n",
        (long long)fj.value("rounds_aggregated", 0), fj.value("clients_per_round", 0.0),
        fj.value("bytes_down_per_round", 0.0) / 1e6, fj.value("bytes_up_per_round", 0.0) / 1e6,
        fj.value("secure_agg", false) ? "masked" : "not masked",
        fj.value("bytes_up_sparse_unmasked_per_round", 0.0) / 1e6);
  }
  return 0;
}

// Runs `work` in one process (comm null), or with `distributed` as one rank of the MPI job.
int maybe_distributed(bool distributed, const std::function<int(Communicator*)>& work) {
  if (!distributed) return work(nullptr);
  MpiSession mpi;
  try {
    return work(&mpi.world());
  } catch (const std::exception& e) {
    // The other ranks may be waiting in a collective: end the whole job, not just this process.
    std::fprintf(stderr, "xdrec: error (rank %d of %d): %s\n", mpi.world().rank(), mpi.world().size(),
                 e.what());
    mpi.abort(1);
  }
  return 1;
}

// `xdrec eval` in one process (comm null) or as one rank of a distributed runner: every rank loads the data
// and runs its share of the (model, seed) runs; rank 0 alone reports and writes the results.
int eval_models(const EvalArgs& a, Common c, Communicator* comm) {
  const bool lead = !comm || comm->rank() == 0;
  if (!lead) c.quiet = true;
  Dataset ds = load_data(a.data, c.quiet, c.threads);
  ExperimentOptions x;
  x.protocol = a.protocol;
  x.split = a.split_opt;
  x.target_domain = a.target_domain;
  if (!a.split_dir.empty()) x.given_split = read_split(ds, a.split_dir);
  const int n_seeds = a.split_dir.empty() ? std::max(1, a.n_seeds) : 1;
  x.seeds.clear();
  for (int si = 0; si < n_seeds; ++si) x.seeds.push_back(c.seed + uint64_t(si));
  x.threads = c.threads;
  check(a.task == "ranking" || a.task == "rating", "--task must be ranking or rating, got '" + a.task + "'");
  if (a.task == "rating") {
    check(std::any_of(ds.interactions.begin(), ds.interactions.end(),
                      [](const Interaction& it) { return it.has_rating(); }),
          "--task rating: dataset '" + ds.name + "' has no ratings");
    x.rating_task = true;
  }
  // Validation is for tuning: the test score comes from a model fitted on training + validation.
  x.fit_on_validation = !a.on_validation;
  x.evaluate_on_validation = a.on_validation;
  x.progress = progress_bar(!c.quiet);
  x.on_cost = [&](const std::string& key, const ModelCost& cost) { print_cost(key, cost, c.quiet); };
  x.comm = comm;
  Evaluation ev;
  if (!a.ks.empty()) ev.options.ks = a.ks;
  ev.options.sampled_negatives = a.sampled;
  check(a.candidates == "all" || a.candidates == "cold-items",
        "--candidates must be all or cold-items, got '" + a.candidates + "'");
  if (a.candidates == "cold-items") ev.candidates = Evaluation::Candidates::kHeldOutItems;
  x.evaluations = {ev};
  auto lambda_name = [](double l) { return "diversity=" + fmt(l, 3); };
  for (double l : a.diversity) {
    check(l > 0 && l <= 1, "--diversity: each trade-off must be in (0, 1], got " + fmt(l, 3));
    check(a.sampled == 0, "--diversity re-ranks full lists: it does not go with --sampled");
    Evaluation d = ev;
    d.name = lambda_name(l);
    d.options.diversity = l;
    x.evaluations.push_back(d);
  }
  Matrix item_vectors;
  if (!a.item_vectors.empty()) {
    TensorMap t = load_safetensors(a.item_vectors);
    item_vectors = get_tensor(t, "items").to_matrix(a.item_vectors + ": items");
    check(item_vectors.rows == ds.n_items(), a.item_vectors + ": has " + std::to_string(item_vectors.rows) +
                                                 " item vectors but the dataset has " +
                                                 std::to_string(ds.n_items()) + " items");
    x.item_vectors = &item_vectors;
  }
  // Text vectors for the text models among --model (the others ignore them), built per split from its fair
  // item texts.
  std::optional<TextVectorSource> text;
  std::string encoder_spec;
  if (!a.text.encoder.empty()) {
    TextOptions to;
    to.item_template = a.text.item_template;
    to.cache_dir = a.text.cache_dir;
    to.threads = c.threads;
    to.progress = progress_bar(!c.quiet);
    text.emplace(to);
    encoder_spec = a.text.encoder;
    if (encoder_spec == "auto") encoder_spec = cli_encoder("auto", c.quiet)->spec();
    x.text = &*text;
  }
  for (const auto& given : a.models) {
    const std::string spec = with_dp(given, a.dp);
    ModelRun m;
    m.spec = spec;
    m.augment = a.augment;
    m.key = spec + (a.augment.empty() ? "" : " +" + a.augment);
    m.encoder = encoder_spec;
    m.text_optional = true;
    x.models.push_back(m);
  }
  Experiment exp(ds, x);
  const size_t k = ev.options.ks.front();
  exp.on_run = [&](const RunRecord& r) {
    if (!r.error.empty()) throw Error("model '" + r.key + "': " + r.error);
  };
  const ExperimentResult res = exp.run();
  if (!lead) return 0;

  nlohmann::json out = {
      {"dataset", ds.name},
      {"protocol", res.protocol},
      {"ks", ev.options.ks},
      {"seeds", n_seeds},
      {"sampled_negatives", a.sampled},
      {"candidates", a.candidates},
      {"fit_on", a.on_validation ? "train" : "train+validation"},
      {"scored_on", a.on_validation ? "validation" : "test"},
      {"tie_rule", a.sampled ? "pessimistic (sampled)" : "seeded random order (full ranking)"},
      {"task", a.task}};
  if (!a.target_domain.empty()) out["target_domain"] = a.target_domain;
  if (!encoder_spec.empty()) out["text_encoder"] = encoder_spec;
  const std::vector<std::string> domains = ds.domains.names();
  for (const auto& key : res.keys) {
    const auto summary = res.summary(key);
    const RunRecord& first = res.runs.at(key).front();
    std::map<std::string, double> means, cis;
    for (const auto& [name, m] : summary)
      if (name.rfind("diversity=", 0) != 0) means[name] = m.mean, cis[name] = m.ci95;
    nlohmann::json jm = nest_metrics(ds, means);
    if (!a.diversity.empty()) {
      // The accuracy-diversity curve: overall metrics of the plain lists (lambda 0) and of each re-ranking.
      nlohmann::json grid = nlohmann::json::array();
      grid.push_back({{"lambda", 0.0}, {"metrics", jm["overall"]}});
      for (double l : a.diversity) {
        const std::string pre = lambda_name(l) + "/";
        nlohmann::json m = nlohmann::json::object(), ci = nlohmann::json::object();
        for (const auto& [name, v] : summary)
          if (name.rfind(pre, 0) == 0 && name.find('/', pre.size()) == std::string::npos &&
              name != pre + "n_users") {
            m[name.substr(pre.size())] = v.mean;
            if (n_seeds > 1) ci[name.substr(pre.size())] = v.ci95;
          }
        nlohmann::json row{{"lambda", l}, {"metrics", m}};
        if (n_seeds > 1) row["ci95"] = ci;
        grid.push_back(row);
      }
      jm["diversity_grid"] = grid;
    }
    jm["spec"] = first.spec;
    if (!first.text_encoder.empty()) jm["text_encoder"] = first.text_encoder;
    if (n_seeds > 1) {
      const nlohmann::json nested = nest_metrics(ds, cis);
      jm["ci95"] = nested["overall"];
      if (!nested["by_domain"].empty()) jm["ci95_by_domain"] = nested["by_domain"];
    }
    if (!first.rating_pairs.empty())
      jm["rating_pairs"] = first.rating_pairs;  // [predicted, true], first seed
    for (const char* x : {"training_curves", "long_tail", "augment", "privacy"})  // first seed
      if (first.extras.contains(x)) jm[x] = first.extras[x];
    jm["n_users"] = summary.count("n_users") ? summary.at("n_users").mean : 0.0;
    jm["fit_seconds"] = summary.count("fit_seconds") ? summary.at("fit_seconds").mean : 0.0;
    jm["eval_seconds"] = summary.count("eval_seconds") ? summary.at("eval_seconds").mean : 0.0;
    jm["peak_rss_mb"] = peak_rss_mb();
    out["models"][key] = jm;
  }
  std::vector<std::string> cols = kMainMetrics(k);
  cols.push_back("tied_share");
  if (a.task == "rating") cols.insert(cols.begin(), {"rmse", "mae"});
  std::printf("%s, %s, %s ranking%s%s, %d seed%s\n", ds.name.c_str(), res.protocol.c_str(),
              a.sampled ? ("sampled (" + std::to_string(a.sampled) + " negatives)").c_str() : "full",
              a.candidates == "cold-items" ? " among the held-out items" : "",
              a.target_domain.empty() ? "" : (" within " + a.target_domain).c_str(), n_seeds,
              n_seeds > 1 ? "s" : "");
  if (!encoder_spec.empty()) {
    const bool profiles = std::any_of(ds.user_profile.begin(), ds.user_profile.end(),
                                      [](const UserProfile& p) { return !p.text.empty(); });
    std::printf("text models use item%s text vectors from %s\n", profiles ? " and profile" : "",
                encoder_spec.c_str());
  }
  std::printf("%s", res.table(cols).c_str());
  for (const auto& key : res.keys)  // the guarantee of each DP-SGD model (the first seed's run)
    if (const RunRecord& first = res.runs.at(key).front(); first.extras.contains("privacy"))
      print_privacy(first.extras["privacy"], key);
  if (ds.n_domains() > 1 && a.target_domain.empty()) {
    std::printf("\nper domain (ndcg@%zu):\n", k);
    std::vector<std::string> dcols;
    for (auto& d : domains) dcols.push_back(d + "/ndcg@" + std::to_string(k));
    std::printf("%s", res.table(dcols).c_str());
  }
  if (!a.diversity.empty()) {
    std::printf("\ndiversity re-ranking (MMR over %s, pool of 50):\n",
                a.item_vectors.empty() ? "category vectors" : a.item_vectors.c_str());
    std::vector<std::string> gcols;
    for (const std::string m : {"ndcg@", "diversity@", "coverage@", "novelty@"}) {
      gcols.push_back(m + std::to_string(k));
      for (double l : a.diversity) gcols.push_back(lambda_name(l) + "/" + m + std::to_string(k));
    }
    std::printf("%s", res.table(gcols).c_str());
  }
  if (!a.output.empty()) {
    write_file_atomic(a.output, out.dump(2) + "\n");
    std::printf("wrote %s\n", a.output.c_str());
  }
  return 0;
}

}  // namespace

int cmd_train(const TrainArgs& a, const Common& c) {
  return maybe_distributed(a.distributed, [&](Communicator* comm) { return train_model(a, c, comm); });
}

int cmd_eval(const EvalArgs& a, const Common& c) {
  return maybe_distributed(a.distributed, [&](Communicator* comm) { return eval_models(a, c, comm); });
}

int cmd_recommend(const RecommendArgs& a, const Common& c) {
  check(!a.profile_given || a.profile.find_first_not_of(" \t\r\n") != std::string::npos,
        "--profile: the profile text is empty");
  check(a.new_item_text.empty() == a.new_item_domain.empty(),
        "--new-item-text and --new-item-domain go together (an item needs its text and its domain)");
  Dataset ds = load_data(a.data, c.quiet, c.threads);
  uint64_t fp = 0;
  auto model = load_model(a.model_dir, &fp);
  check(fp == 0 || fp == ds.fingerprint(), "model '" + a.model_dir + "' was trained on a different dataset");
  check(model->n_items() == ds.n_items(), "model '" + a.model_dir + "' has " +
                                              std::to_string(model->n_items()) +
                                              " items but the dataset has " + std::to_string(ds.n_items()));
  Csr seen =
      a.split_dir.empty() ? ds.user_item_matrix() : ds.user_item_matrix(read_split(ds, a.split_dir).train);
  const int domain = domain_index(ds, a.domain);
  const int new_item_domain = domain_index(ds, a.new_item_domain);
  std::vector<uint32_t> users;
  for (auto& id : a.users) {
    auto u = ds.users.find(id);
    check(u.has_value(), "unknown user '" + id + "'");
    check(*u < model->n_users(), "user '" + id + "' is not in the model");
    users.push_back(*u);
  }
  // Profile texts and new items' texts go through the encoder the model was fitted with.
  std::unique_ptr<TextEncoder> encoder;
  if (a.profile_given || !a.new_item_text.empty()) {
    const std::optional<TextConfig> cfg = read_text_config(a.model_dir);
    std::optional<Split> text_split;
    const std::string sdir = !a.split_dir.empty() ? a.split_dir : (cfg ? cfg->split_dir : "");
    if (cfg && cfg->split_tags && !ds.tags.empty() && !sdir.empty()) text_split = read_split(ds, sdir);
    encoder = encoder_for_model(*model, a.model_dir, ds, text_split ? &*text_split : nullptr, c.threads);
  }

  // An item known only by its text, appended without retraining.
  std::vector<uint16_t> item_domain = ds.item_domain;
  int64_t new_item = -1;
  if (!a.new_item_text.empty()) {
    const std::vector<float> v = encode_one(*encoder, a.new_item_text, c.threads);
    new_item = model->add_item(v, static_cast<uint16_t>(new_item_domain));
    check(new_item == int64_t(item_domain.size()) && model->n_items() == item_domain.size() + 1,
          "model '" + model->name() + "': add_item did not append one item");
    item_domain.push_back(static_cast<uint16_t>(new_item_domain));
  }
  auto item_id = [&](uint32_t i) { return i < ds.n_items() ? ds.items.name(i) : std::string("(new item)"); };
  auto item_title = [&](uint32_t i) { return i < ds.n_items() ? ds.item_text[i].title : a.new_item_text; };

  if (!a.history.empty() || a.profile_given) {
    // A new user: fold in their history and/or profile text without retraining. The history may lie in
    // other domains than --domain (cross-domain cold start).
    std::vector<uint32_t> items;
    if (!a.history.empty()) {
      std::stringstream ss(a.history);
      for (std::string id; std::getline(ss, id, ',');) {
        if (id.empty()) continue;
        auto i = ds.items.find(id);
        check(i.has_value(), "--history: unknown item '" + id + "'");
        items.push_back(*i);
      }
      check(!items.empty(), "--history: no item ids in '" + a.history + "'");
    }
    // In the order given (sequence models read it); an item given twice counts once, at its last place.
    items = keep_last_occurrence(items);
    std::vector<float> w(items.size(), 1.0f);
    std::vector<float> profile;
    if (a.profile_given) profile = encode_one(*encoder, a.profile, c.threads);
    uint32_t nu = model->fold_in_profile(model->n_users(), profile, items, w);
    // Extend the seen matrix with the new user's row.
    seen.n_rows = nu + 1;
    seen.indptr.resize(nu + 1, seen.indptr.back());
    std::vector<uint32_t> sorted = items;
    std::sort(sorted.begin(), sorted.end());
    for (uint32_t i : sorted) {
      seen.indices.push_back(i);
      seen.values.push_back(1.0f);
    }
    seen.indptr.push_back(seen.indices.size());
    users.push_back(nu);
  }
  check(!users.empty(), "give --user ID, --history ITEM,ITEM,... and/or --profile TEXT");
  RecommendOptions ro;
  ro.k = a.k;
  ro.exclude = &seen;
  ro.item_domain = item_domain;
  ro.domain = domain;
  ro.threads = resolve_threads(c.threads);
  check(a.index == "exact" || is_codes_spec(a.index),
        "--index: exact, sq8 or pq[:m=..], not '" + a.index + "'");
  std::vector<std::vector<ScoredItem>> lists;
  if (a.index == "exact") {
    lists = recommend(*model, users, ro);
  } else {
    Matrix items;
    std::vector<float> bias;
    check(model->item_vectors(items, bias), "--index " + a.index + ": model '" + model->name() +
                                                "' is not a dot-product model (ials, bpr, hybrid are)");
    const ItemCodes codes = ItemCodes::build(items, bias, CodesSpec::parse(a.index), ro.threads);
    lists = recommend_codes(*model, codes, users, ro);
  }
  // The new item's score and its rank among the user's candidates in its domain (the items of that domain the
  // user has not seen, as in the lists; pessimistic: every candidate with an equal score ranks above it).
  struct NewItemRank {
    float score;
    uint32_t rank, candidates;
  };
  std::vector<NewItemRank> new_item_rank;
  if (new_item >= 0) {
    Matrix scores;
    model->score(users, scores, ro.threads);
    std::vector<uint8_t> seen_item(ds.n_items());
    for (size_t r = 0; r < users.size(); ++r) {
      std::fill(seen_item.begin(), seen_item.end(), 0);
      if (users[r] < seen.n_rows)
        for (uint32_t i : seen.row_indices(users[r])) seen_item[i] = 1;
      NewItemRank nr{scores(r, size_t(new_item)), 1, 1};
      for (size_t i = 0; i < ds.n_items(); ++i) {
        if (item_domain[i] != new_item_domain || seen_item[i]) continue;
        ++nr.candidates;
        nr.rank += scores(r, i) >= nr.score;
      }
      new_item_rank.push_back(nr);
    }
  }
  nlohmann::json out = nlohmann::json::array();
  for (size_t r = 0; r < users.size(); ++r) {
    const std::string uid = r < a.users.size() ? a.users[r] : "(new user)";
    nlohmann::json items = nlohmann::json::array();
    if (!a.json) std::printf("%s:\n", uid.c_str());
    for (size_t j = 0; j < lists[r].size(); ++j) {
      auto& si = lists[r][j];
      const std::string title = item_title(si.item);
      items.push_back({{"item", item_id(si.item)},
                       {"domain", ds.domains.name(item_domain[si.item])},
                       {"title", title},
                       {"score", si.score}});
      if (!a.json)
        std::printf("  %2zu. %s [%s] %s (%.4f)\n", j + 1, item_id(si.item).c_str(),
                    ds.domains.name(item_domain[si.item]).c_str(), title.c_str(), si.score);
    }
    nlohmann::json entry = {{"user", uid}, {"items", items}};
    if (new_item >= 0) {
      const NewItemRank& nr = new_item_rank[r];
      entry["new_item"] = {
          {"score", nr.score}, {"rank_in_domain", nr.rank}, {"candidates_in_domain", nr.candidates}};
      if (!a.json)
        std::printf("  new item \"%s\" [%s]: score %.4f, rank %u of %u unseen %s items\n",
                    a.new_item_text.c_str(), a.new_item_domain.c_str(), nr.score, nr.rank, nr.candidates,
                    a.new_item_domain.c_str());
    }
    out.push_back(entry);
  }
  if (a.json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

int cmd_quickstart(const QuickstartArgs& a, const Common& c) {
  SyntheticOptions so;
  so.n_users = a.users;
  so.items_per_domain = a.items_per_domain;
  so.seed = c.seed;
  so.threads = resolve_threads(c.threads);
  Timer total;
  Dataset ds = make_synthetic(so);
  std::printf("synthetic data: %s\n", ds.summary().c_str());
  SplitOptions sopt;
  sopt.test_ratio = 0.2;
  sopt.seed = c.seed;
  Split split = make_split(ds, "random", sopt);
  std::printf("split %s: train %zu, test %zu (leakage check passed)\n\n", split.protocol.c_str(),
              split.train.size(), split.test.size());
  EvalOptions eopt;
  eopt.threads = resolve_threads(c.threads);
  eopt.seed = c.seed;
  const Matrix categories = ds.category_vectors();
  if (categories.rows) eopt.item_vectors = &categories;
  const std::vector<std::string> specs{"popular", "itemknn", "ease", "ials", "bpr"};
  ExperimentOptions x;
  x.given_split = split;
  x.seeds = {c.seed};
  x.threads = c.threads;
  x.keep_models = true;
  for (auto& spec : specs) x.models.push_back(ModelRun::of(spec));
  Experiment exp(ds, x);
  ExperimentResult res = exp.run();
  std::vector<std::vector<std::string>> table;
  std::vector<std::string> header{"model"};
  for (auto& m : kMainMetrics(10)) header.push_back(m);
  header.push_back("fit s");
  table.push_back(header);
  nlohmann::json out;
  std::string best_spec;
  double best = -1;
  Common quiet = c;
  quiet.quiet = true;
  const Csr train = ds.user_item_matrix(split.train), test = ds.user_item_matrix(split.test);
  for (auto& spec : specs) {
    const RunRecord& r = res.runs.at(spec).front();
    check(r.error.empty(), "quickstart: " + spec + ": " + r.error);
    std::vector<std::string> row{spec};
    for (auto& m : kMainMetrics(10)) row.push_back(r.metrics.count(m) ? fmt(r.metrics.at(m)) : "-");
    row.push_back(fmt(r.metrics.at("fit_seconds"), 2));
    table.push_back(row);
    out[spec] = nest_metrics(ds, r.metrics);
    const double nd = r.metrics.count("ndcg@10") ? r.metrics.at("ndcg@10") : 0.0;
    if (nd > best) {
      best = nd;
      best_spec = spec;
    }
  }
  std::unique_ptr<Recommender> model = std::move(res.models.at(best_spec));  // the best model
  print_table(table);

  // Recommendations from the best model for a user active in several domains.
  uint32_t user = 0;
  for (uint32_t u = 0; u < train.n_rows; ++u) {
    std::vector<int> seen_domains(ds.n_domains(), 0);
    for (uint32_t i : train.row_indices(u)) seen_domains[ds.item_domain[i]] = 1;
    if (std::count(seen_domains.begin(), seen_domains.end(), 1) >= 2 && train.row_size(u) >= 8) {
      user = u;
      break;
    }
  }
  std::printf("\nuser %s (%s) has interacted with:\n", ds.users.name(user).c_str(),
              ds.user_profile[user].text.c_str());
  auto hist = train.row_indices(user);
  for (size_t j = 0; j < std::min<size_t>(hist.size(), 6); ++j)
    std::printf("  - [%s] %s\n", ds.domains.name(ds.item_domain[hist[j]]).c_str(),
                ds.item_text[hist[j]].title.c_str());
  for (uint32_t d = 0; d < ds.n_domains(); ++d) {
    std::printf("top 3 in %s from %s:\n", ds.domains.name(d).c_str(), best_spec.c_str());
    print_recommendations(ds, *model, train, user, 3, static_cast<int>(d), eopt.threads);
  }
  quickstart_cold_user(ds, split, train, test, eopt, a, quiet, best_spec, best, out);
  std::printf("\nquickstart finished in %.1f s\n", total.seconds());
  if (!a.output.empty()) write_file_atomic(a.output, out.dump(2) + "\n");
  return 0;
}

int cmd_models() {
  std::printf("models (--model NAME:key=value,...):\n");
  for (auto& m : registered_models()) {
    std::printf("%s: %s\n%s", m.name.c_str(), m.summary.c_str(), m.param_help().c_str());
  }
  std::printf("\ntext encoders (--encoder NAME[:ARG][,key=value,...]):\n");
  for (auto& e : registered_encoders()) std::printf("%s: %s\n", e.name.c_str(), e.summary.c_str());
  return 0;
}

}  // namespace xdrec::cli
