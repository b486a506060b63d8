// Compressed model files (save_model with Store::kFp16 / kInt8): every model with compressible matrices
// round-trips with scores close to the float model's, the manifest records the storage, the tensor file
// shrinks about 2x / 4x, and on MovieLens 100k (random split, seed 42) int8 iALS loses at most 0.005 NDCG@10.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "models/clustered.h"
#include "models/ml100k.h"
#include "test_util.h"
#include "xdrec/metrics.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"
#include "xdrec/split.h"

using namespace xdrec;
namespace fs = std::filesystem;

namespace {

constexpr char kCompressionPrefix[] = "xdrec_compress_";

class Compression : public testing_util::TempDirTest<kCompressionPrefix> {};

std::unique_ptr<Recommender> fit(const std::string& spec, const Csr& x) {
  auto m = create_model(spec);
  FitContext ctx;
  ctx.threads = 2;
  ctx.seed = 3;
  m->fit(x, ctx);
  return m;
}

Matrix scores(const Recommender& m) {
  std::vector<uint32_t> users(m.n_users());
  for (uint32_t u = 0; u < users.size(); ++u) users[u] = u;
  Matrix s;
  m.score(users, s, 1);
  return s;
}

TEST_F(Compression, EveryCompressibleModelRoundTrips) {
  const auto data = testing_util::make_clustered(300, 120, 6, 15, 11);
  const std::vector<std::string> specs = {
      "ials:factors=16,iterations=4", "bpr:factors=16,epochs=5",      "ease:lambda=50",
      "hybrid:factors=16,epochs=3",   "twotower:factors=16,epochs=2", "svd:factors=16,epochs=3"};
  for (const std::string& spec : specs) {
    SCOPED_TRACE(spec);
    const auto model = fit(spec, data.train);
    ASSERT_FALSE(model->compressible_tensors().empty());
    const Matrix want = scores(*model);
    float scale = 0;
    for (float v : want.data) scale = std::max(scale, std::fabs(v));
    for (const auto& [store, tol] : {std::pair{Store::kFp16, 0.005f}, std::pair{Store::kInt8, 0.05f}}) {
      const fs::path d = dir / (model->name() + "_" + store_name(store));
      save_model(*model, d.string(), 0, store);
      const auto manifest = nlohmann::json::parse(read_file((d / "manifest.json").string()));
      EXPECT_EQ(manifest.at("store"), store_name(store));
      EXPECT_EQ(manifest.at("compressed_tensors").get<std::vector<std::string>>(),
                model->compressible_tensors());
      const auto loaded = load_model(d.string());
      const Matrix got = scores(*loaded);
      ASSERT_EQ(got.data.size(), want.data.size());
      float err = 0;
      for (size_t i = 0; i < got.data.size(); ++i) err = std::max(err, std::fabs(got.data[i] - want.data[i]));
      EXPECT_LE(err, tol * scale) << store_name(store) << ": largest score error " << err << " of " << scale;
      EXPECT_GT(err, 0.0f) << "the matrices were not compressed";
    }
  }
}

TEST_F(Compression, FactorsWithinTheQuantisationStepAndFilesShrink) {
  const auto data = testing_util::make_clustered(2000, 500, 8, 20, 5);
  const auto model = fit("ials:factors=64,iterations=3", data.train);
  Matrix items;
  std::vector<float> bias;
  ASSERT_TRUE(model->item_vectors(items, bias));
  std::map<Store, double> bytes;
  for (Store store : {Store::kFp32, Store::kFp16, Store::kInt8}) {
    const fs::path d = dir / store_name(store);
    save_model(*model, d.string(), 0, store);
    bytes[store] = double(fs::file_size(d / "model.safetensors"));
    Matrix back;
    ASSERT_TRUE(load_model(d.string())->item_vectors(back, bias));
    for (size_t r = 0; r < items.rows; ++r) {
      float mx = 0;
      for (size_t c = 0; c < items.cols; ++c) mx = std::max(mx, std::fabs(items(r, c)));
      for (size_t c = 0; c < items.cols; ++c) {
        const float e = std::fabs(back(r, c) - items(r, c));
        const float bound = store == Store::kFp32   ? 0.0f
                            : store == Store::kFp16 ? std::max(std::fabs(items(r, c)) * std::ldexp(1.0f, -11),
                                                               std::ldexp(1.0f, -25))
                                                    : mx / 127.0f * 0.5f * (1 + 1e-5f);
        ASSERT_LE(e, bound) << store_name(store) << " row " << r;
      }
    }
  }
  EXPECT_GT(bytes[Store::kFp32] / bytes[Store::kFp16], 1.95);
  EXPECT_GT(bytes[Store::kFp32] / bytes[Store::kInt8], 3.6);
}

// The quality gate of a compression: int8 and fp16 iALS on MovieLens 100k lose at most 0.005 NDCG@10.
TEST_F(Compression, MovieLensNdcgGate) {
  const auto ml = testing_util::load_ml100k_split();
  if (!ml) GTEST_SKIP() << "MovieLens 100k not found at " << testing_util::ml100k_path();
  const Dataset& ds = ml->ds;
  const Csr &train = ml->train, &test = ml->test;
  auto model = create_model("ials");
  FitContext ctx;
  ctx.threads = 2;
  ctx.seed = 42;
  model->fit(train, ctx);
  EvalOptions eo;
  eo.threads = 2;
  const double base = evaluate(*model, train, test, &ds, eo).overall.at("ndcg@10");
  EXPECT_GT(base, 0.2);
  for (Store store : {Store::kFp16, Store::kInt8}) {
    const fs::path d = dir / store_name(store);
    save_model(*model, d.string(), ds.fingerprint(), store);
    const double ndcg = evaluate(*load_model(d.string()), train, test, &ds, eo).overall.at("ndcg@10");
    EXPECT_LE(std::fabs(ndcg - base), 0.005) << store_name(store) << ": " << ndcg << " vs " << base;
  }
}

}  // namespace
