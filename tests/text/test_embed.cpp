// Item/user text vectors: templates, tags, the embedding cache (hit, miss, changed text, corrupt file,
// concurrent savers) and the safetensors output.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "xdrec/embed.h"
#include "xdrec/readers.h"
#include "xdrec/tensor_io.h"

namespace fs = std::filesystem;

namespace xdrec {
namespace {

struct TempDir {
  TempDir() {
    std::string t = (fs::temp_directory_path() / "xdrec-embed-test-XXXXXX").string();
    if (!mkdtemp(t.data())) throw Error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
  fs::path path;
};

// A pretrained-style encoder that records every text it encodes: vector (length, first byte, salt).
class CountingEncoder : public TextEncoder {
 public:
  explicit CountingEncoder(std::string salt = "a") : salt_(std::move(salt)) {}
  std::string name() const override { return "counting"; }
  std::string spec() const override { return "counting:salt=" + salt_; }
  size_t dim() const override { return 3; }
  std::string fingerprint() const override { return "counting/" + salt_; }  // not a safe file name on purpose
  Matrix encode(std::span<const std::string> texts, int) const override {
    Matrix m(texts.size(), 3);
    for (size_t i = 0; i < texts.size(); ++i) {
      seen.push_back(texts[i]);
      m(i, 0) = float(texts[i].size());
      m(i, 1) = texts[i].empty() ? -1.0f : float(static_cast<unsigned char>(texts[i][0]));
      m(i, 2) = float(salt_.size());
    }
    return m;
  }
  mutable std::vector<std::string> seen;

