// Recommender: the one interface every model implements and the registry of models by spec string. Top-K
// lists over a model's scores: rank.h.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/params.h"
#include "xdrec/tensor_io.h"

namespace xdrec {

class Communicator;  // dist.h

// Each user's interactions in time order (timestamp, then input order), repeats kept: user u's items are
// items[offsets[u] .. offsets[u + 1]). Built by user_sequences() (split.h) from the fit's interactions.
struct Sequences {
  std::vector<uint64_t> offsets;  // n_users + 1
  std::vector<uint32_t> items;
  uint32_t n_users() const { return offsets.empty() ? 0 : uint32_t(offsets.size() - 1); }
  std::span<const uint32_t> of(uint32_t u) const {
    return {items.data() + offsets[u], size_t(offsets[u + 1] - offsets[u])};
  }
};

// What a model sees at fit time besides the interaction matrix.
struct FitContext {
  int threads = 1;  // fixed thread count from the caller; results must not depend on it where possible
  uint64_t seed = 42;
  // Item categories as rows of a multi-hot matrix (n_items x n_categories, e.g. Dataset::category_vectors());
  // null or 0 rows: no categories. Used by the models that declare it (hybrid:categories=1).
  const Matrix* item_categories = nullptr;
  std::span<const uint16_t> item_domain;  // domain of each item (may be empty: one domain)
  ProgressFn progress;                    // may be empty
  bool verbose = false;
  // Text side information for the models that use it (uses_text()); ignored by the others. Rows follow the
  // item / user order of the matrix; a row of zeros means "no text" for that item or user. Either may be
  // null.
  const Matrix* item_text = nullptr;  // n_items x d: raw text vectors of items (any encoder)
  const Matrix* user_text = nullptr;  // n_users x d: profile text vectors of users (same encoder)
  std::string text_encoder;           // spec of the encoder that made them; recorded by the model
  // The fit's interactions in time order per user (the rows of the matrix, with order and repeats), for the
  // models that read order (sasrec). May be null: such a model then takes each row in item order.
  const Sequences* sequences = nullptr;
  // Distributed fit (dist.h): every process of the job calls fit with the same data and its own rank; the
  // models whose traits say `distributed` divide their work over the ranks and end with the same model on
  // every rank. Null, or one rank: a single-process fit.
  Communicator* comm = nullptr;
};

class Recommender {
 public:
  virtual ~Recommender() = default;

  // Registry name ("ials") and the canonical full spec with every parameter ("ials:alpha=...,factors=...").
  virtual std::string name() const = 0;
  virtual std::string spec() const = 0;

  // Trains on a users x items matrix of interaction weights (1 for implicit feedback).
  virtual void fit(const Csr& user_items, const FitContext& ctx) = 0;

  virtual uint32_t n_users() const = 0;
  virtual uint32_t n_items() const = 0;

  // Scores every item for each user in `users`: out is resized to users.size() x n_items(). Higher is better.
  // Seen items are not removed here (see recommend()).
  virtual void score(std::span<const uint32_t> users, Matrix& out, int threads) const = 0;

  // Fold-in: computes the representation of a user from a history (items and weights) without retraining
  // the rest of the model. `user` < n_users() replaces that user's state; `user` == n_users() appends a new
  // user. Returns the user's index. The history is also what the model remembers as the user's row where
  // it needs one (ItemKNN, EASE score directly from it).
  virtual uint32_t fold_in(uint32_t user, std::span<const uint32_t> items,
                           std::span<const float> weights) = 0;

  // Model state as tensors plus JSON extras (e.g. dimensions), used by save_model / load_model.
  virtual void save(TensorMap& tensors, nlohmann::json& extra) const = 0;
  virtual void load(const TensorMap& tensors, const nlohmann::json& extra) = 0;
  // The 2-D float tensors of save() that may be stored compressed (factor and embedding matrices): save_model
  // with Store::kInt8 / kFp16 writes them so, and load_model gives load() float tensors again. Default: none.
  virtual std::vector<std::string> compressible_tensors() const { return {}; }
  // Whether save_model(..., prune) may prune the tensor `name` of save() by magnitude: the weight matrices
  // and embedding tables of the neural models (not biases, norms, stored data or text codes). Only 2-D
  // float tensors with at least two rows and two columns are pruned. Default: none.
  virtual bool prunable_tensor(const std::string& name) const {
    (void)name;
    return false;
  }

