// Federated collaborative filtering (FCF, Ammad-ud-din et al. 2019), simulated in one process: the pieces
// the model `fcf` (fcf.cpp) is built from, public so that the tests can check each one alone.
//
// The objective is implicit ALS's (Hu, Koren & Volinsky 2008): user u's loss over every item i is
//   J_u(x_u, Y) = sum_i c_ui (p_ui - x_u . y_i)^2 + reg ||x_u||^2,
// c_ui = 1 + alpha |r_ui| on the user's entries and 1 elsewhere, p_ui = 1 for r_ui > 0 and 0 otherwise.
// A Client holds its own entries and its own factor x_u; in a round it downloads the item factors Y, solves
// x_u = argmin_x J_u(x, Y) exactly (Cholesky, as iALS's fold-in), and returns the gradient of its loss with
// respect to Y at that x_u,
//   dJ_u / dy_i = 2 (c_ui (x_u . y_i) - c_ui p_ui) x_u      (for every item: the update is dense),
// which is also the gradient of min_x J_u(x, Y) (the envelope theorem: x_u minimises J_u). The update is
// clipped to an L2 norm (with DP), written in fixed point and masked; the Server holds Y, sees only masked
// updates and their sum, and steps Y with the mean gradient.
//
// Secure aggregation (simulated): every value v becomes round(v * 2^32) as a two's-complement integer modulo
// 2^64 (resolution 2^-32 ~ 2.3e-10). Each participant adds, for each partner on the ring of the round's
// participants (sorted by id), a pseudo-random mask of the pair: the lower id adds it, the higher one
// subtracts it, so in the sum modulo 2^64 every mask cancels exactly and the server decodes the exact sum of
// the fixed-point updates. The sum decodes correctly while its absolute value stays below 2^31 per
// coordinate: a client refuses to encode a value of |v| >= 2^31 / participants (an Error, never a silent
// wrap). A pair's mask seed would come from a key agreement between the two clients; here it is derived from
// the model's seed, the round and the pair, and the masks come from a SplitMix64 counter stream — enough to
// show the arithmetic (exact cancellation, a masked update that looks uniform), not a cryptographic PRG.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "models/mf_kernels.h"
#include "xdrec/nn.h"

namespace xdrec::fcf {

// ---- Fixed point and masks --------------------------------------------------------------------------------

constexpr double kFixedScale = 4294967296.0;  // 2^32: one unit of the fixed point is 2^-32
constexpr double kSumBound = 2147483648.0;    // 2^31: |sum of the updates| must stay below this

[[noreturn]] void encode_error(double v, double bound);

// v -> round(v * 2^32) (to nearest, ties to even) modulo 2^64. Error for a non-finite value or |v| >= bound
// (bound <= 2^31).
inline uint64_t encode(double v, double bound) {
  if (!(std::fabs(v) < bound)) [[unlikely]]
    encode_error(v, bound);
  return uint64_t(_mm_cvtsd_si64(_mm_set_sd(v * kFixedScale)));
}
// The two's-complement reading of s, divided by 2^32.
double decode(uint64_t s);

// The mask seed of the pair (a, b) (a != b, order does not matter) in `round`.
uint64_t pair_seed(uint64_t mask_seed, uint64_t round, uint32_t a, uint32_t b);
// out[k] += mask_k (add) or -= mask_k (subtract), modulo 2^64, with mask_k the k-th word of the pair's
// stream.
void apply_mask(uint64_t seed, bool add, std::span<uint64_t> out);
// The positions (in the sorted list of `participants`) the participant at `position` masks with: the `peers`
// before and the `peers` after it on the ring, or every other participant when 2 * peers + 1 >= participants.
// Sorted, without repeats; symmetric (b is a partner of a exactly when a is a partner of b).
std::vector<size_t> mask_partners(size_t position, size_t participants, size_t peers);

// ---- The client's loss
// --------------------------------------------------------------------------------------

// J_u(x, Y) in double precision (x: y.ld floats; entries as an iALS row).
double client_loss(const mf::Factors& y, const mf::IalsRow& row, float alpha, float reg, const float* x);
struct ClientStats {
  double loss = 0;     // J_u(x, Y), from the same float dot products as the gradient
  double sq_norm = 0;  // ||dJ_u / dY||^2
};
// dJ_u / dY at x into grad (y.rows * y.f floats, row-major, unpadded).
ClientStats client_gradient(const mf::Factors& y, const mf::IalsRow& row, float alpha, float reg,
                            const float* x, std::span<float> grad);

// ---- Client and server
// --------------------------------------------------------------------------------------

// What the server sends to a round's participants.
struct Broadcast {
  uint64_t round = 0;
  const mf::Factors* items = nullptr;       // Y
  const mf::AlignedFloats* gram = nullptr;  // Y^T Y (a client could compute it from Y; the same for all)
  std::span<const uint32_t> participants;   // the round's client ids, sorted
};

struct ClientOptions {
  float alpha = 2.0f, reg = 1.0f;
  float reg_exponent = 0.0f;  // a client with n entries uses reg * (1 + n)^reg_exponent (as iALS's users)
  double clip = 0;            // > 0: the update is scaled to L2 norm <= clip
  bool secure = true;         // add the pairwise masks
  size_t peers = 4;           // mask partners on each side of the ring
  uint64_t mask_seed = 0;
};

class Client {
 public:
  // `row`: the client's own entries (they never leave it). The factor starts at zero.
  Client(uint32_t id, const mf::IalsRow& row, size_t ld) : id_(id), row_(row), x_(ld, 0.0f) {}

