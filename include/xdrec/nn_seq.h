// The sequence-model training kit: layer norm, GELU, causal multi-head self-attention over packed sequences,
// a pre-norm transformer block, a sampled softmax loss over shared candidates, gradient clipping and a
// warm-up learning-rate schedule. Every layer has a backward pass, checked against finite differences in the
// tests (templated on the scalar type like nn.h: float for training, double for the checks).
//
// Packed sequences: a batch of sequences is one matrix of rows (tokens) with offsets (n_sequences + 1
// entries, offsets[0] = 0, offsets.back() = rows); no padding. Attention never crosses a sequence boundary
// and a token attends to itself and the tokens before it. A row's result depends only on its own sequence,
// never on the other sequences of the batch, so a sequence scored alone gets what it gets inside a batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/nn.h"

namespace xdrec::nn {

// ---- Layer norm -----------------------------------------------------------------------------------------

// y = gamma * (x - mean) / sqrt(var + eps) + beta over each row (biased variance).
template <class T>
struct LayerNorm {
  Mat<T> gamma, beta;  // 1 x d
  double eps = 1e-6;

  struct Cache {
    Mat<T> xhat;            // normalised input
    std::vector<T> rstd;    // 1 / sqrt(var + eps) per row
  };
  void init(size_t d);
  size_t dim() const { return gamma.cols; }
  // c may be null (inference).
  void forward(const Mat<T>& x, Mat<T>& y, Cache* c) const;
  // dx = dL/dx (resized); ggamma, gbeta (1 x d) accumulate.
  void backward(const Mat<T>& dy, const Cache& c, Mat<T>& ggamma, Mat<T>& gbeta, Mat<T>& dx) const;
};

// ---- GELU -----------------------------------------------------------------------------------------------

// y = z * Phi(z) (the exact form, with erf).
template <class T>
void gelu_forward(const T* z, T* y, size_t n);
// dz = dy * (Phi(z) + z * phi(z)), in place over d (which holds dy on entry).
template <class T>
void gelu_backward(const T* z, T* d, size_t n);

// Feed-forward activations of the transformer block.
enum class FfAct { relu, gelu };
FfAct parse_ff_act(const std::string& name);  // "relu" or "gelu"; Error otherwise

// ---- Causal multi-head self-attention ---------------------------------------------------------------------

template <class T>
struct CausalSelfAttention {
  Linear<T> qkv;  // d -> 3d: queries, keys, values (heads are consecutive column blocks of each)
  Linear<T> out;  // d -> d
  size_t heads = 1;
  double dropout = 0.0;  // on the attention probabilities, in training

  struct Cache {
    Mat<T> qkv;                   // rows x 3d
    Mat<T> ctx;                   // rows x d: the heads' outputs, concatenated
    std::vector<T> probs;         // per sequence, per head, the lower triangle of n x n (row-major, full n x n)
    std::vector<T> mask;          // dropout multipliers of probs (empty without dropout)
    std::vector<size_t> offset;   // start of each sequence's block in probs
  };

  void init(size_t d, size_t heads, Rng& rng);
  size_t dim() const { return out.out_dim(); }
  // x: rows x d packed sequences. rng null: no dropout.
  void forward(const Mat<T>& x, std::span<const uint32_t> offsets, Mat<T>& y, Cache& c, Rng* rng) const;
  // Gradients in order (qkv.w, qkv.b, out.w, out.b) accumulate into g[0..3]; dx = dL/dx (resized).
  void backward(const Mat<T>& x, std::span<const uint32_t> offsets, const Cache& c, const Mat<T>& dy,
                std::span<Mat<T>> g, Mat<T>& dx) const;
};

// ---- Transformer block ------------------------------------------------------------------------------------

// Pre-norm block: h = x + drop(attn(ln1(x))); y = h + drop(ff2(drop(act(ff1(ln2(h)))))).
template <class T>
struct TransformerBlock {
  LayerNorm<T> ln1, ln2;
  CausalSelfAttention<T> attn;
  Linear<T> ff1, ff2;
  FfAct act = FfAct::gelu;
  double dropout = 0.0;  // residual-branch and feed-forward dropout

  struct Cache {
    typename LayerNorm<T>::Cache ln1, ln2;
    typename CausalSelfAttention<T>::Cache attn;
    Mat<T> a, att, h, b, f1, g, f2;  // intermediate values (see the formula above)
    Dropout<T> d_att, d_g, d_f2;
  };

  static constexpr size_t kParams = 12;
  // d model width, ff hidden width, heads, attention-probability dropout.
  void init(size_t d, size_t ff, size_t heads, double attn_dropout, Rng& rng);
  size_t dim() const { return ln1.dim(); }
  void forward(const Mat<T>& x, std::span<const uint32_t> offsets, Mat<T>& y, Cache& c, Rng* rng) const;
  // g: kParams gradient buffers in params() order; dx = dL/dx (resized).
  void backward(const Mat<T>& x, std::span<const uint32_t> offsets, const Cache& c, const Mat<T>& dy,
                std::span<Mat<T>> g, Mat<T>& dx) const;
  // ln1.gamma, ln1.beta, qkv.w, qkv.b, out.w, out.b, ln2.gamma, ln2.beta, ff1.w, ff1.b, ff2.w, ff2.b
  std::vector<Mat<T>*> params();
  std::vector<const Mat<T>*> params() const;
};

// ---- Sampled softmax ----------------------------------------------------------------------------------------

// For each query row q: softmax cross-entropy of logits [<h_q, pos_q>, <h_q, cand_1>, ..., <h_q, cand_N>],
// the positive first; a candidate whose id equals the query's positive id is left out of that row (it is
// the positive). Returns the sum of the rows' losses, each multiplied by `scale`. Gradients (of the scaled
// sum) go to dh, dpos (rows x d) and dcand (N x d); each may be null; they are overwritten, not accumulated.
template <class T>
T sampled_softmax(const Mat<T>& h, const Mat<T>& pos, const Mat<T>& cand, std::span<const uint32_t> pos_ids,
                  std::span<const uint32_t> cand_ids, T scale, Mat<T>* dh, Mat<T>* dpos, Mat<T>* dcand);

// Binary cross-entropy of <h_q, pos_q> as a positive and <h_q, neg_q> as a negative (one negative per row),
// SASRec's original objective. Same conventions as sampled_softmax.
template <class T>
T pairwise_bce(const Mat<T>& h, const Mat<T>& pos, const Mat<T>& neg, T scale, Mat<T>* dh, Mat<T>* dpos,
               Mat<T>* dneg);

// ---- Optimisation helpers -------------------------------------------------------------------------------------

// Scales every gradient so that their joint L2 norm is at most max_norm (max_norm <= 0: no clipping).
// Returns the norm before clipping.
template <class T>
double clip_grad_norm(std::span<Mat<T>> grads, double max_norm);

// Learning rate at optimiser step `step` (0-based): linear warm-up from base/warmup to base over `warmup`
// steps, then constant (decay = false) or linear decay to 0 at total_steps (decay = true).
double scheduled_lr(double base, int64_t step, int64_t warmup, int64_t total_steps, bool decay);

}  // namespace xdrec::nn
