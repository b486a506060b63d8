// Compressed storage of float matrices: half-precision conversion, int8 per-row scales, and the bounds of the
// round trip (int8: half a step of the row's scale; fp16: half a unit in the last place).
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "test_util.h"
#include "xdrec/tensor_io.h"

using namespace xdrec;

namespace {

TEST(Quantize, HalfConversionOfSpecialAndBoundaryValues) {
  EXPECT_EQ(float_to_half(0.0f), 0x0000);
  EXPECT_EQ(float_to_half(-0.0f), 0x8000);
  EXPECT_EQ(float_to_half(1.0f), 0x3C00);
  EXPECT_EQ(float_to_half(-2.0f), 0xC000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_half(65519.0f), 0x7BFF);               // below the rounding boundary
  EXPECT_EQ(float_to_half(65520.0f), 0x7C00);               // rounds to infinity
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // the tie rounds to even (zero)
  EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -14)), 0x0400);         // smallest normal
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie to even
  EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
  // Every half value converts to float and back unchanged.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_to_float(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), h) << std::hex << h;
  }
}

TEST(Quantize, HalfRoundingMatchesNearestEvenOnRandomValues) {
  Rng rng(5);
  for (int i = 0; i < 200000; ++i) {
    const float x = float(rng.normal()) * std::ldexp(1.0f, int(rng.below(36)) - 24);  // within the range
    const float y = half_to_float(float_to_half(x));
    // The nearest half is within half a unit in the last place (2^-11 relative for normal values, 2^-25
    // absolute for subnormal ones).
    const float bound = std::max(std::fabs(x) * std::ldexp(1.0f, -11), std::ldexp(1.0f, -25));
    ASSERT_LE(std::fabs(y - x), bound) << x;
  }
}

Matrix random_matrix(size_t rows, size_t cols, uint64_t seed) {
  Matrix m(rows, cols);
  Rng rng(seed);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) m(r, c) = float(rng.normal()) * float(r % 7 + 1) * 0.01f;
  for (size_t c = 0; c < cols; ++c) m(3, c) = 0.0f;  // an all-zero row
  return m;
}

TEST(Quantize, Int8RoundTripWithinHalfAStepPerRow) {
  const Matrix m = random_matrix(50, 33, 1);
  TensorMap t;
  t["w"] = Tensor::from_matrix(m);
  compress_tensor(t, "w", Store::kInt8);
  EXPECT_EQ(t.at("w").dtype, DType::I8);
  EXPECT_EQ(t.at("w").bytes.size(), 50u * 33u);
  ASSERT_TRUE(t.count("w.scale"));
  decompress_tensors(t);
  EXPECT_FALSE(t.count("w.scale"));
  const Matrix back = get_tensor(t, "w").to_matrix("w");
  for (size_t r = 0; r < m.rows; ++r) {
    float mx = 0;
    for (size_t c = 0; c < m.cols; ++c) mx = std::max(mx, std::fabs(m(r, c)));
    const float step = mx / 127.0f;
    for (size_t c = 0; c < m.cols; ++c)
      ASSERT_LE(std::fabs(back(r, c) - m(r, c)), step * 0.5f * (1 + 1e-5f) + 1e-30f) << r << "," << c;
    if (mx == 0) {
      for (size_t c = 0; c < m.cols; ++c) EXPECT_EQ(back(r, c), 0.0f);
    }
  }
}

TEST(Quantize, Fp16RoundTripAndRangeCheck) {
  const Matrix m = random_matrix(20, 9, 2);
  TensorMap t;
  t["w"] = Tensor::from_matrix(m);
  compress_tensor(t, "w", Store::kFp16);
  EXPECT_EQ(t.at("w").dtype, DType::F16);
  decompress_tensors(t);
  const Matrix back = get_tensor(t, "w").to_matrix("w");
  for (size_t i = 0; i < m.data.size(); ++i)
    ASSERT_LE(std::fabs(back.data[i] - m.data[i]), std::fabs(m.data[i]) * std::ldexp(1.0f, -11) + 1e-7f);
  TensorMap big;
  Matrix b(1, 2);
  b(0, 0) = 1e6f;
  big["b"] = Tensor::from_matrix(b);
  EXPECT_TRUE(testing_util::throws_error([&] { compress_tensor(big, "b", Store::kFp16); }, {"65504"}));
}

TEST(Quantize, OnlyCompressedCompanionsAreRemoved) {
  // A model's own "<name>.scale" tensor beside a float tensor stays (emcdr keeps map scales so).
  TensorMap t;
  const float v[2] = {1.0f, 2.0f};
  t["map"] = Tensor::from_f32({1, 2}, v);
  t["map.scale"] = Tensor::from_f32({2}, v);
  decompress_tensors(t);
  EXPECT_TRUE(t.count("map.scale"));
  EXPECT_EQ(parse_store("int8"), Store::kInt8);
  EXPECT_TRUE(testing_util::throws_error([] { parse_store("int4"); }, {"int4", "fp16"}));
}

TEST(Quantize, SafetensorsKeepsTheNewDtypes) {
  TensorMap t;
  t["w"] = Tensor::from_matrix(random_matrix(4, 8, 3));
  t["h"] = Tensor::from_matrix(random_matrix(4, 8, 4));
  compress_tensor(t, "w", Store::kInt8);
  compress_tensor(t, "h", Store::kFp16);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("xdrec_q_" + std::to_string(::getpid()) + ".safetensors"))
          .string();
  save_safetensors(path, t);
  TensorMap back = load_safetensors(path);
  std::remove(path.c_str());
  EXPECT_EQ(back.at("w").dtype, DType::I8);
  EXPECT_EQ(back.at("h").dtype, DType::F16);
  EXPECT_TRUE(back.at("w").bytes == t.at("w").bytes);
  EXPECT_TRUE(back.at("h").bytes == t.at("h").bytes);
}

}  // namespace
