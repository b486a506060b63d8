// TextFeatures: centring on the mean of the non-zero item rows, L2 normalisation, zero rows stay zero, the
// optional autoencoder code, and save/load.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "models/text_features.h"
#include "test_util.h"

using namespace xdrec;
using namespace xdrec::models;

namespace {

Matrix items() {
  Matrix x(4, 3);
  const float v[4][3] = {{1, 2, 3}, {0, 0, 0}, {3, 2, 1}, {2, 5, 2}};
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = 0; j < 3; ++j) x(i, j) = v[i][j];
  return x;
}

Matrix random_text(size_t n, size_t d, uint64_t seed) {
  Rng rng(seed);
  Matrix x(n, d);
  for (size_t i = 0; i < n; ++i) {
    if (i % 10 == 3) continue;
    for (size_t j = 0; j < d; ++j) x(i, j) = 1.0f + 0.3f * rng.normal() + (j == i % d ? 0.5f : 0.0f);
  }
  return x;
}

}  // namespace

TEST(TextFeatures, CentresOnNonZeroItemRowsAndNormalises) {
  TextFeatures tf;
  EXPECT_FALSE(tf.fitted());
  tf.fit(items(), nullptr, TextFeatureOptions{}, 1, 1);
  EXPECT_TRUE(tf.fitted());
  EXPECT_EQ(tf.input_dim(), 3u);
  EXPECT_EQ(tf.dim(), 3u);
  // The mean skips the zero row: (1+3+2, 2+2+5, 3+1+2) / 3 = (2, 3, 2).
  const float raw[3] = {1, 2, 3};
  float out[3];
  tf.transform_row(raw, out);
  const double n = std::sqrt(1.0 + 1.0 + 1.0);  // (1-2, 2-3, 3-2) = (-1, -1, 1)
  EXPECT_NEAR(out[0], -1 / n, 1e-6);
  EXPECT_NEAR(out[1], -1 / n, 1e-6);
  EXPECT_NEAR(out[2], 1 / n, 1e-6);
  const float zero[3] = {0, 0, 0};
  tf.transform_row(zero, out);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
  // A vector equal to the mean has no direction: zeros, not NaN.
  const float mean[3] = {2, 3, 2};
  tf.transform_row(mean, out);
  for (float v : out) EXPECT_EQ(v, 0.0f);
  // Batch = rows.
  const Matrix all = tf.transform(items(), 2);
  ASSERT_EQ(all.rows, 4u);
  for (size_t j = 0; j < 3; ++j) EXPECT_EQ(all(1, j), 0.0f);
  tf.transform_row(items().row(3), out);
  EXPECT_EQ(std::memcmp(out, all.row(3), sizeof(out)), 0);
  // Without centring and normalising the pipeline is the identity.
  TextFeatureOptions plain;
  plain.center = false;
  plain.normalize = false;
  TextFeatures id;
  id.fit(items(), nullptr, plain, 1, 1);
  id.transform_row(raw, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[2], 3.0f);
}

TEST(TextFeatures, AutoencoderCodeIsUnitLengthAndSaved) {
  const Matrix x = random_text(120, 16, 3);
  const Matrix users = random_text(30, 16, 4);
  TextFeatureOptions opt;
  opt.ae_dim = 6;
  opt.ae_hidden = 12;
  opt.ae_epochs = 5;
  TextFeatures tf;
  tf.fit(x, &users, opt, 9, 2);
  EXPECT_EQ(tf.dim(), 6u);
  const Matrix codes = tf.transform(x, 2);
  for (size_t i = 0; i < x.rows; ++i) {
    double s = 0;
    for (size_t j = 0; j < 6; ++j) s += double(codes(i, j)) * codes(i, j);
    if (i % 10 == 3) {
      EXPECT_EQ(s, 0.0) << "a row without text stays zero";
    } else {
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
  }
  TensorMap t;
  tf.save(t, "text.");
  for (auto& [name, tensor] : t) EXPECT_EQ(name.rfind("text.", 0), 0u);
  TextFeatures back;
  back.load(t, "text.");
  EXPECT_EQ(back.dim(), 6u);
  const Matrix again = back.transform(x, 1);
  EXPECT_EQ(std::memcmp(codes.data.data(), again.data.data(), codes.data.size() * sizeof(float)), 0);
  // Same seed, same features, for any thread count.
  TextFeatures other;
  other.fit(x, &users, opt, 9, 1);
  const Matrix c1 = other.transform(x, 1);
  EXPECT_EQ(std::memcmp(codes.data.data(), c1.data.data(), codes.data.size() * sizeof(float)), 0);
  // Every tensor is needed.
  for (auto& [name, tensor] : t) {
    TensorMap without = t;
    without.erase(name);
    EXPECT_THROW(TextFeatures().load(without, "text."), Error) << name;
  }
}

TEST(TextFeatures, RejectsMismatchedInput) {
  TextFeatures tf;
  Matrix wrong(2, 5, 1.0f);
  EXPECT_THROW(tf.transform(wrong, 1), Error);
  tf.fit(items(), nullptr, TextFeatureOptions{}, 1, 1);
  EXPECT_TRUE(testing_util::throws_error([&] { tf.transform(wrong, 1); }, {"5", "3"}));
  Matrix users(2, 4, 1.0f);
  EXPECT_TRUE(testing_util::throws_error([&] { TextFeatures().fit(items(), &users, {}, 1, 1); }, {"4", "3"}));
  Matrix bad = items();
  bad(0, 0) = std::nanf("");
  EXPECT_TRUE(
      testing_util::throws_error([&] { TextFeatures().fit(bad, nullptr, {}, 1, 1); }, {"non-finite"}));
}
