// fcf: federated collaborative filtering (Ammad-ud-din et al. 2019), simulated in one process (fcf.h has the
// objective, the client's update, the fixed point and the masks). Each round the server samples clients
// (Poisson: every user independently with probability q = clients / users, so `clients` is the expected
// number), broadcasts the item factors Y, each participant solves its own factor in closed form and returns
// its masked, fixed-point gradient with respect to Y, and the server decodes the sum (the masks cancel
// exactly), optionally adds Gaussian noise (DP), divides by the expected number of participants and steps Y
// with Adam or SGD. User factors never leave their client; after the last round every client solves its
// factor against the final Y (as a device would before recommending), and the model keeps those rows so
// that it scores like any factor model. Fold-in is the same closed-form client solve.
//
// DP (dp=true, dp_noise > 0 or dp_epsilon > 0): each client scales its update to L2 norm <= dp_clip, the
// server adds N(0, (dp_noise * dp_clip)^2) to every coordinate of the decoded sum, and the accountant gives ε
// for q and steps = rounds (the sampled Gaussian mechanism, as DP-SGD). The guarantee (user-level, on the
// released item factors) is stored under "privacy" in the manifest; what it does and does not cover is in
// docs/PRIVACY.md.
//
// Rounds with fewer than two participants are skipped under secure aggregation (a sum of one update is that
// update); their count is recorded. Every random draw comes from a stream named by (seed, round[, client]),
// and updates are summed as integers modulo 2^64, so the fit is bitwise independent of the thread count and
// of secure_agg (the masks cancel exactly).
#include "models/fcf.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <mutex>

#include "models/factor_model.h"
#include "xdrec/privacy.h"
#include "xdrec/recommender.h"

