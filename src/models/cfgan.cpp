// CFGAN (Chae et al., CIKM 2018): a conditional generative adversarial network over users' purchase vectors.
// The generator G maps a user's condition (their purchase vector, optionally with noise) to a vector of item
// scores in (0, 1); the discriminator D tells a real purchase vector from a generated one under the same
// condition. With CFGAN's two tricks:
//   - partial masking (PM): the generated vector is shown to D only on the user's purchases plus a sampled
//     fraction `pm` of the other items, so G is not pushed to rate every item 1;
//   - zero reconstruction (ZR): a separately sampled fraction `zr` of the non-purchased items is pulled
//     towards 0 by a squared penalty of weight `alpha`.
// Losses (one minibatch B of users u with purchase indicator e_u, PM set k_u, ZR set z_u, condition c_u):
//   D: -1/B sum_u [log D(e_u | c_u) + log(1 - D(G(c_u) * (e_u + k_u) | c_u))]
//   G:  1/B sum_u [-log D(G(c_u) * (e_u + k_u) | c_u) + alpha * sum_{j in z_u} G(c_u)_j^2]
// (G's adversarial term is the usual non-saturating form of CFGAN's log(1 - D(...)).) The condition enters
// each network's hidden layer through a table of one row per item, summed over the user's purchases (the
// sparse form of "concatenate c_u to the input"), so a step costs O(|purchases| h + h n_out).
//
// `domain` restricts the generated vector (and the recommendations) to one domain's items while the
// condition reads every domain: the form used to augment a sparse domain from a user's whole history.
// As a recommender, a user's scores are G's logits for the condition of their history (noise 0); fold-in is
// that forward pass over the new history, exact and cheap. One thread trains (results are the same for any
// thread count); scoring runs users in parallel.
//
// DP-SGD (dp=true, or dp_noise > 0, or dp_epsilon > 0; models/dp_training.h): user-level differential
// privacy for both networks — the generator's and the discriminator's condition tables, hidden and output
// layers (everything the model trains). The user is already CFGAN's example: one purchase vector, which is
// also the condition. Training is a sequence of updates, d_steps of the discriminator then g_steps of the
// generator, repeated; every update is its own DP-SGD step: a fresh Poisson sample of users (rate q =
// dp_users / n_users), each sampled user's loss as a batch of one (masks and noise from a stream seeded by
// (seed, update, user)) differentiated over the updated network's parameters alone, clipped to L2 norm
// dp_clip, summed in user order, Gaussian noise of standard deviation dp_noise * dp_clip on every coordinate
// (every condition row), divided by q * n_users, and an Adam step. The generator's loss reads the user's
// data directly (condition, purchases, masks) besides the private discriminator, so it is clipped and
// noised too. The accountant composes all the updates of both networks: ceil(epochs * (d_steps + g_steps)
// / q) steps, each user seen `epochs` times per network update kind on average. Not covered: the histories
// the saved model keeps for scoring (each user's own data). ε is stored under "privacy" in the manifest.
#include <algorithm>
#include <climits>
#include <cmath>
#include <numeric>

#include "models/cfgan_core.h"
#include "models/dp_training.h"
#include "models/model_util.h"
#include "xdrec/nn.h"
#include "xdrec/privacy.h"
#include "xdrec/recommender.h"

