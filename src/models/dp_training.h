// The user-level DP-SGD bookkeeping shared by the models that train with it (twotower, hybrid): the declared
// dp_* parameters, the plan of a run (sampling rate q, step count, noise multiplier σ — from dp_epsilon
// through the accountant's inverse when a target is given), the Poisson sample of each step, and the
// guarantee reached (RDP accountant, classic conversion, orders 2..256) as the manifest's "privacy" JSON.
// The per-step clipping and noise are privacy::DpAggregator's; what a model releases, and so what it lays
// out in the aggregator, is the model's own (see each model's comment and docs/PRIVACY.md).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/params.h"

namespace xdrec::models {

// The dp, dp_noise, dp_clip, dp_delta, dp_epsilon and dp_users parameters.
struct DpSgdParams {
  bool dp = false;
  double noise = 0, clip = 1.0, delta = 1e-5, epsilon = 0;
  int users = 128;

  void declare(ParamSet& p);
  // DP-SGD training: dp=true, or dp_noise > 0, or dp_epsilon > 0.
  bool active() const { return dp || noise > 0 || epsilon > 0; }
};

// One run: each step samples every user independently with probability q; ceil(epochs / q) steps, so each
// user is seen `epochs` times on average.
struct DpSgdPlan {
  uint32_t n_users = 0;
  double q = 0, sigma = 0;
  int64_t steps = 0;
  size_t steps_per_epoch = 1;
  double expected_users() const { return q * double(n_users); }  // the denominator of a step's mean
  bool epoch_end(int64_t step) const {
    return (size_t(step) + 1) % steps_per_epoch == 0 || step + 1 == steps;
  }
  // The users step `step` samples, ascending (from the stream seed, stream + step).
  std::vector<uint32_t> sample(uint64_t seed, uint64_t stream, int64_t step) const;
};

// q = min(1, dp_users / n_users); σ = dp_noise, or the smallest that reaches dp_epsilon at dp_delta (Error
// when the target cannot be reached). Error when there are no users.
DpSgdPlan plan_dp_sgd(const DpSgdParams& p, uint32_t n_users, int epochs, const std::string& model);

// The guarantee of a finished run: {unit "user", epsilon (a number, "inf" without noise, 0 without steps),
// order, delta, noise, clip, q, steps, expected_users_per_step, conversion, clipped_fraction, protected,
// target_epsilon when one was given}. With `verbose` it also prints one line to stderr.
nlohmann::json dp_sgd_report(const DpSgdParams& p, const DpSgdPlan& plan, size_t clipped,
                             size_t contributions, const std::string& model,
                             const std::string& protected_parameters, bool verbose);

}  // namespace xdrec::models
