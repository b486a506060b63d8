// Universal Sentence Encoder Lite: NFKC and tokenizer rules on hand-made cases, then the real model against
// the reference fixtures (token ids exactly, vectors within 1e-5), thread independence, empty and huge
// texts, broken model copies, and the int8 mode's accuracy gate.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "test_util.h"
#include "text/use_lite.h"
#include "text/use_lite_tokenizer.h"
#include "text/use_lite_unicode.h"
#include "xdrec/encoder.h"

using namespace xdrec;
using xdrec::testing_util::throws_error;
namespace fs = std::filesystem;

namespace {

std::u32string nfkc8(const std::string& s) {
  return uselite::nfkc(uselite::decode_utf8(s));
}

std::string model_dir() {
  return model_cache_dir() + "/use-lite";
}
bool model_installed() {
  return fs::is_regular_file(model_dir() + "/package/dist/model.json");
}
std::string fixture_path() {
  return std::string(XDREC_SHARED_DATA) + "/../fixtures/use-lite/reference.jsonl";
}

#define REQUIRE_MODEL()                                             \
  if (!model_installed())                                           \
  GTEST_SKIP() << "use-lite model not installed in " << model_dir() \
               << "; run scripts/fetch-models (or scripts/setup), or set XDREC_MODEL_DIR"

struct Fixture {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> vectors;
};

const Fixture* fixture() {
  static const Fixture* f = [] {
    std::ifstream in(fixture_path());
    if (!in) return static_cast<Fixture*>(nullptr);
    auto* fx = new Fixture;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line);
      fx->texts.push_back(j["text"].get<std::string>());
      fx->ids.push_back(j["ids"].get<std::vector<int32_t>>());
      fx->vectors.push_back(j["embedding"].get<std::vector<float>>());
    }
    return fx;
  }();
  return f;
}

#define REQUIRE_FIXTURE()                                                       \
  REQUIRE_MODEL();                                                              \
  if (!fixture()) GTEST_SKIP() << "fixture " << fixture_path() << " not found"; \
  [[maybe_unused]] const Fixture& fx = *fixture()

