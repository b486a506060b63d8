// TextAutoencoder: training lowers the reconstruction error, the denoising variant restores corrupted inputs,
// results are deterministic by seed and independent of the thread count, and save/load round-trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "test_util.h"
#include "xdrec/autoencoder.h"
#include "xdrec/nn.h"

using namespace xdrec;

namespace {

// Rows on a rank-`rank` subspace of R^d (plus a little noise), some rows zero ("no text").
Matrix low_rank(size_t n, size_t d, size_t rank, uint64_t seed) {
  Rng rng(seed);
  Matrix basis(rank, d);
  for (auto& v : basis.data) v = rng.normal();
  Matrix x(n, d);
  for (size_t i = 0; i < n; ++i) {
    if (i % 17 == 5) continue;  // zero row
    std::vector<float> z(rank);
    for (auto& v : z) v = rng.normal();
    for (size_t j = 0; j < d; ++j) {
      double s = 0;
      for (size_t k = 0; k < rank; ++k) s += z[k] * basis(k, j);
      x(i, j) = float(s / std::sqrt(double(d))) + 0.01f * rng.normal();
    }
  }
  return x;
}

AutoencoderOptions small_opts() {
  AutoencoderOptions o;
  o.code_dim = 8;
  o.hidden = 32;
  o.epochs = 40;
  o.batch = 64;
  o.lr = 3e-3;
  o.seed = 5;
  return o;
}

bool same(const Matrix& a, const Matrix& b) {
  return a.rows == b.rows && a.cols == b.cols &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

double mean_sq_norm(const Matrix& x) {
  double t = 0;
  size_t n = 0;
  for (size_t i = 0; i < x.rows; ++i) {
    double s = 0;
    for (size_t j = 0; j < x.cols; ++j) s += double(x(i, j)) * x(i, j);
    if (s > 0) t += s, ++n;
  }
  return t / double(n);
}

}  // namespace

TEST(Autoencoder, TrainingLowersReconstructionError) {
  const Matrix x = low_rank(600, 32, 4, 1);
  for (int hidden : {0, 32}) {
    AutoencoderOptions o = small_opts();
    o.hidden = hidden;
    o.epochs = 0;
    TextAutoencoder untrained;
    untrained.fit(x, o);
    o.epochs = 40;
    TextAutoencoder ae;
    ae.fit(x, o);
    EXPECT_TRUE(ae.fitted());
    EXPECT_EQ(ae.input_dim(), 32u);
    EXPECT_EQ(ae.code_dim(), 8u);
    const double before = untrained.reconstruction_error(x), after = ae.reconstruction_error(x);
    const double energy = mean_sq_norm(x);
    std::printf("hidden=%d: reconstruction error %.5f -> %.5f (mean ||x||^2 %.4f)\n", hidden, before, after,
                energy);
    // The data has rank 4 < code 8: a trained autoencoder keeps most of the signal.
    EXPECT_LT(after, 0.1 * energy);
    EXPECT_LT(after, 0.2 * before);
  }
}

TEST(Autoencoder, DenoisingRestoresCorruptedInputs) {
  const Matrix x = low_rank(800, 32, 3, 2);
  AutoencoderOptions o = small_opts();
  o.noise = 0.3;
  o.epochs = 60;
  TextAutoencoder ae;
  ae.fit(x, o);
  // Corrupt held-out rows from the same subspace the way training does (drop 30%, rescale the rest).

  const Matrix test = low_rank(1000, 32, 3, 2);  // same basis (same seed); rows 800+ were not trained on
  Matrix held(200, 32), corrupt(200, 32);
  for (size_t i = 0; i < 200; ++i)
    for (size_t j = 0; j < 32; ++j) held(i, j) = test(800 + i, j);
  Rng rng(99);
  for (size_t k = 0; k < held.data.size(); ++k)
    corrupt.data[k] = rng.uniform() < 0.3 ? 0.0f : held.data[k] / 0.7f;
  const Matrix rec = ae.reconstruct(corrupt);
  double err_rec = 0, err_corrupt = 0;
  size_t n = 0;
  for (size_t i = 0; i < held.rows; ++i) {
    double s = 0;
    for (size_t j = 0; j < 32; ++j) s += std::fabs(held(i, j));
    if (s == 0) continue;
    ++n;
    for (size_t j = 0; j < 32; ++j) {
      err_rec += std::pow(double(rec(i, j)) - held(i, j), 2);
      err_corrupt += std::pow(double(corrupt(i, j)) - held(i, j), 2);
    }
  }
  err_rec /= double(n);
  err_corrupt /= double(n);
  const double energy = mean_sq_norm(held);
  std::printf("denoising: corrupted input error %.5f, reconstruction error %.5f, ||x||^2 %.5f\n", err_corrupt,
              err_rec, energy);
  EXPECT_LT(err_rec, 0.5 * err_corrupt);
  EXPECT_LT(err_rec, 0.5 * energy);  // far better than predicting zeros
}

TEST(Autoencoder, DeterministicAndThreadIndependent) {
  const Matrix x = low_rank(300, 24, 4, 3);
  AutoencoderOptions o = small_opts();
  o.noise = 0.2;
  o.epochs = 5;
  TextAutoencoder a, b, c, d;
  a.fit(x, o);
  b.fit(x, o);
  o.threads = 2;
  c.fit(x, o);
  o.threads = 3;
  d.fit(x, o);
  const Matrix ea = a.encode(x);
  EXPECT_TRUE(same(ea, b.encode(x)));
  EXPECT_TRUE(same(ea, c.encode(x)));
  EXPECT_TRUE(same(ea, d.encode(x)));
  EXPECT_TRUE(same(ea, a.encode(x, 2)));
  o.seed = 6;
  o.threads = 1;
  TextAutoencoder e;
  e.fit(x, o);
  EXPECT_FALSE(same(ea, e.encode(x)));
  // encode_row agrees with the batch.
  std::vector<float> code(8);
  a.encode_row(x.row(7), code.data());
  EXPECT_EQ(std::memcmp(code.data(), ea.row(7), 8 * sizeof(float)), 0);
}

TEST(Autoencoder, SaveLoadRoundTrip) {
  const Matrix x = low_rank(200, 16, 3, 4);
  for (int hidden : {0, 16}) {
    AutoencoderOptions o = small_opts();
    o.hidden = hidden;
    o.epochs = 3;
    TextAutoencoder a;
    a.fit(x, o);
    TensorMap t;
    a.save(t, "text.ae.");
    for (auto& [name, tensor] : t) EXPECT_EQ(name.rfind("text.ae.", 0), 0u) << name;
    TextAutoencoder b;
    b.load(t, "text.ae.");
    EXPECT_TRUE(same(a.encode(x), b.encode(x)));
    EXPECT_TRUE(same(a.reconstruct(x), b.reconstruct(x)));
    EXPECT_THROW(b.load(t, "other."), Error);
    TensorMap broken = t;
    broken.erase("text.ae.dec.w0");
    EXPECT_THROW(TextAutoencoder().load(broken, "text.ae."), Error);
  }
}

TEST(Autoencoder, RejectsBadInput) {
  Matrix zeros(10, 8);
  AutoencoderOptions o = small_opts();
  EXPECT_TRUE(testing_util::throws_error([&] { TextAutoencoder().fit(zeros, o); }, {"zero"}));
  Matrix x = low_rank(20, 8, 2, 1);
  x(3, 2) = std::nanf("");
  EXPECT_TRUE(testing_util::throws_error([&] { TextAutoencoder().fit(x, o); }, {"non-finite"}));
  x(3, 2) = 0.5f;
  o.noise = 1.0;
  EXPECT_TRUE(testing_util::throws_error([&] { TextAutoencoder().fit(x, o); }, {"noise"}));
  TextAutoencoder unfitted;
  EXPECT_FALSE(unfitted.fitted());
  EXPECT_THROW(unfitted.encode(x), Error);
  o.noise = 0;
  o.epochs = 1;
  TextAutoencoder a;
  a.fit(x, o);
  Matrix wrong(2, 9, 1.0f);
  EXPECT_TRUE(testing_util::throws_error([&] { a.encode(wrong); }, {"9"}));
}
