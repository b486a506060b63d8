// The pipeline: the one chain dataset -> split -> text vectors -> fit -> evaluate -> seeds -> summary that
// the CLI, the benchmarks and (later) the server and distributed runner configure instead of writing again.
//
//   TextVectorSource   text vectors of a dataset (per split, through the embedding cache), one rule for empty
//                      text (see embed.h: a row of zeros, never encoded)
//   Experiment         protocol + seeds + model runs + evaluations -> per-seed metrics -> mean ± 95% CI, per
//                      domain and cohort, as JSON and as a table; progress and results through callbacks
//   TextConfig         text.json beside a saved model, and the encoder a fitted text model expects
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/dataset.h"
#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/metrics.h"
#include "xdrec/recommender.h"
#include "xdrec/split.h"

namespace xdrec {

// Index of the domain called `name` (-1 for an empty name); Error listing the domains when there is none.
int domain_index(const Dataset& ds, const std::string& name);

// ---- Text vectors ----------------------------------------------------------------------------------------

// "auto": use-lite when its model is installed, else tfidf (`note` gets why); any other spec as given.
std::unique_ptr<TextEncoder> make_text_encoder(const std::string& spec, std::string* note = nullptr);

struct TextOptions {
  std::string item_template = kDefaultItemTemplate;
  std::string cache_dir;  // empty: default_embedding_cache_dir()
  int threads = 0;
  ProgressFn progress;
};

// Encoders by spec, created once, and the vectors of each (dataset, split texts, encoder) made once: a
// benchmark asks for the same vectors for every model and seed.
class TextVectorSource {
 public:
  explicit TextVectorSource(TextOptions opt) : opt_(std::move(opt)) {}
  // Whether `spec` can be created and encode here; `why` gets the error when not.
  bool available(const std::string& spec, std::string* why = nullptr);
  // Vectors of the dataset's items (texts from `split`'s fair tags when given) and users' profiles.
  const TextVectors& get(const Dataset& ds, const Split* split, const std::string& spec);
  // Whether get() would return vectors already made (no encoding).
  bool has(const Dataset& ds, const Split* split, const std::string& spec) const;
  const TextOptions& options() const { return opt_; }

