// Text autoencoder (see include/xdrec/autoencoder.h): encoder Linear(d, hidden) + ReLU + Linear(hidden,
// code), decoder the mirror image (hidden = 0: one linear map each way), trained with Adam on minibatches to
// minimise the mean squared reconstruction error of the clean input from an input with entries dropped
// (denoising). Each minibatch is cut into chunks of a fixed size; every chunk's gradient is computed on its
// own (any thread) with its own noise stream and the chunks are added in order, so the result does not depend
// on the thread count.
#include "xdrec/autoencoder.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "xdrec/nn.h"

namespace xdrec {

namespace {

constexpr size_t kChunk = 32;
constexpr uint64_t kShuffleStream = uint64_t(1) << 20;
constexpr uint64_t kNoiseStream = uint64_t(1) << 32;

bool zero_row(const float* x, size_t d) {
  for (size_t j = 0; j < d; ++j)
    if (x[j] != 0.0f) return false;
  return true;
}

}  // namespace

struct TextAutoencoder::State {
  nn::Mlp<float> enc, dec;
};

void TextAutoencoder::fit(const Matrix& x, const AutoencoderOptions& opt) {
  check(opt.code_dim >= 1,
        "autoencoder: code_dim must be at least 1 (got " + std::to_string(opt.code_dim) + ")");
  check(opt.hidden >= 0, "autoencoder: hidden must be >= 0 (got " + std::to_string(opt.hidden) + ")");
  check(opt.noise >= 0.0 && opt.noise < 1.0,
        "autoencoder: noise must be in [0, 1) (got " + std::to_string(opt.noise) + ")");
  check(opt.epochs >= 0, "autoencoder: epochs must be >= 0");
  check(opt.batch >= 1, "autoencoder: batch must be at least 1");
  check(opt.lr > 0.0 && std::isfinite(opt.lr), "autoencoder: lr must be positive");
  check(opt.weight_decay >= 0.0, "autoencoder: weight_decay must be >= 0");
  check(x.cols > 0, "autoencoder: the input vectors have no columns");
  check(x.data.size() == x.rows * x.cols, "autoencoder: the input matrix is inconsistent");
  std::vector<uint32_t> rows;
  for (size_t i = 0; i < x.rows; ++i) {
    const float* r = x.row(i);
    for (size_t j = 0; j < x.cols; ++j)
      check(std::isfinite(r[j]), "autoencoder: input row " + std::to_string(i) + " has a non-finite value");
    if (!zero_row(r, x.cols)) rows.push_back(uint32_t(i));
  }
  check(!rows.empty(), "autoencoder: every input row is zero (no text to learn from)");

  const size_t d = x.cols, code = size_t(opt.code_dim), hidden = size_t(opt.hidden);
  auto st = std::make_shared<State>();
  if (hidden > 0) {
    st->enc = nn::Mlp<float>({d, hidden, code}, nn::Act::relu, nn::Act::identity);
    st->dec = nn::Mlp<float>({code, hidden, d}, nn::Act::relu, nn::Act::identity);
  } else {
    st->enc = nn::Mlp<float>({d, code}, nn::Act::identity, nn::Act::identity);
    st->dec = nn::Mlp<float>({code, d}, nn::Act::identity, nn::Act::identity);
  }
  Rng init_rng(opt.seed, 0);
  st->enc.init(init_rng);
  st->dec.init(init_rng);

  nn::AdamOptions aopt;
  aopt.lr = opt.lr;
  aopt.weight_decay = opt.weight_decay;
  nn::Adam<float> adam_enc(st->enc.params(), aopt), adam_dec(st->dec.params(), aopt);

  const size_t batch = std::min(size_t(opt.batch), rows.size());
  const size_t max_chunks = (batch + kChunk - 1) / kChunk;
  struct ChunkWork {
    nn::MatF clean, noisy;
    nn::Mlp<float>::Cache ce, cd;
    nn::MatF dout, dcode;
    std::vector<nn::MatF> ge, gd;
  };
  std::vector<ChunkWork> work(max_chunks);
  for (auto& w : work) {
    w.ge = st->enc.make_grads();
    w.gd = st->dec.make_grads();
  }
  // Worker threads sleep between the many short minibatch steps (see nn::TaskPool).
  nn::TaskPool pool(resolve_threads(opt.threads));
  std::vector<uint32_t> order = rows;
  uint64_t chunk_counter = 0;
  for (int epoch = 0; epoch < opt.epochs; ++epoch) {
    Rng shuffle(opt.seed, kShuffleStream + uint64_t(epoch));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[shuffle.below(i)]);
    for (size_t b0 = 0; b0 < order.size(); b0 += batch) {
      const size_t b1 = std::min(order.size(), b0 + batch), nb = b1 - b0;
      const size_t n_chunks = (nb + kChunk - 1) / kChunk;
      const uint64_t first_chunk = chunk_counter;
      chunk_counter += n_chunks;
      pool.run(n_chunks, [&](size_t c) {
        {
          ChunkWork& w = work[c];
          const size_t r0 = b0 + c * kChunk, r1 = std::min(b1, r0 + kChunk), m = r1 - r0;
          w.clean.reshape(m, d);
          for (size_t k = 0; k < m; ++k)
            std::copy(x.row(order[r0 + k]), x.row(order[r0 + k]) + d, w.clean.row(k));
          w.noisy = w.clean;
          if (opt.noise > 0.0) {
            Rng noise(opt.seed, kNoiseStream + first_chunk + c);
            nn::Dropout<float> drop;
            drop.rate = opt.noise;
            drop.forward(w.noisy, noise);
          }
          st->enc.forward(w.noisy, w.ce);
          st->dec.forward(w.ce.output(), w.cd);
          nn::squared_error(w.cd.output(), w.clean, &w.dout);
          // The batch loss is the mean over the batch: scale this chunk's mean-gradient by m / nb.
          const float scale = float(m) / float(nb);
          for (auto& v : w.dout.data) v *= scale;
          for (auto& g : w.ge) g.zero();
          for (auto& g : w.gd) g.zero();
          st->dec.backward(w.ce.output(), w.cd, w.dout, w.gd, &w.dcode);
          st->enc.backward(w.noisy, w.ce, w.dcode, w.ge, nullptr);
        }
      });
      for (size_t c = 1; c < n_chunks; ++c) {
        for (size_t k = 0; k < work[0].ge.size(); ++k) nn::add_into(work[0].ge[k], work[c].ge[k]);
        for (size_t k = 0; k < work[0].gd.size(); ++k) nn::add_into(work[0].gd[k], work[c].gd[k]);
      }
      adam_enc.step(work[0].ge);
      adam_dec.step(work[0].gd);
    }
  }
  s_ = std::move(st);
}