namespace xdrec {
namespace fcf {

namespace {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

}  // namespace

void encode_error(double v, double bound) {
  if (!std::isfinite(v)) throw Error("fcf: an update has a non-finite value");
  throw Error("fcf secure aggregation: an update value " + std::to_string(v) +
              " is outside the fixed-point range +-" + std::to_string(bound) +
              " (2^31 / participants); clip the updates (dp_clip) or lower lr");
}

double decode(uint64_t s) {
  return double(int64_t(s)) / kFixedScale;
}

uint64_t pair_seed(uint64_t mask_seed, uint64_t round, uint32_t a, uint32_t b) {
  const uint64_t lo = std::min(a, b), hi = std::max(a, b);
  return mix64(mix64(mix64(mask_seed + kGolden * (round + 1)) + lo) + (hi << 32 | lo));
}

void apply_mask(uint64_t seed, bool add, std::span<uint64_t> out) {
  uint64_t z = seed;
  if (add) {
    for (uint64_t& o : out) o += mix64(z += kGolden);
  } else {
    for (uint64_t& o : out) o -= mix64(z += kGolden);
  }
}

std::vector<size_t> mask_partners(size_t position, size_t participants, size_t peers) {
  check(position < participants, "fcf: a participant's position is out of range");
  std::vector<size_t> out;
  if (2 * peers + 1 >= participants) {
    for (size_t p = 0; p < participants; ++p)
      if (p != position) out.push_back(p);
    return out;
  }
  for (size_t d = 1; d <= peers; ++d) {
    out.push_back((position + d) % participants);
    out.push_back((position + participants - d) % participants);
  }
  std::sort(out.begin(), out.end());
  return out;
}

double client_loss(const mf::Factors& y, const mf::IalsRow& row, float alpha, float reg, const float* x) {
  const size_t f = y.f;
  auto dot = [&](uint32_t i) {
    double d = 0;
    for (size_t k = 0; k < f; ++k) d += double(x[k]) * double(y.row(i)[k]);
    return d;
  };
  double loss = 0, xx = 0;
  for (size_t k = 0; k < f; ++k) xx += double(x[k]) * double(x[k]);
  for (uint32_t i = 0; i < y.rows; ++i) loss += dot(i) * dot(i);  // c = 1, p = 0
  for (size_t e = 0; e < row.n; ++e) {
    if (row.val[e] == 0.0f) continue;
    float w, b;
    mf::ials_entry(row.val[e], alpha, w, b);
    const double c = 1.0 + double(w), p = double(b) / c, d = dot(row.idx[e]);
    loss += c * (p - d) * (p - d) - d * d;
  }
  return loss + double(reg) * xx;
}

ClientStats client_gradient(const mf::Factors& y, const mf::IalsRow& row, float alpha, float reg,
                            const float* x, std::span<float> grad) {
  const size_t f = y.f;
  check(grad.size() == y.rows * f, "fcf: the gradient buffer has the wrong size");
  // d_i = x . y_i; coef_i = 2 (c_i d_i - c_i p_i): 2 d_i for every item, plus 2 (w_j d_j - b_j) on the
  // user's entries.
  std::vector<float> d(y.rows), coef(y.rows);
  ClientStats s;
  for (uint32_t i = 0; i < y.rows; ++i) {
    d[i] = mf::dot(x, y.row(i), y.ld);
    coef[i] = 2.0f * d[i];
    s.loss += double(d[i]) * double(d[i]);
  }
  for (size_t e = 0; e < row.n; ++e) {
    if (row.val[e] == 0.0f) continue;
    float w, b;
    mf::ials_entry(row.val[e], alpha, w, b);
    const uint32_t j = row.idx[e];
    coef[j] += 2.0f * (w * d[j] - b);
    const double c = 1.0 + double(w), p = double(b) / c;
    s.loss += c * (p - d[j]) * (p - d[j]) - double(d[j]) * double(d[j]);
  }
  double cc = 0, xx = 0;
  for (size_t k = 0; k < f; ++k) xx += double(x[k]) * double(x[k]);
  for (uint32_t i = 0; i < y.rows; ++i) {
    cc += double(coef[i]) * double(coef[i]);
    float* g = grad.data() + size_t(i) * f;
    for (size_t k = 0; k < f; ++k) g[k] = coef[i] * x[k];
  }
  s.loss += double(reg) * xx;
  s.sq_norm = cc * xx;
  return s;
}

float Client::reg(const ClientOptions& o) const {
  if (o.reg_exponent == 0.0f) return o.reg;
  size_t n = 0;
  for (size_t e = 0; e < row_.n; ++e) n += row_.val[e] != 0.0f;
  return float(double(o.reg) * std::pow(1.0 + double(n), double(o.reg_exponent)));
}

void Client::solve(const mf::Factors& y, const mf::AlignedFloats& gram, const ClientOptions& o,
                   mf::CholScratch& chol) {
  check(x_.size() == y.ld, "fcf: the client's factor has the wrong width");
  try {
    mf::ials_exact_solve(gram.data(), reg(o), y.data.data(), y.ld, y.f, row_, o.alpha, x_.data(), chol);
  } catch (const Error& e) {
    throw Error(std::string("fcf client solve: ") + e.what() +
                "; the item factors may have diverged (lower lr)");
  }
}

Client::Report Client::update(const Broadcast& b, size_t position, const ClientOptions& o,
                              std::span<uint64_t> out, std::span<float> grad, mf::CholScratch& chol) {
  const mf::Factors& y = *b.items;
  check(position < b.participants.size() && b.participants[position] == id_,
        "fcf: the client is not at that position among the participants");
  check(out.size() == y.rows * y.f, "fcf: the update buffer has the wrong size");
  solve(y, *b.gram, o, chol);
  const ClientStats st = client_gradient(y, row_, o.alpha, reg(o), x_.data(), grad);
  Report r;
  r.loss = st.loss;
  r.norm = std::sqrt(st.sq_norm);
  double scale = 1.0;
  if (o.clip > 0 && r.norm > o.clip) {
    scale = o.clip / r.norm;
    r.clipped = true;
  }
  const double bound = kSumBound / double(b.participants.size());
  for (size_t k = 0; k < out.size(); ++k) out[k] = encode(scale * double(grad[k]), bound);
  if (o.secure) {
    for (size_t p : mask_partners(position, b.participants.size(), o.peers)) {
      const uint32_t other = b.participants[p];
      apply_mask(pair_seed(o.mask_seed, b.round, id_, other), id_ < other, out);
    }
  }
  return r;
}

void MaskedSum::add(std::span<const uint64_t> update) {
  check(update.size() == sum_.size(), "fcf: a masked update has the wrong size");
  for (size_t k = 0; k < sum_.size(); ++k) sum_[k] += update[k];
}

std::vector<double> MaskedSum::decode() const {
  std::vector<double> out(sum_.size());
  for (size_t k = 0; k < sum_.size(); ++k) out[k] = fcf::decode(sum_[k]);
  return out;
}

Server::Server(const mf::Factors& init, const std::string& optimiser, double lr, double reg, size_t n_users)
    : y_(init.rows, init.f),
      grad_(init.rows, init.f),
      adam_(optimiser == "adam"),
      lr_(lr),
      reg_(reg),
      n_users_(n_users) {
  check(optimiser == "adam" || optimiser == "sgd", "fcf: unknown optimiser '" + optimiser + "'");
  for (size_t i = 0; i < init.rows; ++i)
    std::copy(init.row(i), init.row(i) + init.f, y_.data.data() + i * init.f);
  nn::AdamOptions ao;
  ao.lr = lr;
  if (adam_) opt_ = nn::Adam<float>({&y_}, ao);
}

void Server::step(const MaskedSum& sum, double noise_sd, double denominator, Rng& noise) {
  check(sum.dim() == y_.data.size(), "fcf: the round's sum has the wrong size");
  check(denominator > 0, "fcf: the denominator must be positive");
  std::vector<double> g = sum.decode();
  privacy::add_gaussian_noise(g, noise_sd, noise);
  const double inv = 1.0 / denominator, decay = 2.0 * reg_ / double(n_users_);
  for (size_t k = 0; k < g.size(); ++k) grad_.data[k] = float(g[k] * inv + decay * double(y_.data[k]));
  if (adam_) {
    opt_.step({grad_});
  } else {
    for (size_t k = 0; k < g.size(); ++k) y_.data[k] -= float(lr_) * grad_.data[k];
  }
  for (float v : y_.data)
    if (!std::isfinite(v)) throw Error("fcf: the item factors diverged (a non-finite value); lower lr");
}

void Server::publish(mf::Factors& items) const {
  check(items.rows == y_.rows && items.f == y_.cols, "fcf: the broadcast buffer has the wrong shape");
  for (size_t i = 0; i < y_.rows; ++i)
    std::copy(y_.data.data() + i * y_.cols, y_.data.data() + (i + 1) * y_.cols, items.row(i));
}

}  // namespace fcf

namespace {

constexpr uint64_t kItemStream = uint64_t(1) << 40;        // + item: initial item factors (as iALS)
constexpr uint64_t kSampleStream = uint64_t(6) << 56;      // + round: which clients a round samples
constexpr uint64_t kNoiseStream = uint64_t(7) << 56;       // + round: the round's Gaussian noise
constexpr uint64_t kMaskSeedSalt = 0x6663662d6d61736bull;  // "fcf-mask": the simulated pair keys' root

class FcfModel final : public models::FactorModel {
 public:
  explicit FcfModel(const Spec& spec) : params_("fcf") {
    params_.add("factors", &factors_, 32, 1, mf::kMaxFactors, "number of latent factors")
        .add("rounds", &rounds_, 100, 0, 10000000, "federated rounds (server steps)")
        .add("clients", &clients_, 100, 1, 1 << 30,
             "expected clients per round: each user takes part with probability q = clients / users "
             "(Poisson sampling)")
        .add("lr", &lr_, 0.05, 1e-9, 1e6, "server learning rate")
        .add("optimiser", &optimiser_, "adam", {"adam", "sgd"}, "server optimiser of the item factors")
        .add("reg", &reg_, 3.0, 1e-9, 1e6,
             "L2 weight of a user factor (client solve) and of the item factors")
        .add("reg_exponent", &reg_exponent_, 0.5, 0.0, 2.0,
             "a client with n entries weighs its factor by reg*(1+n)^reg_exponent (the items keep reg: the "
             "server does not know their counts)")
        .add("alpha", &alpha_, 2.0, 0.0, 1e6, "confidence of an observed entry: c = 1 + alpha*|value|")
        .add("init", &init_, 0.1, 0.0, 10.0, "standard deviation of the normal initial item factors")
        .add("secure_agg", &secure_, true,
             "mask the updates pairwise in fixed point modulo 2^64 (simulated secure aggregation)")
        .add("mask_peers", &peers_, 4, 1, 1 << 20,
             "secure aggregation: partners on each side of the ring of a round's participants")
        .add("dp", &dp_, false,
             "clip each client's update to dp_clip (on by itself with dp_noise or dp_epsilon)")
        .add("dp_noise", &dp_noise_, 0.0, 0.0, 1e4, "noise multiplier sigma: noise sd / dp_clip (0: none)")
        .add("dp_clip", &dp_clip_, 1.0, 1e-9, 1e30, "L2 bound of one client's update in a round")
        .add("dp_delta", &dp_delta_, 1e-5, 1e-300, 0.5, "the delta of the (epsilon, delta) guarantee")
        .add("dp_epsilon", &dp_epsilon_, 0.0, 0.0, 1e6,
             "target epsilon; > 0 picks the smallest noise that reaches it (overrides dp_noise)")
        .add("seed", &seed_, 0, 0, INT_MAX, "random seed (0: the fit context's seed)");
    params_.apply(spec.values);
  }

