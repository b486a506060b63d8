// MostPopular: every user gets the same scores, the number of training users who interacted with each item
// (or, with weighted=true, the sum of the interaction values). Not personalised; a baseline and a fallback
// for users with no history. Fold-in only registers the user: the popularity counts are not changed.
#include <cmath>

#include "models/model_util.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

class PopularModel final : public Recommender {
 public:
  explicit PopularModel(const Spec& spec) : params_("popular") {
    params_.add("weighted", &weighted_, false,
                "score = sum of interaction values instead of the number of users with a positive value");
    params_.apply(spec.values);
  }
  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    ModelCost c;
    c.bytes = model_util::csr_bytes(s.n_users, s.nnz) + s.n_items * 12 + model_util::score_batch_bytes(s);
    c.seconds = double(s.nnz) * 2e-9;
    c.note = "a copy of the interactions and one count per item";
    return c;
  }
  std::string name() const override { return "popular"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return n_users_; }
  uint32_t n_items() const override { return uint32_t(counts_.size()); }

  void fit(const Csr& user_items, const FitContext&) override {
    const Csr m = model_util::prepare_interactions(user_items, !weighted_, "popular");
    check(m.n_cols > 0, "popular: the interaction matrix has no items");
    std::vector<double> sum(m.n_cols, 0.0);
    for (size_t k = 0; k < m.nnz(); ++k) sum[m.indices[k]] += m.values[k];
    counts_.assign(sum.begin(), sum.end());
    n_users_ = m.n_rows;
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(!counts_.empty(), "popular score: the model is not fitted");
    model_util::check_users(users, n_users_, "popular");
    out.resize(users.size(), counts_.size());
    parallel_for(users.size(), threads, 256, [&](size_t lo, size_t hi) {
      for (size_t r = lo; r < hi; ++r) std::copy(counts_.begin(), counts_.end(), out.row(r));
    });
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(!counts_.empty(), "popular fold_in: the model is not fitted");
    check(user <= n_users_, "popular fold_in: user index " + std::to_string(user) +
                                " is beyond the next new user (" + std::to_string(n_users_) + ")");
    model_util::make_history(items, weights, n_items(), false, "popular");  // validates the history
    if (user == n_users_) ++n_users_;
    return user;
  }

  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    tensors["item_scores"] = Tensor::from_f32({int64_t(counts_.size())}, counts_.data());
    extra["n_users"] = n_users_;
  }

  void load(const TensorMap& tensors, const nlohmann::json& extra) override {
    const Tensor& t = get_tensor(tensors, "item_scores");
    check(t.shape.size() == 1, "popular load: tensor 'item_scores' must have 1 dimension");
    std::vector<float> c = t.to_f32("item_scores");
    for (float v : c) check(std::isfinite(v), "popular load: tensor 'item_scores' holds a non-finite value");
    check(extra.contains("n_users") && extra["n_users"].is_number_unsigned(),
          "popular load: the manifest's extra section lacks n_users");
    counts_ = std::move(c);
    n_users_ = extra["n_users"].get<uint32_t>();
  }

 private:
  ParamSet params_;
  bool weighted_ = false;
  std::vector<float> counts_;
  uint32_t n_users_ = 0;
};

}  // namespace

XDREC_REGISTER_MODEL(popular, "MostPopular: items ranked by interaction count, the same for every user",
                     PopularModel,
                     {.uses_text = false,
                      .thread_independent = true,
                      .personalised = false,
                      .fold_in = true,
                      .add_item = false,
                      .profile = false});

}  // namespace xdrec
