// tfidf encoder, its randomized SVD and the text utilities it uses.
#define EIGEN_DONT_PARALLELIZE
// GCC 12 reports false (maybe-)uninitialized warnings inside its own AVX-512 intrinsics when it inlines
// Eigen's kernels (seen at -O1 in the sanitizer build); silenced for these headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "text/rsvd.h"
#include "text/text_util.h"
#include "xdrec/encoder.h"

namespace xdrec {
namespace {

double cosine(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i)
    ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return (aa > 0 && bb > 0) ? ab / std::sqrt(aa * bb) : 0.0;
}

double norm(const float* a, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i]) * a[i];
  return std::sqrt(s);
}

Csr dense_to_csr(const Eigen::MatrixXd& m) {
  std::vector<uint32_t> r, c;
  std::vector<float> v;
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j)
      if (m(i, j) != 0) r.push_back(uint32_t(i)), c.push_back(uint32_t(j)), v.push_back(float(m(i, j)));
  return Csr::from_triplets(uint32_t(m.rows()), uint32_t(m.cols()), r, c, v);
}

Eigen::MatrixXd reconstruct(const text::RsvdResult& r) {
  const size_t k = r.singular_values.size();
  Eigen::MatrixXd u(r.u.rows, k), v(r.v.rows, k);
  for (size_t i = 0; i < r.u.rows; ++i)
    for (size_t j = 0; j < k; ++j) u(i, j) = r.u(i, j);
  for (size_t i = 0; i < r.v.rows; ++i)
    for (size_t j = 0; j < k; ++j) v(i, j) = r.v(i, j);
  Eigen::VectorXd s(k);
  for (size_t j = 0; j < k; ++j) s(j) = r.singular_values[j];
  return u * s.asDiagonal() * v.transpose();
}

// A rows x cols matrix of exact rank `rank` with singular values 10, 9, ..., from seeded random factors.
Eigen::MatrixXd low_rank(int rows, int cols, int rank, uint64_t seed) {
  Rng rng(seed);
  Eigen::MatrixXd a(rows, rank), b(cols, rank);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < rank; ++j) a(i, j) = rng.normal();
  for (int i = 0; i < cols; ++i)
    for (int j = 0; j < rank; ++j) b(i, j) = rng.normal();
  Eigen::MatrixXd qa =
      Eigen::HouseholderQR<Eigen::MatrixXd>(a).householderQ() * Eigen::MatrixXd::Identity(rows, rank);
  Eigen::MatrixXd qb =
      Eigen::HouseholderQR<Eigen::MatrixXd>(b).householderQ() * Eigen::MatrixXd::Identity(cols, rank);
  Eigen::VectorXd s(rank);
  for (int j = 0; j < rank; ++j) s(j) = 10.0 - j;
  return qa * s.asDiagonal() * qb.transpose();
}

TEST(RandomizedSvd, ReconstructsALowRankMatrix) {
  const Eigen::MatrixXd m = low_rank(150, 90, 6, 7);
  text::RsvdOptions opt;
  opt.rank = 6;
  opt.oversample = 5;
  const text::RsvdResult r = text::randomized_svd(dense_to_csr(m), opt);
  ASSERT_EQ(r.singular_values.size(), 6u);
  for (int j = 0; j < 6; ++j) EXPECT_NEAR(r.singular_values[j], 10.0 - j, 1e-6);
  EXPECT_LT((reconstruct(r) - m).norm() / m.norm(), 1e-5);
  // Orthonormal columns.
  Eigen::MatrixXd v(r.v.rows, 6);
  for (size_t i = 0; i < r.v.rows; ++i)
    for (size_t j = 0; j < 6; ++j) v(i, j) = r.v(i, j);
  EXPECT_LT((v.transpose() * v - Eigen::MatrixXd::Identity(6, 6)).norm(), 1e-5);
}

TEST(RandomizedSvd, MoreComponentsThanTheRankGivesZeroSingularValues) {
  const Eigen::MatrixXd m = low_rank(60, 40, 3, 11);
  text::RsvdOptions opt;
  opt.rank = 8;
  const text::RsvdResult r = text::randomized_svd(dense_to_csr(m), opt);
  ASSERT_EQ(r.singular_values.size(), 8u);
  for (int j = 3; j < 8; ++j) EXPECT_LT(r.singular_values[j], 1e-5);  // float input: rank 3 up to rounding
  EXPECT_LT((reconstruct(r) - m).norm() / m.norm(), 1e-5);
  // Asking for more than min(rows, cols) returns min(rows, cols) components.
  opt.rank = 100;
  EXPECT_EQ(text::randomized_svd(dense_to_csr(m), opt).singular_values.size(), 40u);
}