bool TextAutoencoder::fitted() const {
  return s_ != nullptr;
}
size_t TextAutoencoder::input_dim() const {
  return s_ ? s_->enc.in_dim() : 0;
}
size_t TextAutoencoder::code_dim() const {
  return s_ ? s_->enc.out_dim() : 0;
}

void TextAutoencoder::encode_row(const float* x, float* code) const {
  check(s_ != nullptr, "autoencoder: not fitted (call fit or load first)");
  s_->enc.predict_row(x, code);
}

Matrix TextAutoencoder::encode(const Matrix& x, int threads) const {
  check(s_ != nullptr, "autoencoder: not fitted (call fit or load first)");
  check(x.cols == input_dim(), "autoencoder encode: vectors have " + std::to_string(x.cols) +
                                   " dimensions but the autoencoder was fitted on " +
                                   std::to_string(input_dim()));
  Matrix out(x.rows, code_dim());
  parallel_for(x.rows, resolve_threads(threads), 256, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) s_->enc.predict_row(x.row(i), out.row(i));
  });
  return out;
}

Matrix TextAutoencoder::reconstruct(const Matrix& x, int threads) const {
  check(s_ != nullptr, "autoencoder: not fitted (call fit or load first)");
  check(x.cols == input_dim(), "autoencoder reconstruct: vectors have " + std::to_string(x.cols) +
                                   " dimensions but the autoencoder was fitted on " +
                                   std::to_string(input_dim()));
  Matrix out(x.rows, x.cols);
  parallel_for(x.rows, resolve_threads(threads), 256, [&](size_t lo, size_t hi) {
    std::vector<float> code(code_dim());
    for (size_t i = lo; i < hi; ++i) {
      s_->enc.predict_row(x.row(i), code.data());
      s_->dec.predict_row(code.data(), out.row(i));
    }
  });
  return out;
}

double TextAutoencoder::reconstruction_error(const Matrix& x, int threads) const {
  const Matrix r = reconstruct(x, threads);
  double total = 0;
  size_t n = 0;
  for (size_t i = 0; i < x.rows; ++i) {
    if (zero_row(x.row(i), x.cols)) continue;
    double e = 0;
    for (size_t j = 0; j < x.cols; ++j) {
      const double dlt = double(x(i, j)) - double(r(i, j));
      e += dlt * dlt;
    }
    total += e;
    ++n;
  }
  return n ? total / double(n) : 0.0;
}

void TextAutoencoder::save(TensorMap& tensors, const std::string& prefix) const {
  check(s_ != nullptr, "autoencoder: cannot save an unfitted autoencoder");
  s_->enc.save(tensors, prefix + "enc.");
  s_->dec.save(tensors, prefix + "dec.");
}

void TextAutoencoder::load(const TensorMap& tensors, const std::string& prefix) {
  auto st = std::make_shared<State>();
  // Layer count and sizes come from the file; a hidden layer means ReLU between the two linear maps.
  nn::Mlp<float> enc, dec;
  enc.load(tensors, prefix + "enc.");
  dec.load(tensors, prefix + "dec.");
  check(enc.n_layers() <= 2 && enc.n_layers() == dec.n_layers(),
        "autoencoder load: encoder has " + std::to_string(enc.n_layers()) + " layers and decoder " +
            std::to_string(dec.n_layers()) + " (expected 1 or 2 each)");
  check(enc.out_dim() == dec.in_dim() && enc.in_dim() == dec.out_dim(),
        "autoencoder load: encoder " + std::to_string(enc.in_dim()) + "->" + std::to_string(enc.out_dim()) +
            " does not match decoder " + std::to_string(dec.in_dim()) + "->" + std::to_string(dec.out_dim()));
  const bool deep = enc.n_layers() == 2;
  std::vector<size_t> es{enc.in_dim()}, ds{dec.in_dim()};
  if (deep) {
    es.push_back(enc.layer(0).out_dim());
    ds.push_back(dec.layer(0).out_dim());
  }
  es.push_back(enc.out_dim());
  ds.push_back(dec.out_dim());
  const nn::Act h = deep ? nn::Act::relu : nn::Act::identity;
  st->enc = nn::Mlp<float>(es, h, nn::Act::identity);
  st->dec = nn::Mlp<float>(ds, h, nn::Act::identity);
  st->enc.load(tensors, prefix + "enc.");
  st->dec.load(tensors, prefix + "dec.");
  s_ = std::move(st);
}

}  // namespace xdrec
