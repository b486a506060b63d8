// Cross-domain and cold-start benchmark: Amazon Food-Kitchen (fixed split, sampled and full ranking, cross-
// vs single-domain training), Douban Book<->Music cold users (20% / 50%, both directions) and MovieLens
// latest-small cold items (20% of the movies held out, reachable only through their text), with the text
// encoder, autoencoder and transfer ablations. Results: mean and 95% CI (Student t) over seeds.
//
// Usage: bench_crossdomain OUT.json [DATA_ROOT] [options]   (bench/build.sh bench_crossdomain builds it)
//   DATA_ROOT      default: $XDREC_SHARED_DATA, else <repository>/../shared/data
//   --seeds N      seeds per protocol (default 3)
//   --threads N    threads for fitting and evaluation (default: all cores)
//   --quick        smoke run (about a minute): one seed, tiny epochs, one encoder
//   --ablation     adds the full text ablation (tfidf, glove, use-lite and bert:DIR, each with and without
//   the
//                  autoencoder), EASE on the 50% protocols and the slow text models on Food-Kitchen
//   --only P[,P]   protocols whose name starts with one of these (e.g. douban, food-kitchen/sampled)
//   --filter S     only the model keys containing S (repeatable)
//   --model SPEC[@TEXT]  replaces the default model list (repeatable); TEXT is none, tfidf, glove, use-lite
//   or
//                  bert:DIR (default: none)
//   --bert DIR     adds the encoder bert:DIR to the text ablation
//   --encoders E[,E]  replaces the encoders of the text ablation (default: tfidf, glove, use-lite on the
//                  cold-item protocol, use-lite on Food-Kitchen; an encoder not installed is skipped)
//   --task-timeout S  gives up a (model, seed) fit after S seconds (default 3600)
//   --no-fork      fits in this process (by default each (model, seed) runs in a forked worker, so that a
//                  crashing model costs only its own result)
//   --validate     fit on the training part and evaluate on the validation part (for tuning); the default is
//                  the test part, fitted on training + validation
//   --merge        keep the protocols of an existing OUT.json that this run does not produce
//   --dataset DIR --protocol cold-items|cold-users:target=X|fixed   an extra canonical dataset (may repeat
//                  --protocol); protocols named "<dataset name>/<protocol>"
//
// JSON: {"<protocol>": {"<model key>": {"<metric>": {"mean": m, "ci95": c}}}, "_meta": {...}}. A model key is
// the spec exactly as given to create_model, followed by " [text=ENCODER]" for the models given text vectors
// (text=none: the same model fitted without them) and " [single-domain]" for the single-domain ablation.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/metrics.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"
#include "xdrec/split.h"

using namespace xdrec;
namespace fs = std::filesystem;

namespace {

// ---- Options ----

struct Options {
  std::string out, data_root;
  int seeds = 3;
  int threads = 0;
  bool quick = false, validate = false, merge = false, no_fork = false, ablation = false;
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
      "          [--merge] [--task-timeout S] [--no-fork]\n"
      "          [--dataset DIR --protocol cold-items|cold-users:target=X|fixed]\n",
      argv0);
  std::exit(2);
}

// The shared data directory: the argument, else $XDREC_SHARED_DATA, else <repository>/../shared/data (the
// repository found from this source file's path, then from the executable's), else ../shared/data.
std::string resolve_data_root(const std::string& given, const char* argv0) {
  if (!given.empty()) return given;
  if (const char* e = std::getenv("XDREC_SHARED_DATA"); e && *e) return e;
  std::vector<fs::path> tries;
  const fs::path src = fs::path(__FILE__);
  if (src.is_absolute()) tries.push_back(src.parent_path().parent_path().parent_path() / "shared" / "data");
  std::error_code ec;
  const fs::path exe = fs::canonical("/proc/self/exe", ec);
  if (!ec) {
    // <repo>/build-bench/bench_crossdomain -> <repo>/../shared/data
    tries.push_back(exe.parent_path().parent_path().parent_path() / "shared" / "data");
  }
  (void)argv0;
  tries.push_back(fs::path("..") / "shared" / "data");
  for (const auto& p : tries)
    if (fs::is_directory(p, ec)) return fs::weakly_canonical(p, ec).string();
  return tries.empty() ? "../shared/data" : tries.front().string();
}

// ---- Memory ----

double current_rss_mb() {
  std::ifstream f("/proc/self/statm");
  size_t pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / double(1 << 20);
}