 private:
  std::string key(const Dataset& ds, const Split* split, const std::string& spec) const;
  TextOptions opt_;
  std::map<std::string, std::unique_ptr<TextEncoder>> pretrained_;
  std::map<std::string, std::string> unavailable_;
  std::map<std::string, TextVectors> cache_;
};

// Points ctx at the vectors (users only when some user has a profile text).
void attach_text(const TextVectors& v, FitContext& ctx);

// ---- Fit -------------------------------------------------------------------------------------------------

// One fit: the model from its spec, the FitContext from the dataset (item domains, categories) and the text
// vectors, the time and the peak memory it took. Cost before work: the model's registered estimate for the
// data's shape is taken first; a fit whose estimate exceeds the memory available is refused with an Error
// that says how much it needs and which registered models would fit.
struct FitRequest {
  std::string spec;
  uint64_t seed = 42;
  int threads = 0;
  const TextVectors* text = nullptr;        // attached when given
  const Matrix* item_categories = nullptr;  // e.g. Dataset::category_vectors()
  const Sequences* sequences = nullptr;     // the fit's interactions in time order (user_sequences())
  // Distributed fit over the ranks of a job (dist.h); only models whose traits say `distributed` accept one
  // with more than one rank.
  Communicator* comm = nullptr;
  ProgressFn progress;
  bool verbose = false;                           // the model's own per-iteration lines on stderr
  bool check_cost = true;                         // refuse when the estimate exceeds the available memory
  std::function<void(const ModelCost&)> on_cost;  // told the estimate before the fit (e.g. to print it)
};
// The shape fit_model estimates the cost on.
DataShape data_shape(const Dataset& ds, const Csr& train, const TextVectors* text);
// Throws Error when `cost` exceeds `available` bytes (0: available_memory_bytes()), naming the model, what it
// needs and the registered models whose estimate fits.
void check_cost(const std::string& spec, const ModelCost& cost, const DataShape& shape, size_t available = 0);
// "1.4 GiB", "820 MiB"
std::string format_bytes(double bytes);
struct Fitted {
  std::unique_ptr<Recommender> model;
  double seconds = 0, rss_delta_mb = 0;
};
Fitted fit_model(const Dataset& ds, const Csr& train, const FitRequest& req);
// The FitContext fit_model gives the model: the request's threads, seed, categories, sequences, text and
// progress, with the dataset's item domains (also for continuing a fitted model: Recommender::resume).
FitContext fit_context(const Dataset& ds, const FitRequest& req);

// ---- Experiment ------------------------------------------------------------------------------------------

// One model configuration.
struct ModelRun {
  std::string spec;     // create_model spec
  std::string encoder;  // text vectors from this encoder spec ("" or "none": fitted without text)
  std::string key;      // result key; default: spec, + " [text=ENC]" when an encoder is named
  int max_seeds = 0;    // run the first max_seeds seeds only (0: all)
  // Fit one model per domain on that domain's interactions only and evaluate each on that domain's test
  // items (the single-domain ablation of a cross-domain protocol).
  bool single_domain = false;
  // With an encoder: a model that turns out not to use text is an error unless this is set (the CLI gives
  // --encoder to every model; the text models use it, the others ignore it).
  bool text_optional = false;
  // Augmentation (augment.h spec, e.g. "gan:domain=food,per_user=5"): the model is fitted on the training
  // matrix plus generated interactions; rankings still exclude only the real training interactions. The key
  // gets " +<spec>".
  std::string augment;
  std::string result_key() const;
  static ModelRun of(std::string spec, std::string encoder = "") {
    ModelRun m;
    m.spec = std::move(spec);
    m.encoder = std::move(encoder);
    return m;
  }
};

// One way of evaluating every fitted model; its metrics are prefixed "<name>/" (none when name is empty).
struct Evaluation {
  std::string name;
  EvalOptions
      options;  // ks, sampled_negatives, per_domain, ties, ... (threads, seed, cold users: set per run)
  // kHeldOutItems: rank only the items the split held out entirely (cold items) that the evaluated part
  // holds.
  enum class Candidates { kAll, kHeldOutItems } candidates = Candidates::kAll;
  // Overall metrics as the user-weighted mean of the per-domain ones (each user ranked within the domain of
  // their held-out items), instead of one ranking over every domain.
  bool overall_from_domains = false;
};

struct ExperimentOptions {
  // Protocol: a make_split spec ("random", "cold-items:cold=0.2", "fixed", ...) with `split` as base options,
  // or a function of the seed, or one given split (then one seed).
  std::string protocol = "random";
  SplitOptions split;
  std::string target_domain;  // name: the protocol's target domain; every ranking stays within it
  std::function<Split(uint64_t seed)> make_split;
  std::optional<Split> given_split;
  std::vector<uint64_t> seeds{42};
  bool fit_on_validation = false;       // fit on train + validation (else train only)
  bool evaluate_on_validation = false;  // evaluate on validation (else test)
  bool binary = false;                  // every interaction weight 1 (implicit feedback)
  bool use_ratings = false;             // interaction weights from the ratings (Dataset::user_item_matrix)
  // Rating prediction: fit on the ratings (as use_ratings) and report RMSE / MAE of the test ratings
  // (evaluate_ratings) beside the ranking metrics; the models must predict ratings.
  bool rating_task = false;
  std::vector<ModelRun> models;
  std::vector<Evaluation> evaluations{Evaluation{}};
  const Matrix* item_vectors = nullptr;  // for diversity; null: the dataset's category vectors
  bool item_categories = true;           // pass the dataset's categories to the models (FitContext)
  int threads = 0;
  // Run each (model, seed) in a forked worker: a crash or a time-out costs that result only.
  bool isolate = false;
  int task_timeout = 3600;           // seconds per isolated task
  ProgressFn progress;               // fit and evaluation progress
  TextVectorSource* text = nullptr;  // required when a model names an encoder
  bool keep_models = false;          // keep the fitted model of each key's last seed (not with isolate)
  // Distributed runner (dist.h; several ranks): the (model, seed) runs are dealt over the ranks in turn, each
  // rank runs its own, and every rank gets every record: the same result as one process (not with
  // keep_models or isolate). Every rank must call run() with the same data and options.
  Communicator* comm = nullptr;
  // Told each fit's cost estimate before it starts (key, estimate).
  std::function<void(const std::string&, const ModelCost&)> on_cost;
};

// The result of one (model, seed).
struct RunRecord {
  std::string key, spec;  // spec: the fitted model's canonical spec
  uint64_t seed = 0;
  std::map<std::string, double> metrics;  // flattened (see Experiment::flatten) + fit/eval seconds, memory
  std::vector<EvalResult> evals;          // one per evaluation (merged over domains for single_domain runs)
  std::string text_encoder;               // the encoder spec of the text vectors it was given
  std::string error;                      // non-empty: the run failed; metrics are empty
  // Rating task: (predicted, true) pairs of the test ratings, up to 20,000 spread over them (for the report).
  std::vector<std::pair<float, float>> rating_pairs;
  // For the report: "training_curves" (Recommender::training_curves), "long_tail" (of the first evaluation,
  // full ranking), "augment" (what augmentation added); each only where there is one.
  nlohmann::json extras = nlohmann::json::object();
};

class ExperimentResult {
 public:
  std::vector<std::string> keys;                       // model keys in order
  std::map<std::string, std::vector<RunRecord>> runs;  // per key, one record per seed run
  std::vector<std::string> notes;
  std::string protocol;                                        // the split's protocol (first seed)
  std::map<std::string, std::unique_ptr<Recommender>> models;  // with keep_models
  // Mean and 95% CI over the successful seeds of each flattened metric.
  std::map<std::string, MeanCI> summary(const std::string& key) const;
  // {"<key>": {"<metric>": {"mean": m, "ci95": c}}}
  nlohmann::json to_json() const;
  // A table: one row per key, "mean ± ci" per metric (a dash when absent), then fit seconds.
  std::string table(const std::vector<std::string>& metrics) const;
};

class Experiment {
 public:
  Experiment(const Dataset& ds, ExperimentOptions opt);
  // Called after every (model, seed) run, successful or not.
  std::function<void(const RunRecord&)> on_run;
  ExperimentResult run();
  // The split of seed `seed` (made once per seed).
  const Split& split(uint64_t seed);