TEST(RandomizedSvd, MatchesTheExactTopSingularValuesOfASparseMatrix) {
  // Sparse random matrix with a decaying spectrum: rows scaled by 1/(1+i/10).
  Rng rng(3);
  Eigen::MatrixXd m = Eigen::MatrixXd::Zero(300, 200);
  for (int i = 0; i < 300; ++i)
    for (int e = 0; e < 12; ++e) m(i, Eigen::Index(rng.below(200))) = rng.normal() / (1.0 + i / 10.0);
  Eigen::JacobiSVD<Eigen::MatrixXd> exact(m);
  text::RsvdOptions opt;
  opt.rank = 10;
  opt.power_iters = 4;
  opt.oversample = 20;
  const text::RsvdResult r = text::randomized_svd(dense_to_csr(m), opt);
  for (int j = 0; j < 10; ++j)
    EXPECT_NEAR(r.singular_values[j], exact.singularValues()(j), 2e-3 * exact.singularValues()(0));
}

TEST(RandomizedSvd, DeterministicAndThreadIndependent) {
  Rng rng(5);
  std::vector<uint32_t> rr, cc;
  std::vector<float> vv;
  for (uint32_t i = 0; i < 2000; ++i)
    for (int e = 0; e < 8; ++e)
      rr.push_back(i), cc.push_back(uint32_t(rng.below(700))), vv.push_back(rng.normal());
  const Csr a = Csr::from_triplets(2000, 700, rr, cc, vv);
  text::RsvdOptions opt;
  opt.rank = 16;
  opt.threads = 1;
  const auto r1 = text::randomized_svd(a, opt);
  opt.threads = 2;
  const auto r2 = text::randomized_svd(a, opt);
  EXPECT_EQ(r1.singular_values, r2.singular_values);
  EXPECT_EQ(r1.v.data, r2.v.data);
  EXPECT_EQ(r1.u.data, r2.u.data);
  opt.seed = 43;
  const auto r3 = text::randomized_svd(a, opt);
  EXPECT_NE(r1.v.data, r3.v.data);
}

TEST(TextUtil, LowerCasesLatinGreekCyrillicAndFullWidth) {
  EXPECT_EQ(text::lower_utf8("Hello WORLD 123"), "hello world 123");
  EXPECT_EQ(text::lower_utf8("ÀÉÎÕÜ Ç Ñ Ø Þ ß ÿ"), "àéîõü ç ñ ø þ ß ÿ");
  EXPECT_EQ(text::lower_utf8("ŁÓDŹ ŚWIĘTY Ÿ"), "łódź święty ÿ");
  EXPECT_EQ(text::lower_utf8("ΣΟΦΊΑ"), "σοφία");
  EXPECT_EQ(text::lower_utf8("ПРИВЕТ ЁЖ"), "привет ёж");
  EXPECT_EQ(text::lower_utf8("ＡＢＣ"), "ａｂｃ");
  EXPECT_EQ(text::lower_utf8("日本語 😀"), "日本語 😀");
}

TEST(TextUtil, WordsSplitOnPunctuationAndKeepUnicodeLetters) {
  auto ws = text::words("Crème brûlée, 2-PACK!  日本語。Ünïcode😀ok");
  std::vector<std::string> got;
  for (auto& w : ws) got.push_back(text::encode_utf8(w));
  EXPECT_EQ(got, (std::vector<std::string>{"crème", "brûlée", "2", "pack", "日本語", "ünïcode", "ok"}));
  // Invalid UTF-8 decodes to U+FFFD (not a word character) instead of failing.
  auto bad = text::words(std::string("ab\xff") + "cd");
  ASSERT_EQ(bad.size(), 2u);
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> c = {
      "Stainless Steel Chef Knife 8 inch",
      "Professional chef's knife, 8-inch high carbon stainless steel",
      "Bread knife with serrated edge",
      "Organic green tea bags, 100 count",
      "Earl Grey black tea, loose leaf",
      "Jasmine green tea with honey",
      "Cast iron skillet 12 inch pre-seasoned",
      "Non-stick frying pan 10 inch",
      "Espresso coffee beans, dark roast",
      "Ground coffee medium roast 12 oz",
      "Dark chocolate bar 70% cocoa",
      "Milk chocolate with hazelnuts",
      "Wooden cutting board, large",
      "Bamboo cutting board set of 3",
      "Kitchen scale digital, stainless steel",
      "Silicone baking mat set",
      "Extra virgin olive oil 1 liter",
      "Balsamic vinegar of Modena",
      "Himalayan pink salt grinder",
      "Whole black peppercorns 8 oz",
  };
  return c;
}