  std::string param_help() const { return params_.help(); }
  ModelCost estimate_cost(const DataShape& s) const {
    const uint64_t ld = model_util::padded_floats(uint64_t(factors_));
    const uint64_t dim = s.n_items * uint64_t(factors_);
    ModelCost c;
    // Factors, the server's copy, gradient and Adam moments, the Gram matrix, and per block of clients the
    // update, its float gradient and a partial sum (a few blocks at a time).
    c.bytes = (s.n_users + s.n_items) * ld * 4 + dim * 4 * 4 + ld * ld * 4 + 8 * dim * 20 +
              model_util::csr_bytes(s.n_users, s.nnz) + model_util::score_batch_bytes(s);
    const double per_client =
        double(dim) * (8 + (secure_ ? 2.0 * peers_ * 4 : 0)) + double(factors_) * factors_ * factors_ / 3;
    const double expected = std::min<double>(double(clients_), double(s.n_users));
    c.seconds =
        double(rounds_) * (expected * per_client + double(s.nnz) / std::max<double>(1, s.n_users)) / 1e9;
    c.note = "rounds x clients x items x factors (updates and masks)";
    return c;
  }
  std::string name() const override { return "fcf"; }
  std::string spec() const override { return name() + ":" + params_.current(); }
  std::map<std::string, std::vector<double>> training_curves() const override {
    if (curve_.empty()) return {};
    return {{"loss", curve_}};
  }