// Samples the resident set every 5 ms on a thread of its own while a fit runs: peak minus the RSS at start.
// (The kernel's high-water mark cannot be reset here, so it would report the largest fit so far.)
class RssSampler {
 public:
  RssSampler() : base_(current_rss_mb()), peak_(base_) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        const double r = current_rss_mb();
        double p = peak_.load();
        while (r > p && !peak_.compare_exchange_weak(p, r)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  ~RssSampler() { stop(); }
  double stop() {
    if (thread_.joinable()) {
      stop_.store(true);
      thread_.join();
      const double r = current_rss_mb();
      if (r > peak_.load()) peak_.store(r);
    }
    return std::max(0.0, peak_.load() - base_);
  }

 private:
  double base_;
  std::atomic<double> peak_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// ---- Model configurations ----

struct Config {
  std::string spec;
  std::string text;   // "" for models that never take text (no suffix); "none" or an encoder label otherwise
  int max_seeds = 0;  // run only the first max_seeds seeds (0: all)
  bool single_domain = true;  // also run the single-domain ablation (fixed-split protocols)
  std::string key(bool single_domain = false) const {
    std::string k = spec;
    if (!text.empty()) k += " [text=" + text + "]";
    if (single_domain) k += " [single-domain]";
    return k;
  }
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

// ---- Text vectors ----

constexpr const char* kItemTemplate = "{title}. {categories}. {description}";

// Encoders by label ("tfidf", "glove", "use-lite", "bert:DIR"); pretrained ones are loaded once.
class TextVectorStore {
 public:
  TextVectorStore(int threads, Notes& notes) : threads_(threads), notes_(notes) {}

  // Whether the encoder can be used here (creates it and encodes one text); prints a note when not.
  bool available(const std::string& label) {
    if (label == "none") return true;
    if (auto it = available_.find(label); it != available_.end()) return it->second;
    bool ok = true;
    try {
      auto enc = create_encoder(label);
      if (enc->needs_fit()) {
        const std::vector<std::string> corpus{"a small test corpus", "of two texts"};
        enc->fit(corpus, 1);
      }
      const std::vector<std::string> one{"a test sentence"};
      (void)enc->encode(one, 1);
      if (!enc->needs_fit()) pretrained_[label] = std::move(enc);
    } catch (const std::exception& e) {
      ok = false;
      std::string hint;
      if (label == "glove") hint = " (scripts/fetch-glove installs it)";
      if (label == "use-lite") hint = " (scripts/setup installs it)";
      notes_.add("encoder " + label + " unavailable, its variants are skipped" + hint + ": " + e.what());
    }
    available_[label] = ok;
    return ok;
  }

  struct Vectors {
    Matrix items;      // n_items x d, rows of zeros for items without text
    Matrix users;      // n_users x d profile vectors; 0 x 0 when the dataset has no profile text
    std::string spec;  // the encoder's canonical spec
  };

  // Item vectors of `texts` (and profile vectors of the dataset's users, by the same encoder). Cached in
  // memory by the rendered texts, and on disk through the embedding cache.
  const Vectors* vectors(const Dataset& ds, const std::vector<ItemText>& texts, const std::string& label) {
    if (label.empty() || label == "none") return nullptr;
    std::vector<std::string> rendered(ds.n_items());
    std::vector<uint8_t> has(ds.n_items(), 0);
    uint64_t h = fnv1a64(label.data(), label.size());
    for (uint32_t i = 0; i < ds.n_items(); ++i) {
      rendered[i] = render_item_text(kItemTemplate, texts[i]);
      has[i] = !rendered[i].empty();
      h = fnv1a64(rendered[i].data(), rendered[i].size(), h ^ (uint64_t(i) * 0x9E3779B97F4A7C15ULL));
    }
    const std::string key = label + "|" + hex64(h);
    if (auto it = cache_.find(key); it != cache_.end()) return &it->second;
    // Encoding runs first in a child process with every thread (it fills the on-disk cache); this process
    // then reads the vectors from the cache on one thread, so it never starts an OpenMP thread pool of its
    // own and can fork the fitting processes safely.
    if (warm_) warm_(ds, texts, label);
    Timer t;
    std::unique_ptr<TextEncoder> fitted;
    const TextEncoder* enc = nullptr;
    if (auto it = pretrained_.find(label); it != pretrained_.end()) {
      enc = it->second.get();
    } else {
      fitted = create_encoder(label);
      if (fitted->needs_fit()) {
        std::vector<std::string> corpus;
        for (uint32_t i = 0; i < ds.n_items(); ++i)
          if (has[i]) corpus.push_back(rendered[i]);
        fitted->fit(corpus, threads_);
      }
      enc = fitted.get();
    }
    EmbedOptions eo;
    eo.threads = threads_;
    eo.batch = 256;
    EmbedStats st;
    Vectors v;
    v.spec = enc->spec();
    v.items = encode_with_cache(*enc, rendered, eo, &st);
    for (uint32_t i = 0; i < ds.n_items(); ++i)
      if (!has[i]) std::fill(v.items.row(i), v.items.row(i) + v.items.cols, 0.0f);
    std::printf("  text %-10s %zu items, dim %zu: %zu distinct, %zu cached, %zu encoded in %.1f s\n",
                label.c_str(), rendered.size(), v.items.cols, st.unique, st.cached, st.encoded, t.seconds());
    const std::vector<std::string> profiles = dataset_user_texts(ds);
    if (std::any_of(profiles.begin(), profiles.end(), [](const std::string& p) { return !p.empty(); })) {
      v.users = encode_with_cache(*enc, profiles, eo, &st);
      for (uint32_t u = 0; u < ds.n_users(); ++u)
        if (profiles[u].empty()) std::fill(v.users.row(u), v.users.row(u) + v.users.cols, 0.0f);
      std::printf("  text %-10s %zu user profiles encoded\n", label.c_str(), profiles.size());
    }
    std::fflush(stdout);
    return &cache_.emplace(key, std::move(v)).first->second;
  }

  // Called before encoding with (dataset, texts, label): computes the same vectors elsewhere to fill the
  // cache.
  std::function<void(const Dataset&, const std::vector<ItemText>&, const std::string&)> warm_;

 private:
  int threads_;
  Notes& notes_;
  std::map<std::string, bool> available_;
  std::map<std::string, std::unique_ptr<TextEncoder>> pretrained_;
  std::map<std::string, Vectors> cache_;
};

bool has_item_text(const Dataset& ds) {
  for (const auto& t : ds.item_text)
    if (!t.title.empty() || !t.description.empty() || !t.categories.empty()) return true;
  return !ds.tags.empty();
}

// ---- Results ----

struct ProtocolResults {
  std::vector<std::string> keys;  // insertion order
  std::map<std::string, std::map<std::string, std::vector<double>>> values;
  std::vector<std::string> table_metrics;
  nlohmann::json info = nlohmann::json::object();
  void add(const std::string& key, const std::map<std::string, double>& m) {
    if (!values.count(key)) keys.push_back(key);
    for (const auto& [k, v] : m) values[key][k].push_back(v);
  }
};

nlohmann::json to_json(const ProtocolResults& r) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& key : r.keys) {
    nlohmann::json mj = nlohmann::json::object();
    for (const auto& [metric, vals] : r.values.at(key)) {
      const MeanCI ci = mean_ci95(vals);
      mj[metric] = {{"mean", ci.mean}, {"ci95", ci.ci95}};
    }
    j[key] = mj;
  }
  return j;
}

void print_table(const std::string& name, const ProtocolResults& r) {
  std::printf("\n== %s ==\n", name.c_str());
  size_t w = 10;
  for (const auto& k : r.keys) w = std::max(w, k.size());
  std::printf("%-*s", int(w), "model");
  for (const auto& m : r.table_metrics) std::printf("  %17s", m.c_str());
  std::printf("  %9s  %8s\n", "train s", "fit MB");
  for (const auto& key : r.keys) {
    const auto& vals = r.values.at(key);
    std::printf("%-*s", int(w), key.c_str());
    for (const auto& m : r.table_metrics) {
      auto it = vals.find(m);
      if (it == vals.end()) {
        std::printf("  %17s", "-");
        continue;
      }
      const MeanCI ci = mean_ci95(it->second);
      std::printf("  %8.4f ± %6.4f", ci.mean, ci.ci95);
    }
    auto mean_of = [&](const char* m) {
      auto it = vals.find(m);
      return it == vals.end() ? 0.0 : mean_ci95(it->second).mean;
    };
    std::printf("  %9.1f  %8.0f\n", mean_of("train_seconds"), mean_of("peak_rss_delta_mb"));
  }
  std::fflush(stdout);
}

// ---- Fitting ----

struct Env {
  Options opt;
  int threads = 1;
  Notes notes;
  std::unique_ptr<TextVectorStore> text;
  std::set<std::string> failed;  // "protocol|key": skip the remaining seeds
};

struct Fitted {
  std::unique_ptr<Recommender> model;
  double seconds = 0, rss_mb = 0;
};

// Creates and fits one configuration (in the worker process); Error when the model refuses or fails.
Fitted fit_config(const Env& env, const Config& c, const Csr& train, const Dataset& ds,
                  const TextVectorStore::Vectors* text, uint64_t seed) {
  Fitted f;
  f.model = create_model(c.spec);
  FitContext ctx;
  ctx.threads = env.threads;
  ctx.seed = seed;
  ctx.item_categories = nullptr;  // set by the caller where categories are wanted
  ctx.item_domain = ds.item_domain;
  if (text) {
    ctx.item_text = &text->items;
    if (text->users.rows == ds.n_users()) ctx.user_text = &text->users;
    ctx.text_encoder = text->spec;
  }
  RssSampler rss;
  Timer t;
  f.model->fit(train, ctx);
  f.seconds = t.seconds();
  f.rss_mb = rss.stop();
  if (text && !f.model->uses_text())
    throw Error("the model did not use the text vectors it was given (uses_text() is false after the fit)");
  return f;
}

// Whether a configuration can run at all (checked here, before any worker starts): the model is registered
// and accepts the parameters. Adds a note when not.
bool config_usable(Env& env, const Config& c) {
  try {
    (void)create_model(c.spec);
  } catch (const std::exception& e) {
    env.notes.add("model '" + c.spec + "' skipped: " + e.what());
    return false;
  }
  return true;
}

using MetricValues = std::map<std::string, double>;

// Runs `work` in a forked worker process (unless --no-fork), so that a model that crashes or hangs costs its
// own result only. The worker sends back its metrics as JSON through a pipe. Returns the metrics, or
// nullopt with `error` set.
std::optional<MetricValues> run_isolated(const Env& env, const std::function<MetricValues()>& work,
                                         std::string& error) {
  if (env.opt.no_fork) {
    try {
      return work();
    } catch (const std::exception& e) {
      error = e.what();
      return std::nullopt;
    }
  }
  int fd[2];
  if (pipe(fd) != 0) throw Error(std::string("pipe: ") + std::strerror(errno));
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    close(fd[0]);
    nlohmann::json j;
    try {
      j["metrics"] = work();
    } catch (const std::exception& e) {
      j["error"] = e.what();
    }
    const std::string msg = j.dump();
    size_t off = 0;
    while (off < msg.size()) {
      const ssize_t w = write(fd[1], msg.data() + off, msg.size() - off);
      if (w <= 0) break;
      off += size_t(w);
    }
    close(fd[1]);
    std::fflush(stdout);
    _exit(0);
  }
  close(fd[1]);
  std::string msg;
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(env.opt.task_timeout);
  bool timed_out = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{fd[0], POLLIN, 0};
    const int r = poll(&pfd, 1, int(std::min<int64_t>(left.count(), 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = read(fd[0], buf, sizeof buf);
    if (n <= 0) break;
    msg.append(buf, size_t(n));
  }
  close(fd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    error = "timed out after " + std::to_string(env.opt.task_timeout) + " s (--task-timeout)";
    return std::nullopt;
  }
  if (WIFSIGNALED(status)) {
    error = std::string("crashed (signal ") + std::to_string(WTERMSIG(status)) + ": " +
            strsignal(WTERMSIG(status)) + ")";
    return std::nullopt;
  }
  try {
    const nlohmann::json j = nlohmann::json::parse(msg);
    if (j.contains("error")) {
      error = j["error"].get<std::string>();
      return std::nullopt;
    }
    return j["metrics"].get<MetricValues>();
  } catch (const std::exception& e) {
    error = "the worker sent no result (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    return std::nullopt;
  }
}

Csr binary_matrix(const Dataset& ds, const std::vector<Interaction>& part) {
  Csr m = ds.user_item_matrix(part);
  for (auto& v : m.values) v = 1.0f;
  return m;
}

// Keeps the entries whose item is in domain d.
Csr restrict_to_domain(const Csr& m, const Dataset& ds, uint16_t d) {
  std::vector<uint32_t> r, c;
  std::vector<float> v;
  for (uint32_t u = 0; u < m.n_rows; ++u) {
    const auto idx = m.row_indices(u);
    const auto val = m.row_values(u);
    for (size_t j = 0; j < idx.size(); ++j)
      if (ds.item_domain[idx[j]] == d) {
        r.push_back(u);
        c.push_back(idx[j]);
        v.push_back(val[j]);
      }
  }
  return Csr::from_triplets(m.n_rows, m.n_cols, r, c, v);
}

std::vector<Interaction> concat(const std::vector<Interaction>& a, const std::vector<Interaction>& b) {
  std::vector<Interaction> out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
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
  for (const auto& e : wanted)
    if (env.text->available(e)) l.push_back(e);
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
      out.push_back({"twotower:epochs=1,merge=dot", e, 0, false});
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
    out.push_back({tt + "merge=dot", "none", slow});
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
      out.push_back({tt + "merge=dot", e, slow});
      if (main) out.push_back({tt + "merge=mlp", e, slow});
      if (main && ablation) out.push_back({tt + "merge=dot,ae=64", e, slow});
      // Text bridge (fast).
      out.push_back({"textbridge", e});
      if (main && ablation) out.push_back({"textbridge:ae_dim=64", e});
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

using Results = std::map<std::string, ProtocolResults>;

void progress_line(const std::string& protocol, const std::string& key, uint64_t seed, const MetricValues& m,
                   const std::string& what) {
  auto get = [&](const char* k) { return m.count(k) ? m.at(k) : 0.0; };
  std::printf("  [%s] seed %llu %-48s fit %6.1f s  eval %5.1f s  %s\n", protocol.c_str(),
              (unsigned long long)seed, key.c_str(), get("train_seconds"), get("eval_seconds"), what.c_str());
  std::fflush(stdout);
}

void put(MetricValues& out, const std::string& prefix, const MetricMap& m,
         const std::vector<std::pair<std::string, std::string>>& names) {
  for (const auto& [src, dst] : names)
    if (auto it = m.find(src); it != m.end() && std::isfinite(it->second)) out[prefix + dst] = it->second;
}

// Runs one (configuration, seed) task; false (with a note, and the configuration's remaining seeds
// skipped) when it fails.
bool run_task(Env& env, const std::string& protocol, const std::string& key,
              const std::function<MetricValues()>& work, MetricValues& out) {
  if (env.failed.count(protocol + "|" + key)) return false;
  std::string error;
  auto m = run_isolated(env, work, error);
  if (!m) {
    env.notes.add(protocol + ": '" + key + "' failed: " + error);
    env.failed.insert(protocol + "|" + key);
    return false;
  }
  out = std::move(*m);
  return true;
}

// Fixed split (Food-Kitchen): the last item of each validation / test user is the target. Sampled (999
// negatives of the target's domain) and full ranking within the target domain, per domain; cross-domain
// training (all interactions) and single-domain training (only the target domain's) for every model.
void run_fixed(Env& env, Results& res, const Dataset& ds, const std::string& prefix) {
  const std::string p_sampled = prefix + "/sampled", p_full = prefix + "/full";
  const bool want_sampled = protocol_selected(env.opt, p_sampled),
             want_full = protocol_selected(env.opt, p_full);
  if (!want_sampled && !want_full) return;
  const Split sp = split_fixed(ds);
  const Csr train = binary_matrix(ds, env.opt.validate ? sp.train : concat(sp.train, sp.validation));
  const Csr test = binary_matrix(ds, env.opt.validate ? sp.validation : sp.test);
  const std::vector<ItemText> texts = item_text_with_tags(ds, sp);
  ListOptions lo;
  lo.text = has_item_text(ds);
  lo.cross_domain = ds.n_domains() > 1;
  lo.ease_fits = ds.n_items() <= kEaseMaxItems;
  lo.encoder_ablation = false;  // use-lite only here: the encoder ablation runs on the cold-item protocol
  lo.text_dim_cheap = false;
  lo.fewer_epochs = ds.n_items() > 20000;
  const auto configs = model_list(env, lo, prefix);
  const std::vector<std::pair<std::string, std::string>> sampled_names = {
      {"hr@1", "hr@1"},     {"hr@5", "hr@5"},       {"hr@10", "hr@10"},
      {"ndcg@5", "ndcg@5"}, {"ndcg@10", "ndcg@10"}, {"mrr@1000", "mrr"}};
  const std::vector<std::pair<std::string, std::string>> full_names = {
      {"hr@1", "hr@1"},     {"hr@5", "hr@5"},       {"hr@10", "hr@10"},  {"recall@10", "recall@10"},
      {"ndcg@5", "ndcg@5"}, {"ndcg@10", "ndcg@10"}, {"mrr@10", "mrr@10"}};
  std::vector<std::string> dnames;
  for (uint32_t d = 0; d < ds.n_domains(); ++d) dnames.push_back(ds.domains.name(d));
  size_t n_test = 0;
  for (uint32_t u = 0; u < test.n_rows; ++u) n_test += test.row_size(u) > 0;
  for (const std::string& pname : {p_sampled, p_full}) {
    if (!protocol_selected(env.opt, pname)) continue;
    ProtocolResults& pr = res[pname];
    pr.info = {{"dataset", ds.name},
               {"users", ds.n_users()},
               {"items", ds.n_items()},
               {"train_interactions", train.nnz()},
               {"test_users", n_test},
               {"split", "fixed: the last item of each validation / test user is the target"},
               {"ranking", pname == p_sampled ? "target vs 999 negatives drawn from its own domain"
                                              : "full ranking within the target domain"},
               {"evaluated_on",
                env.opt.validate ? "validation (fitted on train)" : "test (fitted on train + validation)"},
               {"seeds", seed_list(env.opt)}};
    pr.table_metrics.clear();
    for (const auto& d : dnames)
      for (const char* m : {"hr@10", "ndcg@10"}) pr.table_metrics.push_back(d + "/" + m);
    pr.table_metrics.push_back(pname == p_sampled ? "mrr" : "recall@10");
  }

  std::vector<Csr> train_d, test_d;
  for (uint16_t d = 0; d < ds.n_domains(); ++d) {
    train_d.push_back(restrict_to_domain(train, ds, d));
    test_d.push_back(restrict_to_domain(test, ds, d));
  }
  // Metrics of one fitted model on (tr, te) per target domain: "sampled:<domain>/<metric>" and
  // "full:<domain>/<metric>"; n_users: test users per target domain.
  auto evaluate_both = [&](const Recommender& m, const Csr& tr, const Csr& te, uint64_t seed,
                           MetricValues& out, std::map<std::string, size_t>& n_users) {
    EvalOptions eo;
    eo.threads = env.threads;
    eo.per_domain = true;
    eo.seed = seed;
    for (int sampled = 1; sampled >= 0; --sampled) {
      if (sampled ? !want_sampled : !want_full) continue;
      eo.ks = sampled ? std::vector<size_t>{1, 5, 10, 1000} : std::vector<size_t>{1, 5, 10};
      eo.sampled_negatives = sampled ? 999 : 0;
      const EvalResult r = evaluate(m, tr, te, &ds, eo);
      const std::string p = sampled ? "sampled:" : "full:";
      const auto& names = sampled ? sampled_names : full_names;
      for (const auto& [d, dm] : r.by_domain) {
        put(out, p + d + "/", dm, names);
        n_users[d] = size_t(dm.at("n_users"));
      }
    }
  };
  // Overall = the user-weighted mean over the target domains: every test user has exactly one target, so
  // this is the mean over test users of the ranking within their target's domain.
  auto add_overall = [](MetricValues& out, const std::map<std::string, size_t>& n_users) {
    for (const std::string p : {"sampled:", "full:"}) {
      MetricValues sum;
      double total = 0;
      for (const auto& [d, nu] : n_users) {
        const std::string dp = p + d + "/";
        bool any = false;
        for (const auto& [k, v] : out)
          if (k.rfind(dp, 0) == 0) {
            sum[p + k.substr(dp.size())] += double(nu) * v;
            any = true;
          }
        if (any) total += double(nu);
      }
      if (total > 0)
        for (const auto& [k, v] : sum) out[k] = v / total;
    }
  };
  std::printf("\n%s (fixed split): %s; %zu test users, %zu training interactions\n", prefix.c_str(),
              ds.summary().c_str(), n_test, train.nnz());
  for (const auto& c : configs) {
    for (int single = 0; single <= (lo.cross_domain && c.single_domain ? 1 : 0); ++single) {
      const std::string key = c.key(single != 0);
      if (!key_selected(env.opt, key)) continue;
      if (!config_usable(env, c)) break;
      const auto* tv = env.text->vectors(ds, texts, c.text);
      const auto seeds = seed_list(env.opt);
      for (size_t si = 0; si < seeds.size() && (c.max_seeds == 0 || si < size_t(c.max_seeds)); ++si) {
        const uint64_t seed = seeds[si];
        auto work = [&]() -> MetricValues {
          MetricValues out;
          double fit_s = 0, rss = 0;
          Timer eval_t;
          double eval_s = 0;
          std::map<std::string, size_t> n_users;
          if (!single) {
            Fitted f = fit_config(env, c, train, ds, tv, seed);
            fit_s = f.seconds;
            rss = f.rss_mb;
            eval_t.reset();
            evaluate_both(*f.model, train, test, seed, out, n_users);
            eval_s = eval_t.seconds();
          } else {
            // One fit per target domain on that domain's interactions only, evaluated on that domain's
            // targets.
            for (uint16_t d = 0; d < ds.n_domains(); ++d) {
              if (test_d[d].nnz() == 0) continue;
              Fitted f = fit_config(env, c, train_d[d], ds, tv, seed);
              fit_s += f.seconds;
              rss = std::max(rss, f.rss_mb);
              eval_t.reset();
              evaluate_both(*f.model, train_d[d], test_d[d], seed, out, n_users);
              eval_s += eval_t.seconds();
            }
          }
          add_overall(out, n_users);
          out["train_seconds"] = fit_s;
          out["eval_seconds"] = eval_s;
          out["peak_rss_delta_mb"] = rss;
          return out;
        };
        MetricValues m;
        if (!run_task(env, prefix, key, work, m)) break;
        MetricValues ms, mf;
        for (const auto& [k, v] : m) {
          if (k.rfind("sampled:", 0) == 0) {
            ms[k.substr(8)] = v;
          } else if (k.rfind("full:", 0) == 0) {
            mf[k.substr(5)] = v;
          } else {
            ms[k] = v;
            mf[k] = v;
          }
        }
        if (want_sampled) res[p_sampled].add(key, ms);
        if (want_full) res[p_full].add(key, mf);
        std::string what;
        char buf[160];
        for (const auto& d : dnames) {
          std::snprintf(buf, sizeof buf, "%s: sampled hr@10 %.4f, full ndcg@10 %.4f  ", d.c_str(),
                        ms.count(d + "/hr@10") ? ms[d + "/hr@10"] : -1.0,
                        mf.count(d + "/ndcg@10") ? mf[d + "/ndcg@10"] : -1.0);
          what += buf;
        }
        progress_line(prefix, key, seed, m, what);
      }
    }
  }
  if (want_sampled) print_table(p_sampled, res[p_sampled]);
  if (want_full) print_table(p_full, res[p_full]);
}

// Cold users: a fraction of the users active in the target domain and another one lose all their
// target-domain interactions; full ranking within the target domain for those users.
// `base`: the split protocol without its seed, e.g. "cold-users:target=music,cold=0.2".
void run_cold_users(Env& env, Results& res, const Dataset& ds, const std::string& protocol,
                    const std::string& base) {
  if (!protocol_selected(env.opt, protocol)) return;
  ProtocolResults& pr = res[protocol];
  ListOptions lo;
  lo.text = has_item_text(ds);
  lo.cross_domain = true;
  lo.ease_fits = ds.n_items() <= kEaseMaxItems;
  lo.ease_default = base.find("cold=0.5") == std::string::npos;
  const auto configs = model_list(env, lo, protocol);
  pr.table_metrics = {"recall@10", "ndcg@10", "hr@10"};
  const std::vector<std::pair<std::string, std::string>> names = {
      {"recall@10", "recall@10"}, {"ndcg@10", "ndcg@10"}, {"hr@10", "hr@10"}};
  struct SeedData {
    uint64_t seed;
    Split sp;
    Csr train, test;
    std::vector<ItemText> texts;
  };
  std::vector<SeedData> data;
  for (uint64_t seed : seed_list(env.opt)) {
    SeedData s;
    s.seed = seed;
    const std::string spec = base + (base.find(':') == std::string::npos ? ":" : ",") +
                             "seed=" + std::to_string(seed) + (env.opt.validate ? ",val=0.5" : "");
    s.sp = make_split(ds, spec, SplitOptions{});
    s.train = binary_matrix(ds, s.sp.train);
    s.test = binary_matrix(ds, env.opt.validate ? s.sp.validation : s.sp.test);
    s.texts = item_text_with_tags(ds, s.sp);
    data.push_back(std::move(s));
  }
  check(data[0].sp.target_domain >= 0, protocol + ": the split has no target domain");
  const std::string tname = ds.domains.name(uint32_t(data[0].sp.target_domain));
  size_t n_cold = 0;
  for (uint32_t u = 0; u < data[0].test.n_rows; ++u) n_cold += data[0].test.row_size(u) > 0;
  pr.info = {{"dataset", ds.name},
             {"users", ds.n_users()},
             {"items", ds.n_items()},
             {"target_domain", tname},
             {"split", base},
             {"ranking", "full ranking within the target domain, cold users only"},
             {"cold_users_evaluated_seed1", n_cold},
             {"evaluated_on", env.opt.validate ? "validation" : "test"},
             {"seeds", seed_list(env.opt)}};
  std::printf("\n%s: %s; target %s, %zu cold users evaluated (seed %llu)\n", protocol.c_str(),
              ds.summary().c_str(), tname.c_str(), n_cold, (unsigned long long)data[0].seed);
  for (const auto& c : configs) {
    const std::string key = c.key();
    if (!key_selected(env.opt, key)) continue;
    if (!config_usable(env, c)) continue;
    for (size_t si = 0; si < data.size() && (c.max_seeds == 0 || si < size_t(c.max_seeds)); ++si) {
      auto& s = data[si];
      const auto* tv = env.text->vectors(ds, s.texts, c.text);
      auto work = [&]() -> MetricValues {
        Fitted f = fit_config(env, c, s.train, ds, tv, s.seed);
        Timer t;
        EvalOptions eo;
        eo.threads = env.threads;
        eo.per_domain = true;
        eo.ks = {10};
        const EvalResult r = evaluate(*f.model, s.train, s.test, &ds, eo);
        MetricValues m;
        if (r.by_domain.count(tname)) put(m, "", r.by_domain.at(tname), names);
        m["train_seconds"] = f.seconds;
        m["eval_seconds"] = t.seconds();
        m["peak_rss_delta_mb"] = f.rss_mb;
        return m;
      };
      MetricValues m;
      if (!run_task(env, protocol, key, work, m)) break;
      pr.add(key, m);
      char buf[120];
      std::snprintf(buf, sizeof buf, "recall@10 %.4f ndcg@10 %.4f hr@10 %.4f", m["recall@10"], m["ndcg@10"],
                    m["hr@10"]);
      progress_line(protocol, key, s.seed, m, buf);
    }
  }
  print_table(protocol, pr);
}

// Cold items: a fraction of the items are held out entirely. (a) ranking among the held-out items only, for
// the users who interacted with them; (b) full ranking over every item.
// `base`: the split protocol without its seed, e.g. "cold-items:cold=0.2".
void run_cold_items(Env& env, Results& res, const Dataset& ds, const std::string& protocol,
                    const std::string& base) {
  if (!protocol_selected(env.opt, protocol)) return;
  ProtocolResults& pr = res[protocol];
  ListOptions lo;
  lo.text = has_item_text(ds);
  lo.cross_domain = ds.n_domains() > 1;
  lo.ease_fits = ds.n_items() <= kEaseMaxItems;
  const auto configs = model_list(env, lo, protocol);
  pr.table_metrics = {"cold/recall@10", "cold/ndcg@10", "all/recall@10", "all/ndcg@10"};
  const std::vector<std::pair<std::string, std::string>> names = {
      {"recall@10", "recall@10"}, {"ndcg@10", "ndcg@10"}, {"hr@10", "hr@10"}};
  struct SeedData {
    uint64_t seed;
    Split sp;
    Csr train, test;
    std::vector<ItemText> texts;
    std::vector<uint8_t> candidates;
  };
  std::vector<SeedData> data;
  for (uint64_t seed : seed_list(env.opt)) {
    SeedData s;
    s.seed = seed;
    const std::string spec = base + (base.find(':') == std::string::npos ? ":" : ",") +
                             "seed=" + std::to_string(seed) + (env.opt.validate ? ",val=0.25" : "");
    s.sp = make_split(ds, spec, SplitOptions{});
    s.train = binary_matrix(ds, s.sp.train);
    s.test = binary_matrix(ds, env.opt.validate ? s.sp.validation : s.sp.test);
    // Fair text: only the tags whose (user, item) pair is not held out.
    s.texts = item_text_with_tags(ds, s.sp);
    // Candidates of (a): the items held out in the evaluated part.
    s.candidates.assign(ds.n_items(), 0);
    for (uint32_t u = 0; u < s.test.n_rows; ++u)
      for (uint32_t i : s.test.row_indices(u)) s.candidates[i] = 1;
    data.push_back(std::move(s));
  }
  size_t n_cold = 0, n_users = 0;
  for (uint8_t c : data[0].candidates) n_cold += c;
  for (uint32_t u = 0; u < data[0].test.n_rows; ++u) n_users += data[0].test.row_size(u) > 0;
  pr.info = {{"dataset", ds.name},
             {"users", ds.n_users()},
             {"items", ds.n_items()},
             {"split", base},
             {"ranking", "cold/*: among the held-out items only; all/*: full ranking over every item"},
             {"cold_items_seed1", n_cold},
             {"test_users_seed1", n_users},
             {"text", "title, genres/categories and the tags of pairs not held out (item_text_with_tags)"},
             {"evaluated_on", env.opt.validate ? "validation" : "test"},
             {"seeds", seed_list(env.opt)}};
  std::printf("\n%s: %s; %zu cold items, %zu users with cold items (seed %llu)\n", protocol.c_str(),
              ds.summary().c_str(), n_cold, n_users, (unsigned long long)data[0].seed);
  for (const auto& c : configs) {
    const std::string key = c.key();
    if (!key_selected(env.opt, key)) continue;
    if (!config_usable(env, c)) continue;
    for (size_t si = 0; si < data.size() && (c.max_seeds == 0 || si < size_t(c.max_seeds)); ++si) {
      auto& s = data[si];
      const auto* tv = env.text->vectors(ds, s.texts, c.text);
      auto work = [&]() -> MetricValues {
        Fitted f = fit_config(env, c, s.train, ds, tv, s.seed);
        Timer t;
        EvalOptions eo;
        eo.threads = env.threads;
        eo.per_domain = false;
        eo.ks = {10};
        eo.candidate_items = s.candidates;
        const EvalResult rc = evaluate(*f.model, s.train, s.test, &ds, eo);
        eo.candidate_items.clear();
        const EvalResult ra = evaluate(*f.model, s.train, s.test, &ds, eo);
        MetricValues m;
        put(m, "cold/", rc.overall, names);
        put(m, "all/", ra.overall, names);
        m["train_seconds"] = f.seconds;
        m["eval_seconds"] = t.seconds();
        m["peak_rss_delta_mb"] = f.rss_mb;
        return m;
      };
      MetricValues m;
      if (!run_task(env, protocol, key, work, m)) break;
      pr.add(key, m);
      char buf[120];
      std::snprintf(buf, sizeof buf, "cold ndcg@10 %.4f recall@10 %.4f  all ndcg@10 %.4f", m["cold/ndcg@10"],
                    m["cold/recall@10"], m["all/ndcg@10"]);
      progress_line(protocol, key, s.seed, m, buf);
    }
  }
  print_table(protocol, pr);
}

Dataset load(const std::string& path, const std::string& format = "auto") {
  Timer t;
  ReadReport rep;
  Dataset ds = read_dataset(path, format, ReadOptions{}, &rep);
  std::printf("read %s in %.1f s%s\n", path.c_str(), t.seconds(), rep.from_cache ? " (cache)" : "");
  return ds;
}

std::string machine_description() {
  std::string model;
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  std::string flags;
  std::ifstream g("/proc/cpuinfo");
  for (std::string line; std::getline(g, line);)
    if (line.rfind("flags", 0) == 0) {
      flags = line.find("avx512f") != std::string::npos ? ", AVX-512" : "";
      break;
    }
  const double mem_gb = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE)) / double(1ULL << 30);
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s%s, %u cores, %.0f GiB", model.c_str(), flags.c_str(),
                std::thread::hardware_concurrency(), mem_gb);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> pos;
  for (int i = 0; i < argc; ++i) o.command_line += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0]);
      return argv[++i];
    };
    if (a == "--seeds") {
      o.seeds = std::atoi(next().c_str());
    } else if (a == "--threads") {
      o.threads = std::atoi(next().c_str());
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--ablation") {
      o.ablation = true;
    } else if (a == "--validate") {
      o.validate = true;
    } else if (a == "--merge") {
      o.merge = true;
    } else if (a == "--no-fork") {
      o.no_fork = true;
    } else if (a == "--task-timeout") {
      o.task_timeout = std::atoi(next().c_str());
    } else if (a == "--only") {
      std::string s = next();
      for (size_t b = 0; b <= s.size();) {
        const size_t e = std::min(s.find(',', b), s.size());
        if (e > b) o.only.push_back(s.substr(b, e - b));
        b = e + 1;
      }
    } else if (a == "--filter") {
      o.filters.push_back(next());
    } else if (a == "--model") {
      o.models.push_back(next());
    } else if (a == "--encoders") {
      const std::string v = next();
      for (size_t b = 0; b <= v.size();) {
        const size_t e = std::min(v.find(',', b), v.size());
        if (e > b) o.encoders.push_back(v.substr(b, e - b));
        b = e + 1;
      }
    } else if (a == "--bert") {
      o.bert = next();
    } else if (a == "--dataset") {
      o.dataset = next();
    } else if (a == "--protocol") {
      o.dataset_protocols.push_back(next());
    } else if (a == "-h" || a == "--help") {
      usage(argv[0]);
    } else if (!a.empty() && a[0] == '-') {
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
  o.data_root = resolve_data_root(pos.size() > 1 ? pos[1] : "", argv[0]);

  Env env;
  env.opt = o;
  env.threads = resolve_threads(o.threads);
  // This process encodes on one thread only (reading what a worker encoded with every thread into the
  // cache): see TextVectorStore::vectors.
  env.text = std::make_unique<TextVectorStore>(o.no_fork ? env.threads : 1, env.notes);
  if (!o.no_fork)
    env.text->warm_ = [&env](const Dataset& ds, const std::vector<ItemText>& texts,
                             const std::string& label) {
      std::string error;
      auto work = [&]() -> MetricValues {
        Notes quiet;
        TextVectorStore worker(env.threads, quiet);
        worker.vectors(ds, texts, label);
        return {};
      };
      if (!run_isolated(env, work, error))
        env.notes.add("encoding with " + label + " in a worker failed: " + error);
    };
  Timer total;
  Results res;
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
    for (const auto& [name, pr] : res) j[name] = to_json(pr);
    nlohmann::json meta = j.contains("_meta") ? j["_meta"] : nlohmann::json::object();
    meta["command"] = o.command_line;
    meta["machine"] = machine_description();
    meta["threads"] = env.threads;
    meta["seeds"] = seed_list(o);
    meta["quick"] = o.quick;
    meta["data_root"] = o.data_root;
    meta["seconds"] = total.seconds();
    meta["notes"] = env.notes.list;
    meta["memory_note"] =
        "peak_rss_delta_mb: peak resident set during the fit (sampled every 5 ms) minus the resident set "
        "just before it; includes the fit's temporary buffers, not the data or text vectors held before";
    meta["model_keys"] =
        "the spec exactly as given to create_model, then ' [text=ENCODER]' for models given item text "
        "vectors (text=none: fitted without them) and ' [single-domain]' for fits on the target domain's "
        "interactions only";
    for (const auto& [name, pr] : res) meta["protocols"][name] = pr.info;
    j["_meta"] = meta;
    const std::string s = j.dump(1);
    write_file_atomic(o.out, s);
  };

  std::printf("bench_crossdomain: data %s, %d threads, %d seed(s)%s%s\n", o.data_root.c_str(), env.threads,
              o.seeds, o.quick ? ", quick" : "", o.validate ? ", evaluated on validation" : "");
  std::printf("machine: %s\n", machine_description().c_str());
  try {
    if (o.dataset.empty()) {
      const fs::path root(o.data_root);
      if (dataset_selected(o, "food-kitchen")) {
        Dataset fk = load((root / "amazon_food-kitchen_llmcdsr").string(), "food-kitchen");
        run_fixed(env, res, fk, "food-kitchen");
        write();
      }
      if (dataset_selected(o, "douban")) {
        Dataset db = load((root / "douban_book-music_gadtcdr").string(), "douban");
        check(db.domains.find("book") && db.domains.find("music"),
              "douban: expected the domains book and music");
        for (const char* pct : {"20", "50"}) {
          const std::string cold = std::string(",cold=0.") + pct;
          run_cold_users(env, res, db, std::string("douban/book->music/cold") + pct,
                         "cold-users:target=music" + cold);
          write();
          run_cold_users(env, res, db, std::string("douban/music->book/cold") + pct,
                         "cold-users:target=book" + cold);
          write();
        }
      }
      if (dataset_selected(o, "ml-latest-small")) {
        Dataset ml = load((root / "movielens_ml-latest-small").string(), "ml-latest-small");
        run_cold_items(env, res, ml, "ml-latest-small/cold-items", "cold-items:cold=0.2");
        write();
      }
    } else {
      Dataset ds = load(o.dataset);
      const std::string dsname = ds.name.empty() ? fs::path(o.dataset).filename().string() : ds.name;
      env.opt.only.clear();
      for (const auto& p : o.dataset_protocols) {
        if (p == "fixed") {
          run_fixed(env, res, ds, dsname);
        } else if (p.rfind("cold-items", 0) == 0) {
          run_cold_items(env, res, ds, dsname + "/" + p, p);
        } else if (p.rfind("cold-users", 0) == 0) {
          run_cold_users(env, res, ds, dsname + "/" + p, p);
        } else {
          throw Error("--protocol must be fixed, cold-items[:cold=R] or cold-users:target=X[,cold=R], got '" +
                      p + "'");
        }
        write();
      }
    }
    write();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_crossdomain: %s\n", e.what());
    write();
    return 1;
  }
  std::printf("\nnotes:\n");
  for (const auto& n : env.notes.list) std::printf("  - %s\n", n.c_str());
  std::printf("total %.1f s; wrote %s\n", total.seconds(), o.out.c_str());
  return 0;
}