  struct Report {
    double loss = 0;  // J_u at the solved factor (the client's own; not sent)
    double norm = 0;  // the update's L2 norm before clipping
    bool clipped = false;
  };
  // One round: solves the factor against b.items, writes the clipped update in fixed point, masked when
  // o.secure, into `out` (items * f words). `position`: this client's index in b.participants. Scratch:
  // `grad` (items * f floats) and `chol` (f).
  Report update(const Broadcast& b, size_t position, const ClientOptions& o, std::span<uint64_t> out,
                std::span<float> grad, mf::CholScratch& chol);
  // Solves the factor against Y (the fold-in: the same closed form as in a round).
  void solve(const mf::Factors& y, const mf::AlignedFloats& gram, const ClientOptions& o,
             mf::CholScratch& chol);
  // The L2 weight of this client's factor.
  float reg(const ClientOptions& o) const;
  uint32_t id() const { return id_; }
  const std::vector<float>& factor() const { return x_; }

 private:
  uint32_t id_;
  mf::IalsRow row_;
  std::vector<float> x_;
};

// The server's running sum of masked updates: words added modulo 2^64, so the order does not matter and
// partial sums (one per block of clients) merge exactly.
class MaskedSum {
 public:
  explicit MaskedSum(size_t dim) : sum_(dim, 0) {}
  void add(std::span<const uint64_t> update);
  void merge(const MaskedSum& other) { add(other.sum_); }
  // The decoded sum (the masks cancelled).
  std::vector<double> decode() const;
  size_t dim() const { return sum_.size(); }
  const std::vector<uint64_t>& words() const { return sum_; }

 private:
  std::vector<uint64_t> sum_;
};

// Holds the item factors and the optimiser; sees only the (masked) sum of a round's updates.
class Server {
 public:
  // `optimiser`: "adam" or "sgd". reg: the item factors' L2 weight in the objective sum_u J_u + reg ||Y||^2.
  Server(const mf::Factors& init, const std::string& optimiser, double lr, double reg, size_t n_users);
  // One round: the decoded sum plus N(0, noise_sd^2) per coordinate, divided by `denominator` (the expected
  // number of participants), plus the regulariser's share 2 reg Y / n_users, is the mean gradient per user;
  // the optimiser steps Y with it.
  void step(const MaskedSum& sum, double noise_sd, double denominator, Rng& noise);
  // Writes Y into the padded rows a round broadcasts.
  void publish(mf::Factors& items) const;

 private:
  nn::MatF y_, grad_;
  bool adam_;
  double lr_, reg_;
  size_t n_users_;
  nn::Adam<float> opt_;
};

}  // namespace xdrec::fcf