  // Flattened metric names of one EvalResult with prefix P ("" or "<evaluation>/"): P<metric> overall,
  // P<domain>/<metric> per domain, P<cohort>/<metric> per cohort ("cold-users", "head-items", ...).
  static void flatten(const EvalResult& r, const std::string& prefix, std::map<std::string, double>& out);

 private:
  RunRecord run_one(const ModelRun& m, uint64_t seed, std::unique_ptr<Recommender>* keep);
  const Dataset& ds_;
  ExperimentOptions opt_;
  std::map<uint64_t, Split> splits_;
  Matrix categories_;
};

// Runs `work` in a forked child (when `isolate`), returning its JSON; on a crash, a time-out or an exception
// returns nullopt with `error` set.
std::optional<nlohmann::json> run_isolated(const std::function<nlohmann::json()>& work, bool isolate,
                                           int timeout_seconds, std::string& error);

// Resident set size now (MB), and a sampler of its peak over a span of work (minus the start).
double current_rss_mb();
class RssSampler {
 public:
  RssSampler();
  ~RssSampler();
  double stop();  // peak minus the start, MB

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One line describing the machine (CPU model, AVX-512, cores, memory).
std::string machine_description();

// ---- Text configuration beside a model -------------------------------------------------------------------

// text.json in a model directory: which encoder made the model's text vectors and how the item texts were
// rendered, so that serving can rebuild the encoder.
struct TextConfig {
  std::string encoder, fingerprint, item_template, split_dir;
  size_t dim = 0;
  bool split_tags = false;
};
inline constexpr const char* kTextConfigFile = "text.json";
void write_text_config(const std::string& model_dir, const TextVectors& t, const std::string& item_template,
                       bool split_tags, const std::string& split_dir);
void remove_text_config(const std::string& model_dir);
std::optional<TextConfig> read_text_config(const std::string& model_dir);

// The encoder a fitted text model expects for add_item / fold_in_profile: re-created from
// model.text_encoder(); a corpus encoder (tfidf) is refitted on the dataset's item texts rendered as at
// training time (with `split` when the texts used its tags) and must reproduce the recorded fingerprint.
// Throws Error naming the model when it does not use text or was fitted without text vectors.
std::unique_ptr<TextEncoder> encoder_for_model(const Recommender& model, const std::string& model_dir,
                                               const Dataset& ds, const Split* split, int threads);

// One text -> one vector (size enc.dim()).
std::vector<float> encode_one(const TextEncoder& enc, const std::string& text, int threads);

}  // namespace xdrec