namespace xdrec {

namespace {

using MatF = nn::Mat<float>;

constexpr uint64_t kDpSampleStream = uint64_t(3) << 56;  // + step: which users a DP step samples
constexpr uint64_t kDpNoiseStream = uint64_t(5) << 56;   // + step: the step's Gaussian noise
constexpr uint64_t kDpUserStream = uint64_t(6) << 56;    // + step * n_users + user: a user's masks and noise

nn::Act act_of(const std::string& a) {
  if (a == "relu") return nn::Act::relu;
  if (a == "tanh") return nn::Act::tanh;
  return nn::Act::sigmoid;
}

class CfganModel final : public Recommender {
 public:
  explicit CfganModel(const Spec& spec) : params_("cfgan") {
    params_.add("hidden", &hidden_, 400, 1, 65536, "hidden units of the generator and of the discriminator")
        .add("act", &act_, "sigmoid", {"sigmoid", "relu", "tanh"}, "hidden activation of both networks")
        .add("epochs", &epochs_, 200, 0, 1000000, "passes over the users")
        .add("batch", &batch_, 32, 1, 1 << 20, "users per minibatch")
        .add("lr_g", &lr_g_, 1e-4, 1e-7, 10.0, "Adam learning rate of the generator")
        .add("lr_d", &lr_d_, 1e-4, 1e-7, 10.0, "Adam learning rate of the discriminator")
        .add("reg", &reg_, 0.0, 0.0, 1.0, "decoupled weight decay of every parameter")
        .add("d_steps", &d_steps_, 1, 0, 100, "discriminator steps per minibatch")
        .add("g_steps", &g_steps_, 1, 0, 100, "generator steps per minibatch")
        .add("pm", &pm_, 0.7, 0.0, 1.0, "partial masking: fraction of non-purchased items shown to D")
        .add("zr", &zr_, 0.7, 0.0, 1.0, "zero reconstruction: fraction of non-purchased items pulled to 0")
        .add("alpha", &alpha_, 0.1, 0.0, 1e6, "weight of the zero-reconstruction penalty")
        .add("noise", &noise_, 0, 0, 4096, "width of the generator's noise input (0: none, as in CFGAN)")
        .add("domain", &domain_, -1, -1, 65535,
             "generate and recommend the items of this domain index only (-1: every item)")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    dp_.declare(params_);
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t h = uint64_t(hidden_), no = s.n_items;  // upper bound: every item generated
    ModelCost c;
    // Parameters with Adam moments and gradients (x4), the minibatch activations, the histories, scores.
    c.bytes = (2 * s.n_items * h + 2 * no * h + uint64_t(noise_) * h) * 4 * 4 +
              uint64_t(batch_) * no * 4 * 8 + model_util::csr_bytes(s.n_users, s.nnz) +
              model_util::score_batch_bytes(s);
    const double per_user = double(no) * double(h) * 2.0 * 10.0 +
                            double(s.nnz) / double(std::max<uint64_t>(1, s.n_users)) * double(h) * 8.0;
    c.seconds =
        double(s.n_users) * per_user * double(epochs_) * double(std::max(1, d_steps_ + g_steps_)) / 2.0 / 4e9;
    c.note = "two dense layers of (hidden x generated items) with their Adam moments";
    return c;
  }
  std::string name() const override { return "cfgan"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  uint32_t n_users() const override { return hist_.n_rows; }
  uint32_t n_items() const override { return n_items_; }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    hist_ = model_util::prepare_interactions(user_items, true, "cfgan");
    n_items_ = hist_.n_cols;
    check(n_items_ > 0, "cfgan: no items");
    item_domain_.assign(ctx.item_domain.begin(), ctx.item_domain.end());
    check(item_domain_.empty() || item_domain_.size() == n_items_,
          "cfgan: item domains have " + std::to_string(item_domain_.size()) + " entries but the matrix has " +
              std::to_string(n_items_) + " items");
    set_outputs();
    check(!out_items_.empty(), "cfgan: domain " + std::to_string(domain_) + " has no items");
    const uint64_t seed = seed_ > 0 ? uint64_t(seed_) : ctx.seed;
    init(seed);
    privacy_ = nlohmann::json();
    if (dp_.active()) {
      train_dp(seed, ctx);
    } else {
      train(seed, ctx);
    }
    fitted_ = true;
  }

  void score(std::span<const uint32_t> users, Matrix& out, int threads) const override {
    check(fitted_, "cfgan: score before fit");
    model_util::check_users(users, n_users(), "cfgan");
    out.resize(users.size(), n_items_);
    parallel_for(users.size(), threads, 16, [&](size_t b, size_t e) {
      std::vector<float> a(static_cast<size_t>(hidden_)), o(out_items_.size());
      for (size_t k = b; k < e; ++k) {
        nets_.generate_row(hist_.row_indices(users[k]), a.data(), o.data());
        float* r = out.row(k);
        std::fill(r, r + n_items_, kOutside);
        for (size_t j = 0; j < out_items_.size(); ++j) r[out_items_[j]] = o[j];
      }
    });
  }