std::unique_ptr<TextEncoder> fitted(const std::string& spec, int threads = 1) {
  auto e = create_encoder(spec);
  e->fit(corpus(), threads);
  return e;
}

TEST(Tfidf, NearDuplicatesAreCloserThanUnrelatedTexts) {
  auto e = fitted("tfidf:dim=16");
  EXPECT_TRUE(e->needs_fit());
  std::vector<std::string> t = {"stainless steel chef knife, 8 inch", "STAINLESS-STEEL CHEF'S KNIFE 8in",
                                "organic green tea", "green tea bags organic", "cast iron skillet"};
  Matrix v = e->encode(t, 1);
  ASSERT_EQ(v.rows, 5u);
  ASSERT_EQ(v.cols, 16u);
  const double dup = cosine(v.row(0), v.row(1), 16);
  EXPECT_GT(dup, 0.8);
  EXPECT_GT(dup, cosine(v.row(0), v.row(2), 16) + 0.3);
  EXPECT_GT(dup, cosine(v.row(0), v.row(4), 16) + 0.3);
  EXPECT_GT(cosine(v.row(2), v.row(3), 16), cosine(v.row(2), v.row(4), 16) + 0.3);
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(norm(v.row(i), 16), 1.0, 1e-5);
}

// With dim at least the corpus rank, the SVD basis spans every corpus vector, so the encoder preserves
// the cosines between corpus texts exactly: check them against TF-IDF weights computed here by hand.
TEST(Tfidf, PreservesHandComputedTfidfCosinesOfCorpusTexts) {
  const std::vector<std::string> docs = {"apple banana apple", "banana cherry", "cherry apple date date date",
                                         "elder"};
  auto e = create_encoder("tfidf:dim=8,word_ngrams=1,char_max=0");
  e->fit(docs, 1);
  Matrix v = e->encode(docs, 1);
  // Vocabulary and document frequencies: apple 2, banana 2, cherry 2, date 1, elder 1; N = 4.
  const std::vector<std::string> vocab = {"apple", "banana", "cherry", "date", "elder"};
  const std::vector<double> df = {2, 2, 2, 1, 1};
  const std::vector<std::map<std::string, double>> tf = {{{"apple", 2}, {"banana", 1}},
                                                         {{"banana", 1}, {"cherry", 1}},
                                                         {{"cherry", 1}, {"apple", 1}, {"date", 3}},
                                                         {{"elder", 1}}};
  std::vector<std::vector<double>> x(4, std::vector<double>(5, 0.0));
  for (size_t d = 0; d < 4; ++d)
    for (size_t w = 0; w < 5; ++w)
      if (tf[d].count(vocab[w]))
        x[d][w] = (1 + std::log(tf[d].at(vocab[w]))) * (std::log(5.0 / (1 + df[w])) + 1);
  auto cos_ref = [&](size_t a, size_t b) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t w = 0; w < 5; ++w) ab += x[a][w] * x[b][w], aa += x[a][w] * x[a][w], bb += x[b][w] * x[b][w];
    return ab / std::sqrt(aa * bb);
  };
  for (size_t a = 0; a < 4; ++a)
    for (size_t b = 0; b < 4; ++b)
      EXPECT_NEAR(cosine(v.row(a), v.row(b), 8), cos_ref(a, b), 1e-5) << a << "," << b;
  // Four texts: components 5..8 are zero.
  for (size_t d = 0; d < 4; ++d)
    for (size_t j = 4; j < 8; ++j) EXPECT_EQ(v(d, j), 0.0f);
}

