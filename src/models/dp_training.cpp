// Shared DP-SGD bookkeeping (dp_training.h).
#include "models/dp_training.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "xdrec/privacy.h"

namespace xdrec::models {

void DpSgdParams::declare(ParamSet& p) {
  p.add("dp", &dp, false,
        "train with user-level DP-SGD (on by itself when dp_noise > 0 or dp_epsilon > 0; with dp_noise=0 it "
        "samples and clips without noise: no guarantee)")
      .add("dp_noise", &noise, 0.0, 0.0, 1e4,
           "DP-SGD noise multiplier sigma: noise standard deviation / dp_clip (0: none)")
      .add("dp_clip", &clip, 1.0, 1e-9, 1e30, "DP-SGD: L2 bound of one user's gradient in a step")
      .add("dp_delta", &delta, 1e-5, 1e-300, 0.5, "DP-SGD: the delta of the (epsilon, delta) guarantee")
      .add("dp_epsilon", &epsilon, 0.0, 0.0, 1e6,
           "DP-SGD: target epsilon; > 0 picks the smallest noise that reaches it (overrides dp_noise)")
      .add("dp_users", &users, 128, 1, 1 << 24,
           "DP-SGD: expected users per step (sampling rate q = dp_users / n_users)");
}

std::vector<uint32_t> DpSgdPlan::sample(uint64_t seed, uint64_t stream, int64_t step) const {
  Rng sampler(seed, stream + uint64_t(step));
  std::vector<uint32_t> out;
  for (uint32_t u = 0; u < n_users; ++u)
    if (sampler.uniform() < q) out.push_back(u);
  return out;
}

DpSgdPlan plan_dp_sgd(const DpSgdParams& p, uint32_t n_users, int epochs, const std::string& model) {
  check(n_users > 0, model + ": DP-SGD needs at least one user");
  DpSgdPlan plan;
  plan.n_users = n_users;
  plan.q = std::min(1.0, double(p.users) / double(n_users));
  plan.steps = epochs <= 0 ? 0 : int64_t(std::ceil(double(epochs) / plan.q - 1e-9));
  plan.steps_per_epoch = size_t(std::ceil(1.0 / plan.q - 1e-9));
  plan.sigma = p.noise;
  if (p.epsilon > 0 && plan.steps > 0)
    plan.sigma = privacy::noise_for_epsilon(plan.q, plan.steps, p.delta, p.epsilon);
  return plan;
}

nlohmann::json dp_sgd_report(const DpSgdParams& p, const DpSgdPlan& plan, size_t clipped,
                             size_t contributions, const std::string& model,
                             const std::string& protected_parameters, bool verbose) {
  nlohmann::json pj = {{"unit", "user"},
                       {"noise", plan.sigma},
                       {"clip", p.clip},
                       {"delta", p.delta},
                       {"q", plan.q},
                       {"steps", plan.steps},
                       {"expected_users_per_step", plan.expected_users()},
                       {"conversion", "classic"},
                       {"clipped_fraction", contributions ? double(clipped) / double(contributions) : 0.0},
                       {"protected", protected_parameters}};
  if (plan.sigma > 0 && plan.steps > 0) {
    const privacy::Epsilon e = privacy::compute_epsilon(plan.q, plan.sigma, plan.steps, p.delta);
    pj["epsilon"] = e.epsilon;
    pj["order"] = e.order;
  } else {
    pj["epsilon"] = plan.steps > 0 ? nlohmann::json("inf") : nlohmann::json(0.0);
  }
  if (p.epsilon > 0) pj["target_epsilon"] = p.epsilon;
  if (verbose)
    std::fprintf(stderr, "%s DP-SGD: epsilon %s at delta %g (noise %.6g, clip %g, q %.6g, %lld steps)\n",
                 model.c_str(), pj["epsilon"].dump().c_str(), p.delta, plan.sigma, p.clip, plan.q,
                 (long long)plan.steps);
  return pj;
}

}  // namespace xdrec::models
