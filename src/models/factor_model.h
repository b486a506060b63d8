// FactorModel: the one base of the matrix-factorisation models (ials, bpr, hybrid), in the role implicit's
// matrix_factorization_base plays. It owns the user and item factor rows (padded, aligned), an optional item
// bias, scoring by GEMM (score = U[users] V^T + bias, through mf::gemm_scores), n_users()/n_items(), the
// fold-in plumbing (checks, history, commit) around a per-model solve_user() hook, and saving and loading the
// factor tensors with shape checks. A model keeps its own training and any extra state (hybrid: per-user
// offsets and text projections) and names its own tensors, so existing model files still load.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "models/mf_kernels.h"
#include "models/model_util.h"
#include "xdrec/recommender.h"

namespace xdrec::models {

class FactorModel : public Recommender {
 public:
  uint32_t n_users() const override { return uint32_t(users_.rows); }
  uint32_t n_items() const override { return uint32_t(items_.rows); }

  // out = U[users] * V^T (+ item_bias_ when it is not empty), on `threads` threads; Error for a user index
  // out of range or an unfitted model.
  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override;

  // Checks the request (fitted, user <= n_users(), history), lets solve_user() compute the user's factor row
  // from the merged history, then stores it (replacing user `user` or appending a new one).
  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override;

  // Score = U V^T + bias: the factor rows (without padding).
  bool item_vectors(Matrix& items, std::vector<float>& bias) const override;
  bool user_vectors(std::span<const uint32_t> users, Matrix& out) const override;

  // ---- Incremental update (resume): helpers shared with the other SGD models (twotower) ----
  // Error unless `touched` is sorted, without repeats, and below n_users; messages start with `who`.
  static void check_touched(std::span<const uint32_t> touched, uint32_t n_users, const std::string& who);
  // The users a resume re-solves: the touched users and every user at or beyond `old_users` (new), sorted.
  static std::vector<uint32_t> resume_users(std::span<const uint32_t> touched, uint32_t old_users,
                                            uint32_t n_users);
  // The entries (positions into m.indices) the resume's epochs train on: every positive entry of `users`
  // (the new data), then a replay of the other users' positive entries, drawn without replacement by the
  // stream (seed, stream), as many as kResumeReplay times the new ones (all of them when fewer), so that the
  // epochs do not forget the old data. In position order.
  static constexpr double kResumeReplay = 1.0;
  static std::vector<uint64_t> resume_entries(const Csr& m, std::span<const uint32_t> users, uint64_t seed,
                                              uint64_t stream);

 protected:
  // Fold-in hook: writes the factor row of a user whose history is `hist` (sorted, repeats summed, checked)
  // into `row` (users_.ld floats, zero on entry; the padding must stay zero). Called before anything in the
  // model changes, so a throw leaves the model as it was.
  virtual void solve_user(const model_util::History& hist, float* row) = 0;

  bool factors_fitted() const { return users_.ld > 0; }

  // ---- Incremental update (resume) of the SGD factor models
  // ------------------------------------------------ The checks of resume before any change: fitted, `m`
  // consistent and at least as large as the model, the touched users sorted and in range.
  void check_resume(const Csr& m, std::span<const uint32_t> touched) const;
  // Grows a factor matrix to `rows` rows; row i is drawn from N(0, scale^2) by the stream (seed, stream_base
  // + i), as a fit draws it.
  static void grow_rows(mf::Factors& x, size_t rows, uint64_t seed, uint64_t stream_base, float scale);
  // The checks of fold_in before any work: fitted, `user` at most the next new user, and the history (items
  // in range, weights finite, one weight per item). Returns the merged history.
  model_util::History fold_in_history(uint32_t user, std::span<const uint32_t> items,
                                      std::span<const float> weights) const;
  // Stores `row` (users_.ld floats) as the factors of `user`, appending a row when user == n_users(). A model
  // with per-user state besides the factors extends it (calling this one first).
  virtual void commit_user(uint32_t user, const float* row);

  // Factor tensors: users x f under `user_key`, items x f under `item_key`, and the item bias (one entry per
  // item) under `bias_key` when it is not empty.
  void save_factors(TensorMap& tensors, const std::string& user_key, const std::string& item_key,
                    const std::string& bias_key = "") const;
  // Reads what save_factors wrote, checking that both factor tensors have `cols` columns (`spec_note` says
  // where that number comes from, e.g. "factors=16") and that the bias has one entry per item. Nothing
  // changes when a check fails. read_factors only reads and checks (for a model with more tensors to check
  // before it commits); set_factors commits.
  struct FactorTensors {
    Matrix users, items;
    std::vector<float> bias;
  };
  FactorTensors read_factors(const TensorMap& tensors, const std::string& user_key,
                             const std::string& item_key, size_t cols, const std::string& spec_note,
                             const std::string& bias_key = "") const;
  void set_factors(FactorTensors&& t);
  void load_factors(const TensorMap& tensors, const std::string& user_key, const std::string& item_key,
                    size_t cols, const std::string& spec_note, const std::string& bias_key = "") {
    set_factors(read_factors(tensors, user_key, item_key, cols, spec_note, bias_key));
  }

  mf::Factors users_, items_;
  std::vector<float> item_bias_;  // one per item, or empty: no bias
};

// A 2-D tensor read as a matrix, checked to be rows x cols (rows == SIZE_MAX: any number of rows). `who`
// starts the error message ("emcdr load: ").
Matrix load_factor_tensor(const TensorMap& tensors, const std::string& key, size_t rows, size_t cols,
                          const std::string& who);

}  // namespace xdrec::models