  // ---- Cold start through text (models that use text override these; the defaults refuse) ----------------
  virtual bool uses_text() const { return false; }
  // Spec of the encoder whose vectors the model was fitted with ("" when it was fitted without text). Vectors
  // given to add_item / fold_in_profile must come from the same encoder.
  virtual std::string text_encoder() const { return ""; }
  // Appends an item known only by its raw text vector and its domain, without retraining; returns its index
  // (the previous n_items()). Default: Error ("<model> cannot add items without retraining").
  virtual uint32_t add_item(std::span<const float> text_vector, uint16_t domain);
  // fold_in with, in addition, the user's profile text vector (may be empty). Either part may be empty, so a
  // user with only a profile, or only history in another domain, gets a representation. Default: fold_in
  // when the profile is empty, else Error ("<model> does not use profile text").
  virtual uint32_t fold_in_profile(uint32_t user, std::span<const float> profile_vector,
                                   std::span<const uint32_t> items, std::span<const float> weights);

  // ---- Rating prediction ----------------------------------------------------------------------------------
  // Whether score() is a predicted rating on the scale of the training values (svd, svdpp, ...), so that RMSE
  // and MAE mean something; ranking models say false.
  virtual bool predicts_ratings() const { return false; }
  // One (user, item) score; rating models override it with an O(factors) path.
  virtual float predict(uint32_t user, uint32_t item) const;

  // ---- Incremental update (train --resume) ----------------------------------------------------------------
  // Continues from this fitted model with `user_items`: the data it was fitted on plus new interactions,
  // users and items (the same indices; new users and items appended). `touched_users` (sorted) are the users
  // with new interactions; they and their items are re-solved first, then `sweeps` passes over everything
  // follow, warm-started. Returns false when the model has no incremental path (the caller then refits).
  virtual bool resume(const Csr& user_items, std::span<const uint32_t> touched_users, const FitContext& ctx,
                      int sweeps) {
    (void)user_items, (void)touched_users, (void)ctx, (void)sweeps;
    return false;
  }

  // ---- Training record ------------------------------------------------------------------------------------
  // Mean training loss per epoch of the last fit, by name ("loss"; CFGAN: "discriminator", "generator"), for
  // training curves. Empty for models without epochs (and after load: the record is not saved).
  virtual std::map<std::string, std::vector<double>> training_curves() const { return {}; }