  void fit(const Csr& user_items, const FitContext& ctx) override {
    model_util::check_interactions(user_items, "fcf");
    const int threads = resolve_threads(ctx.threads);
    const uint64_t seed = seed_ != 0 ? uint64_t(seed_) : ctx.seed;
    const uint32_t nu = user_items.n_rows, ni = user_items.n_cols;
    check(nu > 0 && ni > 0, "fcf: the data has no users or no items");
    const size_t f = size_t(factors_), dim = size_t(ni) * f;
    const double q = std::min(1.0, double(clients_) / double(nu));
    const int64_t steps = rounds_;
    double sigma = dp_noise_;
    if (dp_epsilon_ > 0 && steps > 0) sigma = privacy::noise_for_epsilon(q, steps, dp_delta_, dp_epsilon_);
    const bool dp = dp_active();
    curve_.clear();
    privacy_ = nlohmann::json();

    mf::Factors items;
    items.resize(ni, f);
    items.init_normal(seed, kItemStream, float(init_), threads);
    fcf::Server server(items, optimiser_, lr_, reg_, nu);
    std::vector<fcf::Client> clients;
    clients.reserve(nu);
    for (uint32_t u = 0; u < nu; ++u)
      clients.emplace_back(
          u,
          mf::IalsRow{user_items.indices.data() + user_items.indptr[u],
                      user_items.values.data() + user_items.indptr[u], user_items.row_size(u)},
          items.ld);
    fcf::ClientOptions co = client_options();
    co.clip = dp ? dp_clip_ : 0.0;
    co.secure = secure_;
    co.peers = size_t(peers_);
    co.mask_seed = mix_seed(seed);

    mf::AlignedFloats gram;
    double bytes_down = 0, bytes_up = 0, bytes_sparse = 0, participants_total = 0;
    size_t clipped = 0, contributions = 0, skipped = 0, done = 0;
    std::mutex mu;
    Timer timer;
    if (ctx.progress) ctx.progress(0, size_t(rounds_), "fcf rounds");
    for (int64_t round = 0; round < steps; ++round) {
      Rng sampler(seed, kSampleStream + uint64_t(round));
      std::vector<uint32_t> part;
      for (uint32_t u = 0; u < nu; ++u)
        if (q >= 1.0 || sampler.uniform() < q) part.push_back(u);
      if (part.empty() || (secure_ && part.size() < 2)) {
        ++skipped;
        continue;
      }
      // Threads pay off only for rounds with much work (waking them costs more than a small round's work);
      // the result is the same for any count.
      const int round_threads = double(part.size()) * double(dim) >= 4e6 ? threads : 1;
      mf::gram(items, gram, round_threads);
      const fcf::Broadcast b{uint64_t(round), &items, &gram, part};
      fcf::MaskedSum total(dim);
      std::vector<fcf::Client::Report> reports(part.size());
      const size_t grain =
          std::max<size_t>(1, (part.size() + 4 * size_t(round_threads) - 1) / (4 * size_t(round_threads)));
      parallel_for(part.size(), round_threads, grain, [&](size_t lo, size_t hi) {
        fcf::MaskedSum partial(dim);
        std::vector<uint64_t> out(dim);
        std::vector<float> grad(dim);
        mf::CholScratch chol(f);
        for (size_t k = lo; k < hi; ++k) {
          reports[k] = clients[part[k]].update(b, k, co, out, grad, chol);
          partial.add(out);  // what the server receives: masked words
        }
        std::lock_guard lock(mu);
        total.merge(partial);  // exact in any order (addition modulo 2^64)
      });
      Rng noise(seed, kNoiseStream + uint64_t(round));
      server.step(total, dp ? sigma * dp_clip_ : 0.0, q * double(nu), noise);
      server.publish(items);
      double loss = 0;
      for (size_t k = 0; k < part.size(); ++k) {
        loss += reports[k].loss;
        clipped += reports[k].clipped;
        const double n_u = double(user_items.row_size(part[k]));
        bytes_sparse += 4.0 * (double(f * (f + 1) / 2) + n_u * double(f) + n_u);
      }
      curve_.push_back(loss / double(part.size()));
      contributions += part.size();
      participants_total += double(part.size());
      bytes_down += double(part.size()) * double(dim) * 4.0;
      bytes_up += double(part.size()) * double(dim) * 8.0;
      ++done;
      if (ctx.verbose && (round + 1) % std::max<int64_t>(1, steps / 10) == 0)
        std::fprintf(stderr, "fcf round %lld/%lld: %zu clients, mean client loss %.4f, %.2f s\n",
                     (long long)round + 1, (long long)steps, part.size(), curve_.back(), timer.seconds());
      if (ctx.progress) ctx.progress(size_t(round) + 1, size_t(rounds_), "fcf rounds");
    }
    // Every client's own factor against the final item factors (on the device, before it recommends).
    users_.resize(nu, f);
    items_ = std::move(items);
    item_gram_valid_ = false;
    const mf::AlignedFloats& g = item_gram();
    parallel_for(nu, threads, 64, [&](size_t lo, size_t hi) {
      mf::CholScratch chol(f);
      for (size_t u = lo; u < hi; ++u) {
        clients[u].solve(items_, g, co, chol);
        std::copy(clients[u].factor().begin(), clients[u].factor().end(), users_.row(u));
      }
    });
    const double per = done ? 1.0 / double(done) : 0.0;
    federated_ = {
        {"rounds", rounds_},
        {"rounds_aggregated", done},
        {"rounds_skipped", skipped},
        {"sampling", "poisson"},
        {"q", q},
        {"clients_per_round", participants_total * per},
        {"secure_agg", secure_},
        {"mask_partners", secure_ ? std::min<double>(2.0 * peers_, participants_total * per - 1) : 0.0},
        {"fixed_point", {{"modulus", "2^64"}, {"scale", "2^32"}, {"sum_bound", "2^31"}}},
        {"bytes_down_per_round", bytes_down * per},
        {"bytes_up_per_round", bytes_up * per},
        {"bytes_up_sparse_unmasked_per_round", bytes_sparse * per},
        {"bytes_down_per_client", double(dim) * 4.0},
        {"bytes_up_per_client", double(dim) * 8.0},
        {"fit_seconds", timer.seconds()}};
    if (dp) {
      nlohmann::json pj = {
          {"unit", "user"},
          {"mechanism", "federated"},
          {"noise", sigma},
          {"clip", dp_clip_},
          {"delta", dp_delta_},
          {"q", q},
          {"steps", steps},
          {"expected_users_per_step", q * double(nu)},
          {"conversion", "classic"},
          {"clipped_fraction", contributions ? double(clipped) / double(contributions) : 0.0},
          {"protected", "the item factors of every round (user-level); not each user's own factor"}};
      if (sigma > 0 && steps > 0) {
        const privacy::Epsilon e = privacy::compute_epsilon(q, sigma, steps, dp_delta_);
        pj["epsilon"] = e.epsilon;
        pj["order"] = e.order;
      } else {
        pj["epsilon"] = steps > 0 ? nlohmann::json("inf") : nlohmann::json(0.0);
      }
      if (dp_epsilon_ > 0) pj["target_epsilon"] = dp_epsilon_;
      privacy_ = pj;
    }
    if (ctx.verbose) {
      std::fprintf(stderr,
                   "fcf: %zu rounds, %.1f clients per round, %.3g MB down and %.3g MB up per round "
                   "(%.3g MB unmasked sparse), %.2f s\n",
                   done, participants_total * per, bytes_down * per / 1e6, bytes_up * per / 1e6,
                   bytes_sparse * per / 1e6, timer.seconds());
      if (dp)
        std::fprintf(stderr, "fcf DP: epsilon %s at delta %g (noise %.6g, clip %g, q %.6g, %lld rounds)\n",
                     privacy_["epsilon"].dump().c_str(), dp_delta_, sigma, dp_clip_, q, (long long)steps);
    }
  }