 private:
  std::string salt_;
};

std::vector<float> expected(const std::string& t, size_t salt = 1) {
  return {float(t.size()), t.empty() ? -1.0f : float(static_cast<unsigned char>(t[0])), float(salt)};
}

TEST(ItemTemplate, RendersAndDropsEmptyParts) {
  ItemText t{"Heat (1995)", "A heist film.", {"Action", "Crime"}};
  const std::string tmpl = "{title}. {categories}. {description}";
  EXPECT_EQ(render_item_text(tmpl, t), "Heat (1995). Action, Crime. A heist film.");
  EXPECT_EQ(render_item_text(tmpl, {"Heat (1995)", "", {"Action", "Crime"}}), "Heat (1995). Action, Crime.");
  EXPECT_EQ(render_item_text(tmpl, {"Heat (1995)", "A heist film.", {}}), "Heat (1995). A heist film.");
  EXPECT_EQ(render_item_text(tmpl, {"", "", {" ", ""}}), "");
  EXPECT_EQ(render_item_text("[{domain}] {id}: {title} {{x}}", t, "movies", "m1"),
            "[movies] m1: Heat (1995) {x}");
  EXPECT_THROW(render_item_text("{title} {genre}", t), Error);
  EXPECT_THROW(check_item_template("{title"), Error);
  EXPECT_THROW(check_item_template("title}"), Error);
  check_item_template("{title}");
}

Dataset small_dataset() {
  Dataset ds;
  ds.name = "tiny";
  for (auto u : {"u1", "u2", "u3"}) ds.add_user(u);
  ds.add_item("i1", "books");
  ds.add_item("i2", "books");
  ds.add_item("i3", "films");
  ds.item_text[0] = {"Dune", "Desert planet.", {"SciFi"}};
  ds.item_text[1] = {"Emma", "", {}};
  ds.item_text[2] = {"Alien", "", {"Horror"}};
  ds.user_profile[0].text = "likes science fiction";
  ds.user_profile[2].text = "horror fan";
  for (uint32_t u = 0; u < 3; ++u)
    for (uint32_t i = 0; i < 3; ++i) ds.interactions.push_back({u, i});
  // Tags: "classic" by two users on Dune, "space" by one; "scifi" repeats the category.
  const uint32_t classic = ds.tag_names.get_or_add("classic"), space = ds.tag_names.get_or_add("space"),
                 scifi = ds.tag_names.get_or_add("SciFi");
  ds.tags = {{0, 0, space}, {1, 0, classic}, {2, 0, classic}, {0, 0, scifi}};
  return ds;
}

TEST(DatasetTexts, ItemsGetTemplatesAndAllTagsUsersTheirProfiles) {
  const Dataset ds = small_dataset();
  const auto items = dataset_item_texts(ds, "{title}. {categories}. {description}");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0], "Dune. SciFi, classic, space. Desert planet.");
  EXPECT_EQ(items[1], "Emma.");
  EXPECT_EQ(items[2], "Alien. Horror.");
  EXPECT_EQ(dataset_item_texts(ds, "{title}. {categories}.", false)[0], "Dune. SciFi.");
  EXPECT_EQ(dataset_user_texts(ds), (std::vector<std::string>{"likes science fiction", "", "horror fan"}));
}

TEST(EmbeddingCache, HitMissAndChangedText) {
  TempDir dir;
  EmbedOptions opt;
  opt.cache_dir = dir.str();
  opt.batch = 2;
  CountingEncoder enc;
  std::vector<std::string> texts = {"alpha", "beta", "alpha", "", "gamma"};
  EmbedStats s1;
  Matrix m1 = encode_with_cache(enc, texts, opt, &s1);
  EXPECT_EQ(enc.seen, (std::vector<std::string>{"alpha", "beta", "", "gamma"}));  // each distinct text once
  EXPECT_EQ(s1.texts, 5u);
  EXPECT_EQ(s1.unique, 4u);
  EXPECT_EQ(s1.cached, 0u);
  EXPECT_EQ(s1.encoded, 4u);
  ASSERT_EQ(m1.rows, 5u);
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(std::vector<float>(m1.row(i), m1.row(i) + 3), expected(texts[i]));

  // Second run (a fresh encoder object, the cache read back from disk): nothing is encoded again.
  CountingEncoder again;
  EmbedStats s2;
  Matrix m2 = encode_with_cache(again, texts, opt, &s2);
  EXPECT_TRUE(again.seen.empty());
  EXPECT_EQ(s2.cached, 4u);
  EXPECT_EQ(s2.encoded, 0u);
  EXPECT_EQ(m2.data, m1.data);

  // A changed text is encoded; the others come from the cache.
  texts[1] = "beta (revised)";
  EmbedStats s3;
  Matrix m3 = encode_with_cache(again, texts, opt, &s3);
  EXPECT_EQ(again.seen, (std::vector<std::string>{"beta (revised)"}));
  EXPECT_EQ(s3.encoded, 1u);
  EXPECT_EQ(std::vector<float>(m3.row(1), m3.row(1) + 3), expected("beta (revised)"));

  // Another fingerprint has its own file: everything is encoded for it.
  CountingEncoder other("bb");
  EmbedStats s4;
  Matrix m4 = encode_with_cache(other, texts, opt, &s4);
  EXPECT_EQ(s4.encoded, 4u);
  EXPECT_EQ(std::vector<float>(m4.row(0), m4.row(0) + 3), expected("alpha", 2));
  size_t files = 0;
  for (auto& f : fs::directory_iterator(dir.path)) files += f.path().extension() == ".xdemb";
  EXPECT_EQ(files, 2u);

  // Without the cache nothing is read or written.
  TempDir none;
  opt.cache_dir = none.str();
  opt.use_cache = false;
  CountingEncoder plain;
  encode_with_cache(plain, texts, opt);
  EXPECT_EQ(plain.seen.size(), 4u);
  EXPECT_TRUE(fs::is_empty(none.path));
}

TEST(EmbeddingCache, ReportsProgressPerBatch) {
  TempDir dir;
  EmbedOptions opt;
  opt.cache_dir = dir.str();
  opt.batch = 2;
  std::vector<std::pair<size_t, size_t>> calls;
  opt.progress = [&](size_t done, size_t total, const std::string&) { calls.emplace_back(done, total); };
  CountingEncoder enc;
  encode_with_cache(enc, std::vector<std::string>{"a", "b", "c"}, opt);
  EXPECT_EQ(calls, (std::vector<std::pair<size_t, size_t>>{{0, 3}, {2, 3}, {3, 3}}));
}

TEST(EmbeddingCache, CorruptFilesAreIgnoredAndReplaced) {
  TempDir dir;
  CountingEncoder enc;
  EmbeddingCache c(dir.str(), enc.fingerprint());
  const float v[3] = {1, 2, 3};
  c.put("x", v, 3);
  c.save();
  ASSERT_TRUE(fs::exists(c.path()));
  EXPECT_EQ(fs::path(c.path()).parent_path(), dir.path);  // the fingerprint's '/' does not make a directory
  fs::resize_file(c.path(), fs::file_size(c.path()) - 2);
  EmbeddingCache broken(dir.str(), enc.fingerprint());
  EXPECT_EQ(broken.size(), 0u);
  EXPECT_EQ(broken.find("x"), nullptr);
  broken.put("y", v, 3);
  broken.save();
  EmbeddingCache fixed(dir.str(), enc.fingerprint());
  EXPECT_EQ(fixed.size(), 1u);
  ASSERT_NE(fixed.find("y"), nullptr);
  EXPECT_EQ(fixed.find("y")[2], 3.0f);
  const float w[4] = {1, 2, 3, 4};
  EXPECT_THROW(fixed.put("z", w, 4), Error);
}

TEST(EmbeddingCache, SaversOfTheSameFingerprintMergeTheirEntries) {
  TempDir dir;
  EmbeddingCache a(dir.str(), "fp"), b(dir.str(), "fp");
  const float va[2] = {1, 1}, vb[2] = {2, 2};
  a.put("from a", va, 2);
  b.put("from b", vb, 2);
  a.save();
  b.save();  // merges what a saved
  EmbeddingCache c(dir.str(), "fp");
  EXPECT_EQ(c.size(), 2u);
  ASSERT_NE(c.find("from a"), nullptr);
  ASSERT_NE(c.find("from b"), nullptr);
  EXPECT_EQ(c.find("from a")[0], 1.0f);
  EXPECT_EQ(c.find("from b")[0], 2.0f);
  EXPECT_EQ(EmbeddingCache(dir.str(), "other fp").size(), 0u);
}

TEST(EmbedDataset, FitsTfidfOnItemTextsAndCachesAcrossRuns) {
  TempDir dir;
  const Dataset ds = small_dataset();
  EmbedOptions opt;
  opt.cache_dir = dir.str();
  opt.threads = 1;
  auto enc = create_encoder("tfidf:dim=4");
  const TextVectors tv = embed_dataset(ds, *enc, opt);
  EXPECT_EQ(tv.items.rows, 3u);
  EXPECT_EQ(tv.users.rows, 3u);
  EXPECT_EQ(tv.items.cols, 4u);
  // 3 item texts + 2 profile texts, all distinct; the user without a profile is not encoded (a zero row).
  EXPECT_EQ(tv.stats.encoded, 5u);
  EXPECT_EQ(tv.items_with_text, 3u);
  EXPECT_EQ(tv.users_with_text, 2u);
  EXPECT_EQ(tv.fingerprint, enc->fingerprint());
  EXPECT_EQ(tv.encoder_spec, enc->spec());
  // Same data, new encoder object: the fit is reproduced, so is the fingerprint: all from the cache.
  auto enc2 = create_encoder("tfidf:dim=4");
  const TextVectors tv2 = embed_dataset(ds, *enc2, opt);
  EXPECT_EQ(tv2.stats.encoded, 0u);
  EXPECT_EQ(tv2.stats.cached, 5u);
  EXPECT_EQ(tv2.items.data, tv.items.data);
  EXPECT_EQ(tv2.users.data, tv.users.data);
  // A changed item text changes the fitted tfidf, hence its fingerprint and cache file.
  Dataset changed = ds;
  changed.item_text[1].title = "Emma, a novel";
  auto enc3 = create_encoder("tfidf:dim=4");
  const TextVectors tv3 = embed_dataset(changed, *enc3, opt);
  EXPECT_NE(tv3.fingerprint, tv.fingerprint);
  EXPECT_EQ(tv3.stats.encoded, 5u);
  // A pretrained encoder re-encodes only the changed text.
  CountingEncoder counting;
  embed_dataset(ds, counting, opt);
  counting.seen.clear();
  const TextVectors tv4 = embed_dataset(changed, counting, opt);
  EXPECT_EQ(counting.seen, (std::vector<std::string>{"Emma, a novel."}));
  EXPECT_EQ(tv4.stats.encoded, 1u);
}

TEST(EmbedDataset, SavesItemsUsersAndMetadata) {
  TempDir dir;
  const Dataset ds = small_dataset();
  EmbedOptions opt;
  opt.cache_dir = dir.str();
  CountingEncoder enc;
  const TextVectors tv = embed_dataset(ds, enc, opt);
  const std::string out = (dir.path / "vectors.safetensors").string();
  save_text_vectors(out, tv, ds, opt);
  std::map<std::string, std::string> meta;
  const TensorMap t = load_safetensors(out, &meta);
  const Matrix items = get_tensor(t, "items").to_matrix("items");
  const Matrix users = get_tensor(t, "users").to_matrix("users");
  EXPECT_EQ(items.rows, 3u);
  EXPECT_EQ(users.rows, 3u);
  EXPECT_EQ(items.data, tv.items.data);
  EXPECT_EQ(users.data, tv.users.data);
  // The one rule for empty text: a user without a profile gets a row of zeros and is never encoded.
  EXPECT_EQ(std::vector<float>(users.row(1), users.row(1) + 3), std::vector<float>(3, 0.0f));
  EXPECT_NE(std::vector<float>(users.row(0), users.row(0) + 3), std::vector<float>(3, 0.0f));
  EXPECT_EQ(meta.at("encoder"), "counting:salt=a");
  EXPECT_EQ(meta.at("fingerprint"), "counting/a");
  EXPECT_EQ(meta.at("template"), opt.item_template);
  EXPECT_EQ(meta.at("dataset"), "tiny");
  EXPECT_EQ(meta.at("dim"), "3");
}

TEST(EmbedDataset, RealMovieLensTitlesWithTfidf) {
  const std::string path = std::string(XDREC_SHARED_DATA) + "/movielens_ml-latest-small";
  if (!fs::exists(path)) GTEST_SKIP() << "shared data not found at " << path;
  TempDir dir;
  ReadOptions ro;
  ro.use_cache = false;
  const Dataset ds = read_dataset(path, "ml-latest-small", ro);
  EmbedOptions opt;
  opt.cache_dir = dir.str();
  opt.item_template = "{title}";
  opt.batch = 1024;
  opt.threads = 2;
  auto enc = create_encoder("tfidf:dim=64");
  const TextVectors tv = embed_dataset(ds, *enc, opt);
  ASSERT_EQ(tv.items.rows, ds.n_items());
  // The two Toy Story sequels are each other's near neighbours; an unrelated title is far.
  auto find = [&](const std::string& title) {
    for (uint32_t i = 0; i < ds.n_items(); ++i)
      if (ds.item_text[i].title == title) return i;
    throw Error("title not found: " + title);
  };
  auto cos = [&](uint32_t a, uint32_t b) {
    double s = 0;
    for (size_t j = 0; j < 64; ++j) s += double(tv.items(a, j)) * tv.items(b, j);
    return s;
  };
  const uint32_t t2 = find("Toy Story 2 (1999)"), t3 = find("Toy Story 3 (2010)"), heat = find("Heat (1995)");
  EXPECT_GT(cos(t2, t3), 0.5);
  EXPECT_GT(cos(t2, t3), cos(t2, heat) + 0.3);
}

}  // namespace
}  // namespace xdrec