  uint32_t fold_in(uint32_t user, std::span<const uint32_t> items, std::span<const float> weights) override {
    check(fitted_, "cfgan: fold_in before fit");
    const model_util::History h = model_util::make_history(items, weights, n_items_, true, "cfgan");
    return model_util::set_row(hist_, user, h, "cfgan");
  }

  // The condition tables and the weight matrices of both networks.
  bool prunable_tensor(const std::string& name) const override {
    return name == "g_cond" || name == "g_noise" || name == "g_out_w" || name == "d_cond" ||
           name == "d_in_w" || name == "d_out_w";
  }
  void save(TensorMap& t, nlohmann::json& extra) const override {
    check(fitted_, "cfgan: save before fit");
    auto put = [&](const std::string& name, const MatF& m) {
      t[name] = Tensor::from_f32({int64_t(m.rows), int64_t(m.cols)}, m.data.data());
    };
    put("g_cond", nets_.g_cond);
    put("g_bias", nets_.g_bias);
    put("g_noise", nets_.g_noise);
    put("g_out_w", nets_.g_out.w);
    put("g_out_b", nets_.g_out.b);
    put("d_cond", nets_.d_cond);
    put("d_in_w", nets_.d_in.w);
    put("d_in_b", nets_.d_in.b);
    put("d_out_w", nets_.d_out.w);
    put("d_out_b", nets_.d_out.b);
    put_csr(t, "history", hist_);
    std::vector<float> dom(item_domain_.begin(), item_domain_.end());
    t["item_domain"] = Tensor::from_f32({int64_t(dom.size())}, dom.data());
    extra["n_items"] = n_items_;
    if (!privacy_.is_null()) extra["privacy"] = privacy_;
  }

  void load(const TensorMap& t, const nlohmann::json& extra) override {
    check(extra.contains("n_items") && extra["n_items"].is_number_unsigned(),
          "cfgan load: the manifest's extra section lacks n_items");
    n_items_ = extra["n_items"].get<uint32_t>();
    privacy_ = extra.contains("privacy") ? extra.at("privacy") : nlohmann::json();
    const std::vector<float> dom = get_tensor(t, "item_domain").to_f32("item_domain");
    check(dom.empty() || dom.size() == n_items_, "cfgan load: item_domain has the wrong length");
    item_domain_.clear();
    for (float d : dom) {
      check(d >= 0 && d < 65536 && d == std::floor(d), "cfgan load: a bad domain index");
      item_domain_.push_back(uint16_t(d));
    }
    set_outputs();
    nets_.act = act_of(act_);
    const size_t h = size_t(hidden_), no = out_items_.size();
    auto get = [&](const std::string& name, MatF& m, size_t rows, size_t cols) {
      const Tensor& x = get_tensor(t, name);
      check(x.shape.size() == 2 && size_t(x.shape[0]) == rows && size_t(x.shape[1]) == cols,
            "cfgan load: tensor '" + name + "' should be " + std::to_string(rows) + " x " +
                std::to_string(cols));
      std::vector<float> v = x.to_f32(name);
      for (float f : v) check(std::isfinite(f), "cfgan load: tensor '" + name + "' holds a non-finite value");
      m.resize(rows, cols);
      m.data = std::move(v);
    };
    get("g_cond", nets_.g_cond, n_items_, h);
    get("g_bias", nets_.g_bias, 1, h);
    get("g_noise", nets_.g_noise, size_t(noise_), h);
    get("g_out_w", nets_.g_out.w, h, no);
    get("g_out_b", nets_.g_out.b, 1, no);
    get("d_cond", nets_.d_cond, n_items_, h);
    get("d_in_w", nets_.d_in.w, no, h);
    get("d_in_b", nets_.d_in.b, 1, h);
    get("d_out_w", nets_.d_out.w, h, 1);
    get("d_out_b", nets_.d_out.b, 1, 1);
    hist_ = get_csr(t, "history");
    model_util::check_history(hist_, n_items_, "cfgan");
    fitted_ = true;
  }

  std::map<std::string, std::vector<double>> training_curves() const override {
    if (losses_.empty()) return {};
    std::vector<double> d, g;
    for (const auto& [a, b] : losses_) d.push_back(a), g.push_back(b);
    return {{"discriminator", d}, {"generator", g}};
  }