  void save(TensorMap& tensors, nlohmann::json& extra) const override {
    save_factors(tensors, "user_factors", "item_factors");
    extra["factors"] = factors_;
    if (!federated_.is_null()) extra["federated"] = federated_;
    if (!privacy_.is_null()) extra["privacy"] = privacy_;
  }
  std::vector<std::string> compressible_tensors() const override { return {"user_factors", "item_factors"}; }

  void load(const TensorMap& tensors, const nlohmann::json& extra) override {
    load_factors(tensors, "user_factors", "item_factors", size_t(factors_),
                 "factors=" + std::to_string(factors_));
    federated_ = extra.contains("federated") ? extra.at("federated") : nlohmann::json();
    privacy_ = extra.contains("privacy") ? extra.at("privacy") : nlohmann::json();
    item_gram_valid_ = false;
  }

 protected:
  // Fold-in: the client's closed-form solve against the fixed item factors.
  void solve_user(const model_util::History& hist, float* x) override {
    fcf::Client c(0, mf::IalsRow{hist.items.data(), hist.weights.data(), hist.items.size()}, items_.ld);
    mf::CholScratch chol(items_.f);
    c.solve(items_, item_gram(), client_options(), chol);
    std::copy(c.factor().begin(), c.factor().end(), x);
  }