  // ---- Dot-product form and explanations (serving; models that have them override these) ----------------
  // A model whose ranking of a user's items is <user vector, item vector> + item bias (up to a constant per
  // user) gives its vectors: `items` n_items() x f, `bias` one entry per item or empty. False: no such form.
  virtual bool item_vectors(Matrix& items, std::vector<float>& bias) const {
    (void)items, (void)bias;
    return false;
  }
  // The vectors of `users` (users.size() x f) in the same space; false when item_vectors is.
  virtual bool user_vectors(std::span<const uint32_t> users, Matrix& out) const {
    (void)users, (void)out;
    return false;
  }
  // Exact decomposition of the fold-in score of `item` for a user whose history is (items, weights) into one
  // contribution per history item (contributions[k] for items[k], summing to the score without the item
  // bias). False when the model has no such decomposition.
  virtual bool explain(std::span<const uint32_t> items, std::span<const float> weights, uint32_t item,
                       std::vector<float>& contributions) const {
    (void)items, (void)weights, (void)item, (void)contributions;
    return false;
  }
};

// What a model declares about itself in the registry; the contract test suite checks behaviour against it.
struct ModelTraits {
  bool uses_text = false;          // uses item / user text vectors when the fit is given them
  bool thread_independent = true;  // results bitwise identical for any thread count
  bool personalised = true;        // scores differ per user (false: the same list for everyone)
  bool fold_in = true;             // fold_in() works without retraining
  bool add_item = false;           // add_item() appends an item from its text vector
  bool profile = false;            // fold_in_profile() accepts a profile text vector
  // Predicts ratings (predicts_ratings()): fits on rating values and reads fold-in weights as ratings (empty
  // weights: the highest training rating, i.e. "liked").
  bool rating = false;
  bool distributed = false;  // fit() divides its work over FitContext::comm's ranks (same result as one)
};

// ---- Cost before work -----------------------------------------------------------------------------------

// The size of a fit: interaction matrix users x items with nnz entries, text vectors of text_dim dimensions
// (0: none), items in n_domains domains.
struct DataShape {
  uint64_t n_users = 0, n_items = 0, nnz = 0;
  uint32_t text_dim = 0, n_domains = 1;
};

// A model's estimated cost on a DataShape: peak memory of fit plus scoring a batch of users (bytes; what the
// model allocates, not the caller's interaction matrix and text vectors), wall time on one thread (seconds;
// rough, 0 = unknown), and what dominates (note).
struct ModelCost {
  uint64_t bytes = 0;
  double seconds = 0;
  std::string note;
};

// ---- Registry -------------------------------------------------------------------------------------------

struct ModelInfo {
  std::string name;
  std::string summary;
  // Creates a model from spec values (unknown keys and bad values throw Error).
  std::function<std::unique_ptr<Recommender>(const Spec&)> create;
  std::function<std::string()> param_help;  // ParamSet::help() of a default instance
  ModelTraits traits;
  // Cost of fitting and scoring a model of these spec values on data of this shape (bad values throw Error).
  std::function<ModelCost(const Spec&, const DataShape&)> estimate;
};

// Register at static-initialisation time, in the model's file:
//   XDREC_REGISTER_MODEL(ials, "summary", IalsModel, {.thread_independent = true, ...});
// The last argument initialises the model's ModelTraits (designated initialisers, in declaration order). The
// class provides `ModelCost estimate_cost(const DataShape&) const`, called on an instance made from the spec.
bool register_model(ModelInfo info);
const std::vector<ModelInfo>& registered_models();
// The registry entry of a model name; Error for an unknown name.
const ModelInfo& model_info(const std::string& name);
// "ials:factors=128,reg=0.05" -> configured, unfitted model. Throws Error for unknown model names.
std::unique_ptr<Recommender> create_model(const std::string& spec);
// The registered estimate of a spec's cost on data of `shape`, before any work (Error for an unknown model or
// a bad parameter). Compare ModelCost::bytes with available_memory_bytes() before fitting.
ModelCost estimate_model_cost(const std::string& spec, const DataShape& shape);

#define XDREC_REGISTER_MODEL(NAME, SUMMARY, CLASS, ...)                                   \
  static const bool xdrec_registered_##NAME = ::xdrec::register_model(::xdrec::ModelInfo{ \
      #NAME, SUMMARY,                                                                     \
      [](const ::xdrec::Spec& s) -> std::unique_ptr<::xdrec::Recommender> {               \
        return std::make_unique<CLASS>(s);                                                \
      },                                                                                  \
      [] {                                                                                \
        return CLASS(::xdrec::Spec{#NAME, {}}).param_help();                              \
      },                                                                                  \
      ::xdrec::ModelTraits __VA_ARGS__,                                                   \
      [](const ::xdrec::Spec& s, const ::xdrec::DataShape& d) { return CLASS(s).estimate_cost(d); }})

// Saves into directory `dir` (created if needed): model.safetensors + manifest.json (format version, spec,
// dataset fingerprint, sha of the tensor file, storage of the compressible tensors). Both written atomically.
// `store` compresses the model's compressible_tensors() (int8 with a scale per row, or fp16).
// `prune` in [0, 1): the fraction of each prunable_tensor() zeroed by magnitude (prune_tensor) before the
// storage is applied; pruned tensors are written sparsely (sparsify_tensor) and the manifest records the
// fraction and each tensor's sparsity.
void save_model(const Recommender& model, const std::string& dir, uint64_t data_fingerprint = 0,
                Store store = Store::kFp32, double prune = 0.0);
// Loads what save_model wrote; clear Error for a missing directory, a missing or corrupt file, a checksum
// mismatch, or an unknown model name.
std::unique_ptr<Recommender> load_model(const std::string& dir, uint64_t* data_fingerprint = nullptr);

}  // namespace xdrec