 private:
  static constexpr float kOutside = -1e30f;  // the score of an item outside the generated domain

  void set_outputs() {
    out_items_.clear();
    for (uint32_t i = 0; i < n_items_; ++i)
      if (domain_ < 0 || (!item_domain_.empty() && item_domain_[i] == uint16_t(domain_)) ||
          (item_domain_.empty() && domain_ == 0))
        out_items_.push_back(i);
    out_col_.assign(n_items_, -1);
    for (size_t j = 0; j < out_items_.size(); ++j) out_col_[out_items_[j]] = int32_t(j);
  }

  void init(uint64_t seed) {
    Rng rng(seed, 0xC6A1);
    nets_.act = act_of(act_);
    const size_t h = size_t(hidden_), no = out_items_.size();
    auto uniform = [&](MatF& m, size_t r, size_t c, double bound) {
      m.resize(r, c);
      for (float& v : m.data) v = float((rng.uniform() * 2.0 - 1.0) * bound);
    };
    // Glorot-style bounds; a condition table row is one input of the hidden layer's (items + noise)-wide
    // input.
    const double gin = std::sqrt(6.0 / double(n_items_ + size_t(noise_) + h));
    uniform(nets_.g_cond, n_items_, h, gin);
    nets_.g_bias.resize(1, h);
    uniform(nets_.g_noise, size_t(noise_), h, gin);
    nets_.g_out = nn::Linear<float>(h, no);
    uniform(nets_.g_out.w, h, no, std::sqrt(6.0 / double(h + no)));
    const double din = std::sqrt(6.0 / double(n_items_ + no + h));
    uniform(nets_.d_cond, n_items_, h, din);
    nets_.d_in = nn::Linear<float>(no, h);
    uniform(nets_.d_in.w, no, h, din);
    nets_.d_out = nn::Linear<float>(h, 1);
    uniform(nets_.d_out.w, h, 1, std::sqrt(6.0 / double(h + 1)));
  }

  // b.real: the purchase vectors of b.users over the generated items.
  void set_real(models::CfganNets<float>::Batch& b) const {
    b.real.resize(b.users.size(), out_items_.size());
    for (size_t k = 0; k < b.users.size(); ++k)
      for (uint32_t i : hist_.row_indices(b.users[k]))
        if (out_col_[i] >= 0) b.real.row(k)[out_col_[i]] = 1.0f;
  }

  // The masks over the non-purchased items (zero reconstruction for a generator step only) and the noise of
  // one step, drawn from rng.
  void draw(models::CfganNets<float>::Batch& b, bool generator, Rng& rng) const {
    const size_t bsz = b.users.size(), no = out_items_.size();
    auto sample = [&](nn::Mat<float>& m, double frac) {
      m.resize(bsz, no);
      for (size_t k = 0; k < m.data.size(); ++k)
        m.data[k] = b.real.data[k] > 0 ? 0.0f : (rng.uniform() < frac ? 1.0f : 0.0f);
    };
    sample(b.pm, pm_);
    if (generator) {
      sample(b.zr, zr_);
    } else {
      b.zr.resize(bsz, no);
    }
    b.z.resize(noise_ > 0 ? bsz : 0, size_t(noise_));
    for (float& v : b.z.data) v = rng.normal();
  }

