// Magnitude pruning and sparse storage of model tensors (tensor_io.h): the smallest entries are zeroed,
// sparse tensors round-trip exactly for every dtype (alone and after int8 / fp16 compression), dense storage
// is kept when sparse would be larger, and malformed sparse companions are clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "test_util.h"
#include "xdrec/tensor_io.h"

using namespace xdrec;
using testing_util::throws_error;

namespace {

Tensor random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(size_t(rows * cols));
  for (float& v : x) v = rng.normal();
  return Tensor::from_f32({rows, cols}, x.data());
}

TEST(Prune, ZeroesTheSmallestFractionPerTensor) {
  TensorMap t;
  t["w"] = random_matrix(37, 11, 1);
  const std::vector<float> before = t["w"].to_f32("w");
  const double s = prune_tensor(t, "w", 0.3);
  const std::vector<float> after = t["w"].to_f32("w");
  const size_t want = size_t(std::llround(0.3 * 37 * 11));
  EXPECT_NEAR(s, double(want) / (37 * 11), 1e-12);
  float cut_max = 0, kept_min = INFINITY;
  size_t zeros = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    if (after[i] == 0.0f) {
      ++zeros;
      cut_max = std::max(cut_max, std::fabs(before[i]));
    } else {
      EXPECT_EQ(after[i], before[i]);
      kept_min = std::min(kept_min, std::fabs(before[i]));
    }
  }
  EXPECT_EQ(zeros, want);
  EXPECT_LT(cut_max, kept_min);
  EXPECT_DOUBLE_EQ(prune_tensor(t, "w", 0.0), s);  // nothing more pruned, the zeros counted
  EXPECT_TRUE(throws_error([&] { prune_tensor(t, "w", 1.0); }, {"[0, 1)"}));
  EXPECT_TRUE(throws_error([&] { prune_tensor(t, "nope", 0.5); }, {"nope"}));
  std::vector<float> v = {1, 2, 3};
  t["v"] = Tensor::from_f32({3}, v.data());
  EXPECT_TRUE(throws_error([&] { prune_tensor(t, "v", 0.5); }, {"2-D"}));
}

TEST(Prune, SparseStorageRoundTripsEveryDtype) {
  for (Store store : {Store::kFp32, Store::kFp16, Store::kInt8}) {
    SCOPED_TRACE(store_name(store));
    TensorMap t;
    t["w"] = random_matrix(20, 13, 2);
    prune_tensor(t, "w", 0.75);
    compress_tensor(t, "w", store);
    const Tensor dense = t["w"];
    ASSERT_TRUE(sparsify_tensor(t, "w"));
    EXPECT_TRUE(t.count("w.mask") && t.count("w.shape"));
    EXPECT_EQ(t["w"].shape.size(), 1u);
    EXPECT_LT(t["w"].bytes.size() + t["w.mask"].bytes.size(), dense.bytes.size());
    // Through a file, as a model would be.
    const std::string path =
        (std::filesystem::temp_directory_path() / ("xdrec_prune_" + std::to_string(::getpid()) + ".st"))
            .string();
    save_safetensors(path, t);
    TensorMap back = load_safetensors(path);
    std::filesystem::remove(path);
    densify_tensors(back);
    EXPECT_FALSE(back.count("w.mask") || back.count("w.shape"));
    EXPECT_EQ(back["w"].dtype, dense.dtype);
    EXPECT_EQ(back["w"].shape, dense.shape);
    EXPECT_EQ(back["w"].bytes, dense.bytes);
  }
}

TEST(Prune, DenseKeptWhenSparseIsLargerAndMalformedCompanionsFail) {
  TensorMap t;
  t["w"] = random_matrix(8, 8, 3);
  EXPECT_FALSE(sparsify_tensor(t, "w"));  // no zeros: the mask would only add bytes
  EXPECT_EQ(t["w"].shape.size(), 2u);
  prune_tensor(t, "w", 0.9);
  ASSERT_TRUE(sparsify_tensor(t, "w"));
  TensorMap bad = t;
  bad["w.mask"].bytes.pop_back();
  EXPECT_TRUE(throws_error([&] { densify_tensors(bad); }, {"w.mask", "bytes"}));
  bad = t;
  bad["w"].bytes.resize(bad["w"].bytes.size() - 4);
  bad["w"].shape = {bad["w"].shape[0] - 1};
  EXPECT_TRUE(throws_error([&] { densify_tensors(bad); }, {"values for a mask"}));
}

}  // namespace