TEST(Tfidf, DeterministicAndThreadIndependent) {
  std::vector<std::string> t(corpus().begin(), corpus().end());
  t.push_back("");
  t.push_back("unseen words only: zyzzyva");
  auto a = fitted("tfidf:dim=12", 1);
  auto b = fitted("tfidf:dim=12", 2);
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
  EXPECT_EQ(a->encode(t, 1).data, b->encode(t, 2).data);
  auto c = fitted("tfidf:dim=12,seed=7", 1);
  EXPECT_NE(a->fingerprint(), c->fingerprint());

  // A corpus large enough that every parallel loop (features, products, encoding) is split among threads.
  const std::vector<std::string> vocab = {"steel", "knife", "green", "tea",   "coffee", "dark",
                                          "roast", "pan",   "iron",  "board", "olive",  "oil",
                                          "salt",  "pink",  "bread", "mat",   "cup",    "mug",
                                          "café",  "crème", "日本",  "set",   "large",  "small"};
  Rng rng(9);
  std::vector<std::string> big(3000);
  for (auto& text : big)
    for (int w = 0, n = 2 + int(rng.below(6)); w < n; ++w) text += vocab[rng.below(vocab.size())] + " ";
  auto e1 = create_encoder("tfidf:dim=24");
  auto e3 = create_encoder("tfidf:dim=24");
  e1->fit(big, 1);
  e3->fit(big, 3);
  EXPECT_EQ(e1->fingerprint(), e3->fingerprint());
  EXPECT_EQ(e1->encode(big, 1).data, e3->encode(big, 3).data);
}

TEST(Tfidf, DimensionAndZeroVectorForTextsWithoutKnownFeatures) {
  auto e = fitted("tfidf");
  EXPECT_EQ(e->dim(), 256u);
  std::vector<std::string> t = {"", "!!! ... ???", "knife"};
  Matrix v = e->encode(t, 1);
  ASSERT_EQ(v.cols, 256u);
  EXPECT_EQ(norm(v.row(0), 256), 0.0);
  EXPECT_EQ(norm(v.row(1), 256), 0.0);
  EXPECT_NEAR(norm(v.row(2), 256), 1.0, 1e-5);
  // Twenty corpus texts: at most 20 non-zero components.
  for (size_t j = 20; j < 256; ++j) EXPECT_EQ(v(2, j), 0.0f);
  EXPECT_EQ(fitted("tfidf:dim=5")->encode(t, 1).cols, 5u);
}

TEST(Tfidf, CaseInsensitiveAcrossUnicodeAndSafeOnAnyBytes) {
  std::vector<std::string> c = corpus();
  c.push_back("Crème brûlée ÉCLAIR");
  c.push_back("日本茶 緑茶");
  auto e = create_encoder("tfidf:dim=10");
  e->fit(c, 1);
  std::vector<std::string> t = {"CRÈME BRÛLÉE éclair", "crème brûlée Éclair", "日本茶",
                                std::string("bad \xff\xfe utf8")};
  Matrix v = e->encode(t, 1);
  EXPECT_EQ(std::vector<float>(v.row(0), v.row(0) + 10), std::vector<float>(v.row(1), v.row(1) + 10));
  EXPECT_NEAR(norm(v.row(2), 10), 1.0, 1e-5);
  for (float x : v.data) EXPECT_TRUE(std::isfinite(x));
}

TEST(Tfidf, FingerprintReflectsTheFittedCorpus) {
  auto a = fitted("tfidf:dim=8");
  auto b = create_encoder("tfidf:dim=8");
  std::vector<std::string> other = {"something else entirely", "another corpus text"};
  b->fit(other, 1);
  EXPECT_NE(a->fingerprint(), b->fingerprint());
  EXPECT_NE(a->fingerprint(), create_encoder("tfidf:dim=8")->fingerprint());
  EXPECT_EQ(a->spec(), b->spec());
}

TEST(Tfidf, ErrorsAreClear) {
  auto e = create_encoder("tfidf");
  std::vector<std::string> t = {"x"};
  try {
    e->encode(t, 1);
    FAIL() << "expected an error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("fit"), std::string::npos) << err.what();
  }
  EXPECT_THROW(e->fit(std::span<const std::string>(), 1), Error);
  EXPECT_THROW(create_encoder("tfidf:dims=3"), Error);
  EXPECT_THROW(create_encoder("tfidf:dim=0"), Error);
  EXPECT_THROW(create_encoder("tfidf:char_min=5,char_max=3"), Error);
  EXPECT_THROW(create_encoder("tfidf:word_ngrams=0,char_max=0"), Error);
  EXPECT_THROW(e->token_ids("x"), Error);
}

}  // namespace
}  // namespace xdrec