  // User-level DP-SGD (see the top of the file).
  void train_dp(uint64_t seed, const FitContext& ctx) {
    losses_.clear();
    const uint32_t nu = hist_.n_rows;
    const int per_round = d_steps_ + g_steps_;
    if (epochs_ == 0 || per_round == 0) return;
    // Every update of either network is one accounted step.
    const models::DpSgdPlan plan = models::plan_dp_sgd(dp_, nu, epochs_ * per_round, "cfgan");
    nn::AdamOptions og{.lr = lr_g_, .weight_decay = reg_}, od{.lr = lr_d_, .weight_decay = reg_};
    std::vector<MatF*> gp = nets_.g_dense_params(), dpar = nets_.d_dense_params();
    gp.push_back(&nets_.g_cond);
    dpar.push_back(&nets_.d_cond);
    nn::Adam<float> g_adam(gp, og), d_adam(dpar, od);
    // Each network's parameters laid out flat: the dense ones in their order, then the condition table.
    auto offsets = [](const std::vector<MatF*>& ps) {
      std::vector<size_t> off(ps.size() + 1, 0);
      for (size_t k = 0; k < ps.size(); ++k) off[k + 1] = off[k] + ps[k]->size();
      return off;
    };
    const std::vector<size_t> g_off = offsets(gp), d_off = offsets(dpar);
    privacy::DpAggregator g_agg(g_off.back(), dp_.clip), d_agg(d_off.back(), dp_.clip);
    std::vector<MatF> grads;
    std::vector<privacy::DpAggregator::Piece> pieces;
    models::CfganNets<float>::Batch b;
    b.hist = &hist_;
    size_t clipped = 0, contributions = 0;
    double loss[2] = {0, 0};
    size_t count[2] = {0, 0};
    const int64_t round_steps = int64_t(plan.steps_per_epoch) * per_round;
    for (int64_t step = 0; step < plan.steps; ++step) {
      const bool generator = step % per_round >= d_steps_;
      const std::vector<MatF*>& ps = generator ? gp : dpar;
      const std::vector<size_t>& off = generator ? g_off : d_off;
      privacy::DpAggregator& agg = generator ? g_agg : d_agg;
      agg.reset();
      for (uint32_t u : plan.sample(seed, kDpSampleStream, step)) {
        pieces.clear();
        b.users = std::span<const uint32_t>(&u, 1);
        set_real(b);
        auto gr = nets_.make_grads();
        if (std::any_of(b.real.data.begin(), b.real.data.end(), [](float v) { return v > 0; })) {
          Rng rng(seed, kDpUserStream + uint64_t(step) * nu + u);
          draw(b, generator, rng);
          loss[generator] += generator ? nets_.g_loss(b, float(alpha_), &gr) : nets_.d_loss(b, &gr);
          ++count[generator];
          const std::vector<MatF>& dense = generator ? gr.g : gr.d;
          const nn::SparseGrad<float>& cond = generator ? gr.g_cond : gr.d_cond;
          for (size_t k = 0; k < dense.size(); ++k)
            if (dense[k].size()) pieces.push_back({off[k], {dense[k].data.data(), dense[k].size()}});
          const size_t h = cond.values.cols;
          for (size_t r = 0; r < cond.rows.size(); ++r)
            pieces.push_back({off[dense.size()] + size_t(cond.rows[r]) * h, {cond.values.row(r), h}});
        }
        agg.add(pieces);  // a user without purchases among the generated items adds a zero contribution
      }
      clipped += agg.clipped();
      contributions += agg.contributions();
      Rng noise(seed, kDpNoiseStream + uint64_t(step));
      agg.finish(plan.sigma, plan.expected_users(), noise);
      grads.resize(ps.size());
      for (size_t k = 0; k < ps.size(); ++k) {
        grads[k].resize(ps[k]->rows, ps[k]->cols);
        std::transform(agg.sum().begin() + ptrdiff_t(off[k]), agg.sum().begin() + ptrdiff_t(off[k + 1]),
                       grads[k].data.begin(), [](double v) { return float(v); });
      }
      (generator ? g_adam : d_adam).step(grads);
      if ((step + 1) % round_steps == 0 || step + 1 == plan.steps) {
        losses_.emplace_back(count[0] ? loss[0] / double(count[0]) : 0.0,
                             count[1] ? loss[1] / double(count[1]) : 0.0);
        if (ctx.verbose)
          std::fprintf(stderr, "cfgan DP-SGD step %lld/%lld: D loss %.4f, G loss %.4f\n", (long long)step + 1,
                       (long long)plan.steps, losses_.back().first, losses_.back().second);
        loss[0] = loss[1] = 0;
        count[0] = count[1] = 0;
      }
      if (ctx.progress && step % 50 == 0) ctx.progress(size_t(step), size_t(plan.steps), "cfgan DP-SGD");
    }
    privacy_ = models::dp_sgd_report(
        dp_, plan, clipped, contributions, "cfgan",
        "both networks: the generator's and the discriminator's condition tables, hidden and output layers "
        "(user-level; the steps count the updates of both networks); not the histories kept for scoring",
        ctx.verbose);
  }

