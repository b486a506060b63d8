// BERT encoder: agreement with the reference fixtures (float64 forward passes of the Hugging Face model), the
// dense kernels against naive implementations, batching and threads, int8 quality gate, model-folder errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "text/transformer_ops.h"
#include "xdrec/encoder.h"
#include "xdrec/tensor_io.h"

namespace fs = std::filesystem;
using namespace xdrec;
using namespace xdrec::text;
using nlohmann::json;

namespace {

std::string fixture_dir(const std::string& model) {
  return (fs::path(XDREC_SHARED_DATA) / ".." / "fixtures" / "bert" / model).lexically_normal().string();
}

bool have_fixture(const std::string& model) {
  return fs::exists(fixture_dir(model) + "/reference.jsonl");
}

struct Reference {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> mean, cls, mean_norm;
};

Reference read_reference(const std::string& model) {
  Reference r;
  std::ifstream in(fixture_dir(model) + "/reference.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line);
    r.texts.push_back(j.at("text"));
    r.ids.push_back(j.at("input_ids").get<std::vector<int32_t>>());
    r.mean.push_back(j.at("mean_pooled").get<std::vector<float>>());
    r.cls.push_back(j.at("cls").get<std::vector<float>>());
    r.mean_norm.push_back(j.at("mean_pooled_normalized").get<std::vector<float>>());
  }
  return r;
}

// ||a - b|| / ||b||.
double rel_error(const float* a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

double cosine(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i)
    ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("xdrec_bert_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream(file(name), std::ios::binary | std::ios::trunc) << content;
  }
  // A writable copy of a fixture model folder.
  static std::unique_ptr<TempDir> copy_of(const std::string& model) {
    auto t = std::make_unique<TempDir>();
    fs::copy(fixture_dir(model), t->path, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    for (auto& e : fs::recursive_directory_iterator(t->path))
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
    return t;
  }
};

using xdrec::testing_util::throws_error;

// Writes a safetensors file with arbitrary dtype names (the core writer knows F32/I32/U32/I64/U64/U8 only).
struct RawTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
void write_raw_safetensors(const std::string& path, const std::map<std::string, RawTensor>& tensors) {
  json h = json::object();
  uint64_t off = 0;
  std::string data;
  for (auto& [name, t] : tensors) {
    h[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
    data += t.bytes;
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((hs.size() >> (8 * i)) & 0xff);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << out << hs << data;
}

Matrix encode(const std::string& spec, const std::vector<std::string>& texts, int threads = 1) {
  return create_encoder(spec)->encode(texts, threads);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Kernels.

TEST(BertOps, ExpErfGeluMatchTheStandardLibrary) {
  double max_gelu = 0, max_tanh = 0, max_exp = 0;
  for (float x = -12.0f; x <= 12.0f; x += 0.001953125f) {
    const double g = 0.5 * x * (1.0 + std::erf(double(x) / std::sqrt(2.0)));
    max_gelu = std::max(
        max_gelu, std::fabs(ops::activate(x, ops::Activation::kGelu) - g) / std::max(1.0, std::fabs(g)));
    const double t =
        0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (double(x) + 0.044715 * double(x) * x * x)));
    max_tanh = std::max(
        max_tanh, std::fabs(ops::activate(x, ops::Activation::kGeluTanh) - t) / std::max(1.0, std::fabs(t)));
    max_exp = std::max(max_exp, std::fabs(ops::exp_approx(x) - std::exp(double(x))) / std::exp(double(x)));
  }
  EXPECT_LT(max_gelu, 5e-7);
  EXPECT_LT(max_tanh, 5e-7);
  EXPECT_LT(max_exp, 5e-7);
  EXPECT_EQ(ops::activate(-3.0f, ops::Activation::kRelu), 0.0f);
  EXPECT_EQ(ops::activate(2.5f, ops::Activation::kRelu), 2.5f);
  EXPECT_EQ(ops::activate(0.0f, ops::Activation::kGelu), 0.0f);
  EXPECT_EQ(ops::exp_approx(-200.0f), 0.0f);
  EXPECT_TRUE(std::isfinite(ops::activate(-1e30f, ops::Activation::kGelu)));
  EXPECT_TRUE(std::isfinite(ops::activate(1e30f, ops::Activation::kGeluTanh)));
}

TEST(BertOps, GemmMatchesNaiveProductForEveryShapeAndEpilogue) {
  Rng rng(7);
  for (bool int8 : {false, true})
    for (size_t m : {1, 5, 12, 13, 100, 203})
      for (auto [n, k] : {std::pair<size_t, size_t>{1, 1}, {31, 7}, {32, 64}, {70, 300}, {64, 600}}) {
        std::vector<float> w(n * k), b(n), a(m * k), r(m * n);
        for (auto& v : w) v = rng.normal();
        for (auto& v : b) v = rng.normal();
        for (auto& v : a) v = rng.normal();
        for (auto& v : r) v = rng.normal();
        const ops::Linear lin = ops::Linear::from_out_in(w.data(), b.data(), n, k, int8);
        for (auto ep : {ops::Epilogue::kBias, ops::Epilogue::kBiasActivation, ops::Epilogue::kBiasResidual}) {
          std::vector<float> c1(m * n), c2(m * n);
          ops::GemmArgs g;
          g.a = a.data(), g.lda = k, g.m = m, g.lin = &lin, g.c = c1.data(), g.ldc = n;
          g.epilogue = ep, g.act = ops::Activation::kGelu, g.residual = r.data(), g.ldr = n;
          std::vector<int> done(m, 0);
          ops::gemm(g, 1, [&](size_t r0, size_t r1) {
            for (size_t i = r0; i < r1; ++i) ++done[i];
          });
          EXPECT_EQ(std::count(done.begin(), done.end(), 1), long(m)) << "rows_done covers each row once";
          g.c = c2.data();
          ops::gemm(g, 2);
          EXPECT_EQ(c1, c2) << "thread count changes the result (m=" << m << ", n=" << n << ", k=" << k
                            << ")";
          double max_err = 0;
          for (size_t i = 0; i < m; ++i)
            for (size_t j = 0; j < n; ++j) {
              double s = b[j], sa = std::fabs(b[j]);
              for (size_t t = 0; t < k; ++t) {
                const double wt = int8 ? lin.weight(t, j) : w[j * k + t];
                s += double(a[i * k + t]) * wt;
                sa += std::fabs(double(a[i * k + t]) * wt);
              }
              if (ep == ops::Epilogue::kBiasActivation) s = 0.5 * s * (1 + std::erf(s / std::sqrt(2.0)));
              if (ep == ops::Epilogue::kBiasResidual) s += r[i * n + j], sa += std::fabs(r[i * n + j]);
              max_err = std::max(max_err, std::fabs(c1[i * n + j] - s) / (sa + 1));
            }
          EXPECT_LT(max_err, 1e-6) << "m=" << m << " n=" << n << " k=" << k << " int8=" << int8;
        }
        if (int8) {  // the quantised weights are within half a step of the float weights
          for (size_t j = 0; j < n; ++j) {
            float amax = 0;
            for (size_t t = 0; t < k; ++t) amax = std::max(amax, std::fabs(w[j * k + t]));
            for (size_t t = 0; t < k; ++t)
              ASSERT_LE(std::fabs(lin.weight(t, j) - w[j * k + t]), amax / 127 * 0.5001f);
          }
        }
      }
}

TEST(BertOps, GemmRowsDoNotDependOnTheOtherRows) {
  Rng rng(3);
  const size_t n = 96, k = 200, m = 150;
  std::vector<float> w(n * k), a(m * k);
  for (auto& v : w) v = rng.normal();
  for (auto& v : a) v = rng.normal();
  const ops::Linear lin = ops::Linear::from_out_in(w.data(), nullptr, n, k, false);
  std::vector<float> all(m * n), one(n);
  ops::GemmArgs g;
  g.a = a.data(), g.lda = k, g.m = m, g.lin = &lin, g.c = all.data(), g.ldc = n;
  ops::gemm(g, 2);
  for (size_t i : {0, 11, 12, 95, 96, 149}) {
    g.a = a.data() + i * k, g.m = 1, g.c = one.data();
    ops::gemm(g, 1);
    EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + long(i * n))) << "row " << i;
  }
}

TEST(BertOps, LayerNormSoftmaxAndAttentionMatchNaive) {
  Rng rng(11);
  for (size_t n : {1, 7, 16, 33, 384}) {
    std::vector<float> x(3 * n), g(n), b(n);
    for (auto& v : x) v = rng.normal() * 3 + 1;
    for (auto& v : g) v = rng.normal();
    for (auto& v : b) v = rng.normal();
    std::vector<float> y = x;
    ops::layer_norm(y.data(), 3, n, n, g.data(), b.data(), 1e-5f);
    for (size_t r = 0; r < 3; ++r) {
      double mean = 0, var = 0;
      for (size_t i = 0; i < n; ++i) mean += x[r * n + i];
      mean /= double(n);
      for (size_t i = 0; i < n; ++i) var += (x[r * n + i] - mean) * (x[r * n + i] - mean);
      var /= double(n);
      for (size_t i = 0; i < n; ++i)
        ASSERT_NEAR(y[r * n + i], (x[r * n + i] - mean) / std::sqrt(var + 1e-5) * g[i] + b[i], 2e-5);
    }
    std::vector<float> s(x.begin(), x.begin() + long(n));
    ops::softmax(s.data(), n);
    double mx = *std::max_element(x.begin(), x.begin() + long(n)), z = 0;
    for (size_t i = 0; i < n; ++i) z += std::exp(x[i] - mx);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(s[i], std::exp(x[i] - mx) / z, 1e-6);
  }
  // Attention of one sequence, every head size and length, against a naive double computation.
  for (size_t d : {8, 16, 20, 32, 64})
    for (size_t L : {1, 2, 5, 17, 64}) {
      const size_t heads = 3, H = heads * d, ld = 3 * H;
      std::vector<float> qkv(L * ld), out(L * H, -1), expect(L * H);
      for (auto& v : qkv) v = rng.normal();
      ops::aligned_vector<float> scratch;
      ops::attention(qkv.data(), L, qkv.data() + H, qkv.data() + 2 * H, ld, L, 0, heads, d, out.data(), H,
                     scratch);
      // Query rows in two parts, heads in two parts: the same bits.
      std::vector<float> split(L * H, -1);
      const size_t half = L / 2;
      for (auto [a, b] : {std::pair<size_t, size_t>{0, half}, {half, L}})
        for (auto [g0, g1] : {std::pair<size_t, size_t>{0, 1}, {1, heads}})
          ops::attention(qkv.data() + a * ld, b - a, qkv.data() + H, qkv.data() + 2 * H, ld, L, g0, g1, d,
                         split.data() + a * H, H, scratch);
      EXPECT_EQ(split, out) << "d=" << d << " L=" << L;
      for (size_t h = 0; h < heads; ++h)
        for (size_t i = 0; i < L; ++i) {
          std::vector<double> p(L);
          double mx = -1e300, z = 0;
          for (size_t j = 0; j < L; ++j) {
            double s = 0;
            for (size_t c = 0; c < d; ++c) s += double(qkv[i * ld + h * d + c]) * qkv[j * ld + H + h * d + c];
            p[j] = s;
            mx = std::max(mx, s);
          }
          for (auto& v : p) z += (v = std::exp(v - mx));
          for (size_t c = 0; c < d; ++c) {
            double o = 0;
            for (size_t j = 0; j < L; ++j) o += p[j] / z * qkv[j * ld + 2 * H + h * d + c];
            ASSERT_NEAR(out[i * H + h * d + c], o, 1e-5) << "d=" << d << " L=" << L;
          }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The reference fixtures.

class BertFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(BertFixture, ReproducesTheReferenceVectors) {
  const std::string model = GetParam();
  if (!have_fixture(model)) GTEST_SKIP() << "fixture " << fixture_dir(model) << " not found";
  const Reference ref = read_reference(model);
  const std::string dir = fixture_dir(model);
  auto enc = create_encoder("bert:" + dir);
  EXPECT_EQ(enc->name(), "bert");
  EXPECT_EQ(enc->dim(), 64u);
  for (size_t i = 0; i < ref.texts.size(); ++i)
    EXPECT_EQ(enc->token_ids(ref.texts[i]), ref.ids[i]) << ref.texts[i];
  const Matrix norm = enc->encode(ref.texts, 2);  // the model's own pooling: mean, then Normalize
  const Matrix mean = encode("bert:" + dir + ",pooling=mean,normalize=false", ref.texts, 2);
  const Matrix cls = encode("bert:dir=" + dir + ",pooling=cls,normalize=false", ref.texts, 1);
  double worst[3] = {0, 0, 0};
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    worst[0] = std::max(worst[0], rel_error(mean.row(i), ref.mean[i]));
    worst[1] = std::max(worst[1], rel_error(cls.row(i), ref.cls[i]));
    worst[2] = std::max(worst[2], rel_error(norm.row(i), ref.mean_norm[i]));
  }
  std::printf("[ %s ] max relative error: mean_pooled %.2e, cls %.2e, mean_pooled_normalized %.2e\n",
              model.c_str(), worst[0], worst[1], worst[2]);
  EXPECT_LT(worst[0], 1e-4);
  EXPECT_LT(worst[1], 1e-4);
  EXPECT_LT(worst[2], 1e-4);
}

TEST_P(BertFixture, BatchesAndThreadsGiveIdenticalVectors) {
  const std::string model = GetParam();
  if (!have_fixture(model)) GTEST_SKIP() << "fixture not found";
  const Reference ref = read_reference(model);
  auto enc = create_encoder("bert:" + fixture_dir(model));
  const Matrix all1 = enc->encode(ref.texts, 1);
  const Matrix all2 = enc->encode(ref.texts, 2);
  EXPECT_EQ(all1.data, all2.data) << "thread count changes the vectors";
  // Each text alone, and the batch in another order, give the same bits.
  for (size_t i = 0; i < ref.texts.size(); i += 7) {
    const Matrix one = enc->encode(std::vector<std::string>{ref.texts[i]}, 2);
    EXPECT_TRUE(std::equal(one.data.begin(), one.data.end(), all1.row(i))) << ref.texts[i];
  }
  std::vector<std::string> rev(ref.texts.rbegin(), ref.texts.rend());
  const Matrix r = enc->encode(rev, 2);
  for (size_t i = 0; i < rev.size(); ++i)
    EXPECT_TRUE(std::equal(r.row(i), r.row(i) + r.cols, all1.row(rev.size() - 1 - i)));
  EXPECT_EQ(enc->encode(std::vector<std::string>{}, 2).rows, 0u);
  // Many texts (several internal chunks and thread groups).
  std::vector<std::string> many;
  for (int k = 0; k < 12; ++k) many.insert(many.end(), ref.texts.begin(), ref.texts.end());
  const Matrix m = enc->encode(many, 2);
  for (size_t i = 0; i < many.size(); ++i)
    ASSERT_TRUE(std::equal(m.row(i), m.row(i) + m.cols, all1.row(i % ref.texts.size()))) << i;
}

TEST_P(BertFixture, EmptyAndHugeTexts) {
  const std::string model = GetParam();
  if (!have_fixture(model)) GTEST_SKIP() << "fixture not found";
  const Reference ref = read_reference(model);
  auto enc = create_encoder("bert:" + fixture_dir(model) + ",pooling=mean,normalize=false");
  // The empty text is [CLS] [SEP].
  const auto empty = std::find(ref.texts.begin(), ref.texts.end(), std::string());
  ASSERT_NE(empty, ref.texts.end());
  const Matrix e = enc->encode(std::vector<std::string>{""}, 1);
  EXPECT_LT(rel_error(e.row(0), ref.mean[size_t(empty - ref.texts.begin())]), 1e-4);
  // A text of several megabytes is truncated to the first 64 tokens: the reference's long text.
  size_t li = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i)
    if (ref.texts[i].rfind("long long", 0) == 0) li = i;
  ASSERT_EQ(ref.ids[li].size(), 64u);
  std::string huge = ref.texts[li];
  while (huge.size() < (4u << 20)) huge += " more words to be cut off";
  const Matrix h = enc->encode(std::vector<std::string>{huge, ""}, 2);
  EXPECT_LT(rel_error(h.row(0), ref.mean[li]), 1e-4);
  EXPECT_EQ(enc->token_ids(huge), ref.ids[li]);
  for (size_t c = 0; c < h.cols; ++c) EXPECT_TRUE(std::isfinite(h(1, c)));
  // A shorter max_length truncates earlier: [CLS] + 8 tokens + [SEP].
  auto short_enc = create_encoder("bert:" + fixture_dir(model) + ",max_length=10");
  auto ids = short_enc->token_ids(ref.texts[li]);
  ASSERT_EQ(ids.size(), 10u);
  EXPECT_TRUE(std::equal(ids.begin(), ids.end() - 1, ref.ids[li].begin()));
  EXPECT_EQ(ids.back(), ref.ids[li].back());
}

TEST_P(BertFixture, Int8QualityGate) {
  const std::string model = GetParam();
  if (!have_fixture(model)) GTEST_SKIP() << "fixture not found";
  const Reference ref = read_reference(model);
  auto f = create_encoder("bert:" + fixture_dir(model));
  auto q = create_encoder("bert:" + fixture_dir(model) + ",quant=int8");
  EXPECT_NE(f->fingerprint(), q->fingerprint());
  EXPECT_NE(q->spec().find("quant=int8"), std::string::npos);
  const Matrix a = f->encode(ref.texts, 2), b = q->encode(ref.texts, 2);
  double sum = 0, worst = 1;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const double c = cosine(a.row(i), b.row(i), a.cols);
    sum += c;
    worst = std::min(worst, c);
  }
  const double mean = sum / double(ref.texts.size());
  std::printf("[ %s ] int8 vs float cosine: mean %.6f, worst %.6f\n", model.c_str(), mean, worst);
  EXPECT_GE(mean, 0.995);
  EXPECT_LT(mean, 1.0) << "the int8 model should differ from the float one";
  EXPECT_EQ(b.data, q->encode(ref.texts, 1).data) << "int8 results depend on the thread count";
}

INSTANTIATE_TEST_SUITE_P(Models, BertFixture, ::testing::Values("tiny-bert-uncased", "tiny-bert-cased"));

// ---------------------------------------------------------------------------------------------------------
// Settings, fingerprints and model folders.

TEST(Bert, SpecAndFingerprint) {
  if (!have_fixture("tiny-bert-uncased")) GTEST_SKIP() << "fixture not found";
  const std::string dir = fixture_dir("tiny-bert-uncased");
  auto a = create_encoder("bert:" + dir);
  EXPECT_EQ(a->spec(), "bert:dir=" + dir + ",max_length=64,normalize=true,pooling=mean,quant=none");
  auto b = create_encoder(a->spec());
  EXPECT_EQ(a->fingerprint(), b->fingerprint()) << "the canonical spec recreates the encoder";
  EXPECT_EQ(a->fingerprint(), create_encoder("bert:dir=" + dir + "/")->fingerprint());
  EXPECT_NE(a->fingerprint(), create_encoder("bert:" + dir + ",normalize=false")->fingerprint());
  EXPECT_NE(a->fingerprint(), create_encoder("bert:" + dir + ",max_length=32")->fingerprint());
  EXPECT_NE(a->fingerprint(), create_encoder("bert:" + dir + ",pooling=cls")->fingerprint());
  EXPECT_NE(a->fingerprint(), create_encoder("bert:" + fixture_dir("tiny-bert-cased"))->fingerprint());
  // A copy of the folder gives the same fingerprint; a changed weight gives another.
  auto copy = TempDir::copy_of("tiny-bert-uncased");
  EXPECT_EQ(a->fingerprint(), create_encoder("bert:" + copy->str())->fingerprint());
  TensorMap t = load_safetensors(copy->file("model.safetensors"));
  auto& bias = t.at("encoder.layer.1.output.dense.bias");
  float v;
  std::memcpy(&v, bias.bytes.data(), 4);
  v += 1e-3f;
  std::memcpy(bias.bytes.data(), &v, 4);
  save_safetensors(copy->file("model.safetensors"), t);
  EXPECT_NE(a->fingerprint(), create_encoder("bert:" + copy->str())->fingerprint());
  // Concatenated pooling modes.
  auto both = create_encoder("bert:" + dir + ",pooling=max,normalize=false");
  EXPECT_EQ(both->dim(), 64u);
  EXPECT_TRUE(throws_error([&] { create_encoder("bert:" + dir + ",pooling=sum"); }, {"pooling"}));
  EXPECT_TRUE(
      throws_error([&] { create_encoder("bert:" + dir + ",colour=red"); }, {"unknown parameter 'colour'"}));
  EXPECT_TRUE(
      throws_error([&] { create_encoder("bert:" + dir + ",max_length=65"); }, {"max_length 65", "64"}));
  EXPECT_TRUE(throws_error([&] { create_encoder("bert:"); }, {"no model folder"}));
}

TEST(Bert, PoolingModesFromTheModelFolder) {
  if (!have_fixture("tiny-bert-uncased")) GTEST_SKIP() << "fixture not found";
  const Reference ref = read_reference("tiny-bert-uncased");
  const std::vector<std::string> texts(ref.texts.begin(), ref.texts.begin() + 6);
  auto d = TempDir::copy_of("tiny-bert-uncased");
  // CLS pooling, no Normalize module.
  d->write("1_Pooling/config.json", R"({"word_embedding_dimension": 64, "pooling_mode_cls_token": true})");
  d->write("modules.json",
           R"([{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
      {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}])");
  const Matrix c = encode("bert:" + d->str(), texts);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_LT(rel_error(c.row(i), ref.cls[i]), 1e-4);
  // CLS and mean concatenated, then normalised; the newer "pooling_mode" string form.
  d->write("1_Pooling/config.json", R"({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true})");
  d->write("modules.json", R"([{"path":"","type":"sentence_transformers.models.Transformer"},
      {"path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
      {"path":"2_Normalize","type":"sentence_transformers.models.Normalize"}])");
  auto cm = create_encoder("bert:" + d->str());
  EXPECT_EQ(cm->dim(), 128u);
  const Matrix x = cm->encode(texts, 1);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<float> both(ref.cls[i]);
    both.insert(both.end(), ref.mean[i].begin(), ref.mean[i].end());
    double norm = 0;
    for (float v : both) norm += double(v) * v;
    for (auto& v : both) v = float(v / std::sqrt(norm));
    EXPECT_LT(rel_error(x.row(i), both), 1e-4);
  }
  d->write("1_Pooling/config.json", R"({"pooling_mode": "cls"})");
  EXPECT_EQ(create_encoder("bert:" + d->str())->spec().find("pooling=cls") != std::string::npos, true);
  d->write("1_Pooling/config.json", R"({"pooling_mode_cls_token": false})");
  EXPECT_TRUE(
      throws_error([&] { create_encoder("bert:" + d->str()); }, {"1_Pooling/config.json", "no pooling"}));
  // Without sentence-transformers files: mean pooling, no normalisation, length from the tokenizer config.
  fs::remove(d->file("modules.json"));
  fs::remove_all(d->file("1_Pooling"));
  fs::remove(d->file("sentence_bert_config.json"));
  auto plain = create_encoder("bert:" + d->str());
  EXPECT_EQ(plain->spec(), "bert:dir=" + d->str() + ",max_length=64,normalize=false,pooling=mean,quant=none");
  const Matrix p = plain->encode(texts, 1);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_LT(rel_error(p.row(i), ref.mean[i]), 1e-4);
}