// One float encoder for the whole program (loading takes a fraction of a second).
const UseLite& encoder() {
  static const UseLite* e = new UseLite(Spec{"use-lite", {}});
  return *e;
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// A copy of the installed model in a fresh temporary directory (files that a test does not change are
// symbolic links), removed at destruction.
struct ModelCopy {
  fs::path root;
  explicit ModelCopy(const std::string& tag) {
    root = fs::temp_directory_path() / ("xdrec_use_lite_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(dist());
    for (const auto& e : fs::directory_iterator(model_dir() + "/package/dist"))
      fs::create_symlink(e.path(), dist() / e.path().filename());
  }
  ~ModelCopy() { fs::remove_all(root); }
  fs::path dist() const { return root / "package" / "dist"; }
  // Replaces a link by a writable copy of its target's bytes, changed by `edit`.
  void rewrite(const std::string& file, const std::function<void(std::string&)>& edit) {
    const fs::path p = dist() / file;
    std::ifstream in(fs::read_symlink(p), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    edit(bytes);
    fs::remove(p);
    std::ofstream(p, std::ios::binary) << bytes;
  }
  std::string spec() const { return "use-lite:" + root.string(); }
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Unicode

TEST(UseLiteUnicode, DecodesUtf8AndReplacesIllFormedBytes) {
  EXPECT_EQ(uselite::decode_utf8("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"), U"a\u00E9\u20AC\U0001F600");
  EXPECT_EQ(uselite::decode_utf8("\xFF"
                                 "a"),
            U"\uFFFDa");
  EXPECT_EQ(uselite::decode_utf8("\xE2\x82"), U"\uFFFD");  // truncated sequence: one replacement
  EXPECT_EQ(uselite::decode_utf8("\xED\xA0\x80"), U"\uFFFD\uFFFD\uFFFD");  // encoded surrogate
  EXPECT_EQ(uselite::encode_utf8(U"a\u00E9\U0001F600"), "a\xC3\xA9\xF0\x9F\x98\x80");
}

TEST(UseLiteUnicode, NfkcCompatibilityAndComposition) {
  EXPECT_EQ(nfkc8("plain ascii"), U"plain ascii");
  EXPECT_EQ(nfkc8("\uFB01"), U"fi");                  // ligature
  EXPECT_EQ(nfkc8("x\u00B2"), U"x2");                 // superscript
  EXPECT_EQ(nfkc8("\uFF21\uFF42\uFF13"), U"Ab3");     // full-width
  EXPECT_EQ(nfkc8("a\u3000b\u00A0c"), U"a b c");      // ideographic and no-break spaces
  EXPECT_EQ(nfkc8("e\u0301"), U"\u00E9");             // composition
  EXPECT_EQ(nfkc8("\u212B"), U"\u00C5");              // singleton (Angstrom sign)
  EXPECT_EQ(nfkc8("\u1100\u1161\u11A8"), U"\uAC01");  // Hangul jamo L V T
  EXPECT_EQ(nfkc8("\uAC01"), U"\uAC01");
  // Marks reordered by combining class (dot below 220 before circumflex 230), then composed step by step.
  EXPECT_EQ(nfkc8("a\u0302\u0323"), U"\u1EAD");
  EXPECT_EQ(nfkc8("\u1EAD"), U"\u1EAD");
  // A mark of the same class in between blocks composition.
  EXPECT_EQ(nfkc8("a\u0301\u0301"), U"\u00E1\u0301");
  EXPECT_EQ(uselite::combining_class(0x0301), 230);
  EXPECT_EQ(uselite::combining_class(0x0323), 220);
  EXPECT_EQ(uselite::combining_class('a'), 0);
}

// ---------------------------------------------------------------------------------------------------------
// Tokenizer on a hand-made vocabulary

namespace {
uselite::Tokenizer toy_tokenizer(double ab_score) {
  nlohmann::json v = nlohmann::json::array({
      {"\uFFFD", 0},
      {"<s>", 0},
      {"</s>", 0},
      {"r3", 0},
      {"r4", 0},
      {"r5", 0},               // ids 0..5 reserved
      {"\u2581", -1.0},        // 6  ▁
      {"\u2581a", -2.0},       // 7  ▁a
      {"b", -1.0},             // 8
      {"\u2581ab", ab_score},  // 9  ▁ab
      {"a", -1.5},             // 10
      {"c", nullptr},          // 11 null score
      {"\u2581c", -1.5},       // 12 ▁c
      {"\u2581d", nullptr},    // 13 ▁d
      {"d", -3.0},             // 14
      {"<s>", -0.1},           // 15 reserved text again
  });
  return uselite::Tokenizer(v, "toy");
}
}  // namespace

TEST(UseLiteTokenizer, BestScoringSegmentation) {
  // "ab" -> ▁ a b: ▁+a+b = -3.5, ▁a+b = -3, ▁ab = -2.5.
  EXPECT_EQ(toy_tokenizer(-2.5).encode("ab"), (std::vector<int32_t>{9}));
  // ▁ab = -3.5 loses to ▁a + b = -3.
  EXPECT_EQ(toy_tokenizer(-3.5).encode("ab"), (std::vector<int32_t>{7, 8}));
  // Equal totals (-3): the segmentation whose last piece starts last wins.
  EXPECT_EQ(toy_tokenizer(-3.0).encode("ab"), (std::vector<int32_t>{7, 8}));
  // Spaces become ▁ (the text also starts with one); full-width letters are normalised first.
  EXPECT_EQ(toy_tokenizer(-2.5).encode("ab a"), (std::vector<int32_t>{9, 7}));
  EXPECT_EQ(toy_tokenizer(-2.5).encode("\uFF41\uFF42"), (std::vector<int32_t>{9}));
  EXPECT_TRUE(toy_tokenizer(-2.5).encode("").empty());
}

TEST(UseLiteTokenizer, NullScoresCountAsZero) {
  // ▁ + c(null = 0) = -1 beats ▁c = -1.5.
  EXPECT_EQ(toy_tokenizer(-2.5).encode("c"), (std::vector<int32_t>{6, 11}));
  // A total of exactly 0 (▁d has a null score) counts as "not reached": the next candidate, ▁ + d = -4,
  // replaces it although it scores lower. The reference tokenizer behaves so.
  EXPECT_EQ(toy_tokenizer(-2.5).encode("d"), (std::vector<int32_t>{6, 14}));
}

TEST(UseLiteTokenizer, UnknownCharactersBecomeOneIdZeroPerRun) {
  // ☃ and é start no piece: id 0, a run of them merged into one 0.
  EXPECT_EQ(toy_tokenizer(-2.5).encode("a\u2603\u2603b"), (std::vector<int32_t>{7, 0, 8}));
  EXPECT_EQ(toy_tokenizer(-2.5).encode("a\u2603b\u00E9"), (std::vector<int32_t>{7, 0, 8, 0}));
  // Reserved ids are never matched, even when their text occurs.
  const auto ids = toy_tokenizer(-2.5).encode("<s>");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 0);
}

TEST(UseLiteTokenizer, RejectsMalformedVocabulary) {
  EXPECT_TRUE(
      throws_error([] { uselite::Tokenizer(nlohmann::json::object(), "v.json"); }, {"v.json", "array"}));
  EXPECT_TRUE(throws_error(
      [] {
        uselite::Tokenizer(nlohmann::json::array({{"a", "x"}}), "v.json");
      },
      {"v.json", "entry 0"}));
}

// ---------------------------------------------------------------------------------------------------------
// The real model against the reference

TEST(UseLite, TokenIdsMatchReferenceExactly) {
  REQUIRE_FIXTURE();
  ASSERT_EQ(fx.texts.size(), 50u);
  for (size_t i = 0; i < fx.texts.size(); ++i)
    EXPECT_EQ(encoder().token_ids(fx.texts[i]), fx.ids[i]) << "text " << i << ": " << fx.texts[i];
}

TEST(UseLite, EmbeddingsMatchReference) {
  REQUIRE_FIXTURE();
  const Matrix m = encoder().encode(fx.texts, 2);
  ASSERT_EQ(m.rows, fx.texts.size());
  ASSERT_EQ(m.cols, 512u);
  double worst = 0;
  for (size_t i = 0; i < fx.texts.size(); ++i) {
    const double d = max_abs_diff(m.row(i), fx.vectors[i].data(), 512);
    EXPECT_LT(d, 1e-5) << "text " << i << ": " << fx.texts[i];
    worst = std::max(worst, d);
  }
  RecordProperty("max_abs_diff", std::to_string(worst));
  std::printf("use-lite: max abs difference to the reference over %zu texts: %.3g\n", fx.texts.size(), worst);
}

TEST(UseLite, ThreadCountAndBatchDoNotChangeVectors) {
  REQUIRE_FIXTURE();
  const Matrix a = encoder().encode(fx.texts, 1);
  const Matrix b = encoder().encode(fx.texts, 2);
  const Matrix c = encoder().encode(fx.texts, 7);
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ(a.data, c.data);
  // A text alone gives the same vector as inside a batch (up to float rounding of differently sized GEMMs).
  for (size_t i : {0ul, 25ul, 38ul, 49ul}) {
    const Matrix one = encoder().encode(std::span<const std::string>(&fx.texts[i], 1), 1);
    EXPECT_LT(max_abs_diff(one.row(0), a.row(i), 512), 1e-6) << fx.texts[i];
  }
}

TEST(UseLite, EmptyAndHugeTexts) {
  REQUIRE_FIXTURE();
  // The 200-word text (275 ids).
  const size_t long_text = size_t(
      std::max_element(fx.ids.begin(), fx.ids.end(), [](auto& a, auto& b) { return a.size() < b.size(); }) -
      fx.ids.begin());
  ASSERT_GT(fx.ids[long_text].size(), 128u);
  // ~1.3 MB: the long text many times. Its first 128 tokens are those of the long text, so its vector is
  // the long text's vector (only the first 128 tokens are embedded).
  std::string huge;
  while (huge.size() < (1u << 20)) huge += fx.texts[long_text] + " ";
  const auto ids = encoder().token_ids(huge);
  ASSERT_GT(ids.size(), 100000u);
  ASSERT_TRUE(std::equal(ids.begin(), ids.begin() + 128, fx.ids[long_text].begin()));
  std::vector<std::string> batch = {"", huge, fx.texts[long_text], "", "a"};
  const Matrix m = encoder().encode(batch, 2);
  EXPECT_LT(max_abs_diff(m.row(1), m.row(2), 512), 1e-6);
  EXPECT_LT(max_abs_diff(m.row(2), fx.vectors[long_text].data(), 512), 1e-5);
  // Empty texts: tanh(bias) normalised, wherever they are in the batch.
  const size_t empty = size_t(std::find(fx.texts.begin(), fx.texts.end(), "") - fx.texts.begin());
  ASSERT_LT(empty, fx.texts.size());
  EXPECT_LT(max_abs_diff(m.row(0), fx.vectors[empty].data(), 512), 1e-5);
  EXPECT_EQ(std::vector<float>(m.row(0), m.row(0) + 512), std::vector<float>(m.row(3), m.row(3) + 512));
  for (size_t r = 0; r < m.rows; ++r) {
    double sq = 0;
    for (size_t j = 0; j < 512; ++j) sq += double(m(r, j)) * m(r, j);
    EXPECT_NEAR(sq, 1.0, 1e-5);
  }
  EXPECT_EQ(encoder().encode(std::vector<std::string>{}, 2).rows, 0u);
  // Ill-formed UTF-8 and control characters give valid vectors too.
  const Matrix odd =
      encoder().encode(std::vector<std::string>{"\xFF\xFE\x01 bad \xC3", std::string(3, '\0')}, 1);
  for (float v : odd.data) EXPECT_TRUE(std::isfinite(v));
}

TEST(UseLite, PrefixTokenizationAgreesWithWholeText) {
  REQUIRE_FIXTURE();
  // Long texts mixing the fixture texts with pieces that stress a cut before a space: runs of spaces,
  // combining marks and no-break spaces after a space, unknown characters, emoji.
  const std::vector<std::string> extras = {"  ",         " \u0301x", "\u00A0", " \u2603\u2603 ",
                                           "\U0001F600", "\uFF21 ",  "\t\n"};
  const uselite::Tokenizer tok(nlohmann::json::parse(std::ifstream(model_dir() + "/package/dist/vocab.json")),
                               "vocab.json");
  std::mt19937 rng(11);
  for (int round = 0; round < 6; ++round) {
    std::string text;
    while (text.size() < 20000) {
      text += fx.texts[rng() % fx.texts.size()];
      text += extras[rng() % extras.size()];
    }
    const auto whole = encoder().token_ids(text);
    for (size_t k : {1ul, 128ul, 700ul, 3000ul}) {
      const auto ids = tok.encode_prefix(text, k);
      // A prefix of the whole text's ids, with at least k of them.
      ASSERT_GE(ids.size(), std::min(k, whole.size()));
      ASSERT_LE(ids.size(), whole.size());
      EXPECT_TRUE(std::equal(ids.begin(), ids.end(), whole.begin())) << k;
    }
  }
}

TEST(UseLite, MaxTokensTruncates) {
  REQUIRE_FIXTURE();
  // With max_tokens=8 a text is embedded as its first 8 tokens: the same as a text made of those tokens'
  // words when the tokenization of that prefix is the same.
  const UseLite short_enc(Spec{"use-lite", {{"max_tokens", "8"}}});
  EXPECT_EQ(short_enc.spec(), "use-lite:dir=" + model_dir() + ",max_tokens=8,quant=none");
  EXPECT_NE(short_enc.fingerprint(), encoder().fingerprint());
  const std::string text = "The cat sat on the mat. A kitten is resting on the rug.";
  const std::string prefix = "The cat sat on the mat.";  // 8 tokens
  ASSERT_EQ(encoder().token_ids(prefix).size(), 8u);
  const auto full_ids = encoder().token_ids(text);
  ASSERT_TRUE(std::equal(full_ids.begin(), full_ids.begin() + 8, encoder().token_ids(prefix).begin()));
  const Matrix a = short_enc.encode(std::vector<std::string>{text}, 1);
  const Matrix b = encoder().encode(std::vector<std::string>{prefix}, 1);
  EXPECT_LT(max_abs_diff(a.row(0), b.row(0), 512), 1e-6);
}

TEST(UseLite, RegistrySpecsAndFingerprint) {
  REQUIRE_MODEL();
  auto e = create_encoder("use-lite");
  EXPECT_EQ(e->name(), "use-lite");
  EXPECT_EQ(e->dim(), 512u);
  EXPECT_EQ(e->spec(), "use-lite:dir=" + model_dir() + ",max_tokens=128,quant=none");
  EXPECT_EQ(e->fingerprint(), encoder().fingerprint());
  // The directory as a bare argument or as dir=.
  EXPECT_EQ(create_encoder("use-lite:" + model_dir())->fingerprint(), encoder().fingerprint());
  EXPECT_EQ(create_encoder("use-lite:dir=" + model_dir() + ",max_tokens=128")->spec(), e->spec());
  EXPECT_TRUE(throws_error([] { create_encoder("use-lite:max_tokens=0"); }, {"max_tokens"}));
  EXPECT_TRUE(throws_error([] { create_encoder("use-lite:quant=int4"); }, {"quant"}));
  EXPECT_TRUE(throws_error([] { create_encoder("use-lite:colour=red"); }, {"colour"}));
}

// ---------------------------------------------------------------------------------------------------------
// Broken installations

TEST(UseLite, MissingModelNamesDirectoryAndSetupCommand) {
  const std::string dir = (fs::temp_directory_path() / "xdrec_no_such_model_dir").string();
  EXPECT_TRUE(throws_error(
      [&] {
        UseLite(Spec{"use-lite", {{"dir", dir}}});
      },
      {dir, "scripts/fetch-models"}));
}

TEST(UseLite, BrokenCopiesGiveClearErrors) {
  REQUIRE_MODEL();
  {
    ModelCopy c("truncated");
    c.rewrite("group1-shard7of7", [](std::string& b) { b.resize(b.size() - 1000); });
    EXPECT_TRUE(throws_error([&] { create_encoder(c.spec()); },
                             {c.root.string(), "truncated", "scripts/fetch-models"}));
  }
  {
    ModelCopy c("missing_shard");
    fs::remove(c.dist() / "group1-shard3of7");
    EXPECT_TRUE(throws_error([&] { create_encoder(c.spec()); }, {"group1-shard3of7", "missing"}));
  }
  {
    ModelCopy c("bad_json");
    c.rewrite("model.json", [](std::string& b) { b.resize(b.size() / 2); });
    EXPECT_TRUE(throws_error([&] { create_encoder(c.spec()); }, {"model.json", "not valid JSON"}));
  }
  {
    ModelCopy c("bad_vocab");
    c.rewrite("vocab.json", [](std::string& b) { b = "{\"not\": \"a vocabulary\"}"; });
    EXPECT_TRUE(throws_error([&] { create_encoder(c.spec()); }, {"vocab.json", "array"}));
  }
  {
    // Same byte count, wrong shape.
    ModelCopy c("bad_shape");
    c.rewrite("model.json", [](std::string& b) {
      auto j = nlohmann::json::parse(b);
      for (auto& w : j["weightsManifest"][0]["weights"])
        if (w["name"] == "module/Encoder_en/hidden_layers/tanh_layer_0/weights") w["shape"] = {256, 1024};
      b = j.dump();
    });
    EXPECT_TRUE(throws_error([&] { create_encoder(c.spec()); }, {"tanh_layer_0/weights", "shape"}));
  }
}

// ---------------------------------------------------------------------------------------------------------
// int8 weights

TEST(UseLite, Int8StaysCloseToFloat) {
  REQUIRE_FIXTURE();
  const UseLite q(Spec{"use-lite", {{"quant", "int8"}}});
  EXPECT_NE(q.fingerprint(), encoder().fingerprint());
  EXPECT_NE(q.spec().find("quant=int8"), std::string::npos);
  const Matrix a = encoder().encode(fx.texts, 2);
  const Matrix b = q.encode(fx.texts, 2);
  double sum = 0, worst = 1;
  for (size_t i = 0; i < a.rows; ++i) {
    double dot = 0;
    for (size_t j = 0; j < 512; ++j) dot += double(a(i, j)) * b(i, j);
    sum += dot;
    worst = std::min(worst, dot);
  }
  const double mean = sum / double(a.rows);
  EXPECT_GE(mean, 0.995);
  EXPECT_EQ(q.encode(fx.texts, 1).data, b.data);
  // Dense weights: one byte per weight plus a float scale per output channel, against four bytes.
  EXPECT_EQ(q.dense_float_bytes(), encoder().dense_float_bytes());
  EXPECT_LT(q.dense_bytes() * 39, q.dense_float_bytes() * 10);
  std::printf("use-lite int8: mean cosine to float %.5f (min %.5f); dense weights %.1f MB -> %.1f MB\n", mean,
              worst, q.dense_float_bytes() / 1e6, q.dense_bytes() / 1e6);
}