 private:
  bool dp_active() const { return dp_ || dp_noise_ > 0 || dp_epsilon_ > 0; }
  fcf::ClientOptions client_options() const {
    fcf::ClientOptions o;
    o.alpha = float(alpha_);
    o.reg = float(reg_);
    o.reg_exponent = float(reg_exponent_);
    return o;
  }
  static uint64_t mix_seed(uint64_t seed) {
    Rng r(seed ^ kMaskSeedSalt, 0);
    return r();
  }
  const mf::AlignedFloats& item_gram() const {
    std::lock_guard lock(gram_mu_);
    if (!item_gram_valid_) {
      mf::gram(items_, item_gram_, 1);
      item_gram_valid_ = true;
    }
    return item_gram_;
  }

  ParamSet params_;
  int factors_ = 32, rounds_ = 100, clients_ = 100, peers_ = 4, seed_ = 0;
  double lr_ = 0.05, reg_ = 3.0, reg_exponent_ = 0.5, alpha_ = 2.0, init_ = 0.1;
  std::string optimiser_ = "adam";
  bool secure_ = true, dp_ = false;
  double dp_noise_ = 0, dp_clip_ = 1.0, dp_delta_ = 1e-5, dp_epsilon_ = 0;
  std::vector<double> curve_;
  nlohmann::json federated_, privacy_;
  mutable mf::AlignedFloats item_gram_;
  mutable bool item_gram_valid_ = false;
  mutable std::mutex gram_mu_;
};

}  // namespace

XDREC_REGISTER_MODEL(fcf,
                     "federated collaborative filtering: clients solve their own factors, the server sums "
                     "their masked item-factor gradients (FedAvg-style rounds, optional DP)",
                     FcfModel,
                     {.uses_text = false,
                      .thread_independent = true,
                      .personalised = true,
                      .fold_in = true,
                      .add_item = false,
                      .profile = false,
                      .rating = false,
                      .distributed = false});

}  // namespace xdrec