TEST(Bert, PrefixedAndHalfPrecisionWeights) {
  if (!have_fixture("tiny-bert-uncased")) GTEST_SKIP() << "fixture not found";
  const Reference ref = read_reference("tiny-bert-uncased");
  const std::vector<std::string> texts(ref.texts.begin(), ref.texts.begin() + 8);
  auto d = TempDir::copy_of("tiny-bert-uncased");
  const TensorMap orig = load_safetensors(d->file("model.safetensors"));
  // "bert." prefix, as in BertForMaskedLM checkpoints, with extra heads that are ignored.
  TensorMap pre;
  for (auto& [k, v] : orig) pre["bert." + k] = v;
  const float extra[4] = {1, 2, 3, 4};
  pre["cls.predictions.bias"] = Tensor::from_f32({4}, extra);
  save_safetensors(d->file("model.safetensors"), pre);
  const Matrix a = encode("bert:" + d->str() + ",pooling=mean,normalize=false", texts);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_LT(rel_error(a.row(i), ref.mean[i]), 1e-4);
  // BF16 and F16 files give exactly the vectors of an F32 file holding the same (rounded) values.
  for (const std::string dtype : {"BF16", "F16"}) {
    std::map<std::string, RawTensor> half;
    TensorMap rounded;
    for (auto& [k, v] : orig) {
      const auto f = v.to_f32(k);
      std::string bytes(f.size() * 2, '\0');
      std::vector<float> back(f.size());
      for (size_t i = 0; i < f.size(); ++i) {
        uint16_t h;
        if (dtype == "BF16") {
          uint32_t bits;
          std::memcpy(&bits, &f[i], 4);
          h = uint16_t((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);  // round to nearest even
          const uint32_t b2 = uint32_t(h) << 16;
          std::memcpy(&back[i], &b2, 4);
        } else {
          const _Float16 x = static_cast<_Float16>(f[i]);
          std::memcpy(&h, &x, 2);
          back[i] = float(x);
        }
        std::memcpy(&bytes[2 * i], &h, 2);
      }
      half[k] = {dtype, v.shape, bytes};
      rounded[k] = Tensor::from_f32(v.shape, back.data());
    }
    write_raw_safetensors(d->file("model.safetensors"), half);
    const Matrix h = encode("bert:" + d->str(), texts);
    save_safetensors(d->file("model.safetensors"), rounded);
    const Matrix r = encode("bert:" + d->str(), texts);
    EXPECT_EQ(h.data, r.data) << dtype;
    for (size_t i = 0; i < texts.size(); ++i)
      EXPECT_GT(cosine(h.row(i), ref.mean_norm[i].data(), 64), 0.99) << dtype;
  }
}

TEST(Bert, BadModelFoldersAreErrorsNamingTheFile) {
  if (!have_fixture("tiny-bert-uncased")) GTEST_SKIP() << "fixture not found";
  auto fresh = [] { return TempDir::copy_of("tiny-bert-uncased"); };
  auto load = [](const std::unique_ptr<TempDir>& d) { return [&] { create_encoder("bert:" + d->str()); }; };
  EXPECT_TRUE(
      throws_error([] { create_encoder("bert:/no/such/model"); }, {"/no/such/model", "does not exist"}));
  {
    auto d = fresh();
    fs::remove(d->file("config.json"));
    EXPECT_TRUE(throws_error(load(d), {"no config.json", d->str()}));
  }
  {
    auto d = fresh();
    d->write("config.json", "{\"hidden_size\": 64,");
    EXPECT_TRUE(throws_error(load(d), {d->file("config.json"), "malformed JSON"}));
  }
  {
    auto d = fresh();
    json c = json::parse(std::ifstream(d->file("config.json")));
    c["model_type"] = "gpt2";
    d->write("config.json", c.dump());
    EXPECT_TRUE(throws_error(load(d), {d->file("config.json"), "unknown architecture 'gpt2'"}));
    c["model_type"] = "bert";
    c.erase("num_attention_heads");
    d->write("config.json", c.dump());
    EXPECT_TRUE(throws_error(load(d), {d->file("config.json"), "num_attention_heads"}));
    c["num_attention_heads"] = 5;
    d->write("config.json", c.dump());
    EXPECT_TRUE(throws_error(load(d), {d->file("config.json"), "not a multiple"}));
    c["num_attention_heads"] = 4;
    c["hidden_act"] = "swish";
    d->write("config.json", c.dump());
    EXPECT_TRUE(throws_error(load(d), {d->file("config.json"), "swish"}));
    c["hidden_act"] = "gelu";
    c["intermediate_size"] = 96;  // the weights are 128 wide
    d->write("config.json", c.dump());
    EXPECT_TRUE(throws_error(load(d), {d->file("model.safetensors"), "intermediate.dense.weight", "[128, 64]",
                                       "expected [96, 64]"}));
  }
  {
    auto d = fresh();
    fs::remove(d->file("model.safetensors"));
    EXPECT_TRUE(throws_error(load(d), {"no model.safetensors", d->str()}));
  }
  {
    auto d = fresh();
    const std::string bytes = read_file(d->file("model.safetensors"));
    d->write("model.safetensors", bytes.substr(0, bytes.size() - 100));
    EXPECT_TRUE(throws_error(load(d), {d->file("model.safetensors"), "truncated"}));
    d->write("model.safetensors", bytes.substr(0, 20));
    EXPECT_TRUE(throws_error(load(d), {d->file("model.safetensors")}));
  }
  {
    auto d = fresh();
    TensorMap t = load_safetensors(d->file("model.safetensors"));
    t.erase("encoder.layer.1.attention.self.key.bias");
    save_safetensors(d->file("model.safetensors"), t);
    EXPECT_TRUE(
        throws_error(load(d), {d->file("model.safetensors"), "encoder.layer.1.attention.self.key.bias"}));
    t = load_safetensors(fixture_dir("tiny-bert-uncased") + "/model.safetensors");
    const std::vector<uint32_t> ints(64, 1);
    t["embeddings.LayerNorm.bias"] = Tensor::from_u32({64}, ints.data());
    save_safetensors(d->file("model.safetensors"), t);
    EXPECT_TRUE(throws_error(load(d), {"embeddings.LayerNorm.bias", "U32"}));
  }
  {
    auto d = fresh();
    fs::remove(d->file("tokenizer.json"));
    fs::remove(d->file("vocab.txt"));
    EXPECT_TRUE(throws_error(load(d), {"neither tokenizer.json nor vocab.txt"}));
  }
  {
    auto d = fresh();  // vocab.txt alone is enough
    fs::remove(d->file("tokenizer.json"));
    const Reference ref = read_reference("tiny-bert-uncased");
    auto enc = create_encoder("bert:" + d->str());
    for (size_t i = 0; i < ref.texts.size(); ++i) EXPECT_EQ(enc->token_ids(ref.texts[i]), ref.ids[i]);
  }
}