  void train(uint64_t seed, const FitContext& ctx) {
    losses_.clear();
    // Users with at least one purchase among the generated items are the training examples.
    std::vector<uint32_t> users;
    for (uint32_t u = 0; u < hist_.n_rows; ++u)
      for (uint32_t i : hist_.row_indices(u))
        if (out_col_[i] >= 0) {
          users.push_back(u);
          break;
        }
    if (users.empty() || epochs_ == 0) return;
    nn::AdamOptions og{.lr = lr_g_, .weight_decay = reg_}, od{.lr = lr_d_, .weight_decay = reg_};
    nn::Adam<float> g_dense(nets_.g_dense_params(), og), g_sparse({&nets_.g_cond}, og);
    nn::Adam<float> d_dense(nets_.d_dense_params(), od), d_sparse({&nets_.d_cond}, od);
    const auto steps_total = uint64_t(epochs_) * ((users.size() + size_t(batch_) - 1) / size_t(batch_));
    uint64_t step = 0;
    models::CfganNets<float>::Batch b;
    b.hist = &hist_;
    for (int ep = 0; ep < epochs_; ++ep) {
      Rng rng(seed, 1 + uint64_t(ep));
      std::vector<uint32_t> order = users;
      for (size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[rng.below(k)]);
      double dl_sum = 0, gl_sum = 0;
      size_t nb = 0;
      for (size_t b0 = 0; b0 < order.size(); b0 += size_t(batch_), ++nb, ++step) {
        b.users = std::span<const uint32_t>(order.data() + b0, std::min(order.size() - b0, size_t(batch_)));
        set_real(b);
        for (int s = 0; s < d_steps_; ++s) {
          draw(b, false, rng);
          auto gr = nets_.make_grads();
          dl_sum += nets_.d_loss(b, &gr);
          d_dense.step(gr.d);
          d_sparse.step_sparse(0, gr.d_cond);
        }
        for (int s = 0; s < g_steps_; ++s) {
          draw(b, true, rng);
          auto gr = nets_.make_grads();
          gl_sum += nets_.g_loss(b, float(alpha_), &gr);
          g_dense.step(gr.g);
          g_sparse.step_sparse(0, gr.g_cond);
        }
        if (ctx.progress && step % 50 == 0) ctx.progress(step, steps_total, "cfgan");
      }
      losses_.emplace_back(d_steps_ ? dl_sum / double(nb * size_t(d_steps_)) : 0.0,
                           g_steps_ ? gl_sum / double(nb * size_t(g_steps_)) : 0.0);
      if (ctx.verbose)
        std::fprintf(stderr, "cfgan epoch %d: D loss %.4f, G loss %.4f\n", ep + 1, losses_.back().first,
                     losses_.back().second);
    }
  }

  ParamSet params_;
  int hidden_ = 400, epochs_ = 200, batch_ = 32, d_steps_ = 1, g_steps_ = 1, noise_ = 0, domain_ = -1,
      seed_ = 0;
  double lr_g_ = 1e-4, lr_d_ = 1e-4, reg_ = 0.0, pm_ = 0.7, zr_ = 0.7, alpha_ = 0.1;
  std::string act_ = "sigmoid";

  bool fitted_ = false;
  uint32_t n_items_ = 0;
  Csr hist_;
  std::vector<uint16_t> item_domain_;
  std::vector<uint32_t> out_items_;
  std::vector<int32_t> out_col_;
  models::CfganNets<float> nets_;
  models::DpSgdParams dp_;  // dp, dp_noise, dp_clip, dp_delta, dp_epsilon, dp_users
  nlohmann::json privacy_;  // the DP-SGD guarantee of the last fit (null without DP)
  std::vector<std::pair<double, double>> losses_;
};

}  // namespace

XDREC_REGISTER_MODEL(cfgan,
                     "CFGAN: conditional GAN over purchase vectors (partial masking, zero reconstruction)",
                     CfganModel, {.thread_independent = true, .personalised = true, .fold_in = true});

}  // namespace xdrec
