// tfidf: a corpus-fitted baseline text encoder (the default when no pretrained model is installed).
//
// Features of a text: lower-cased word n-grams (unigrams and bigrams by default) and character n-grams
// (3 to 5 code points by default) taken inside each word padded with a space on both sides, so that they
// never cross a word boundary. Every feature is a 64-bit hash of its code points (one bit marks words vs
// characters); fit() keeps the features of the corpus that occur in at least min_df texts, at most
// max_features of them (most frequent first, ties by hash), which makes the vocabulary exact up to 64-bit
// hash collisions.
// Weights: sublinear term frequency 1 + ln(tf) times the smoothed inverse document frequency
// ln((1 + N) / (1 + df)) + 1 fitted on the corpus. The word block and the character block are each
// L2-normalised, the character block scaled by char_weight, and the whole vector L2-normalised again.
// Reduction: the corpus matrix (texts x features) is reduced by a randomized truncated SVD to `dim`
// components; a text's vector is its weighted feature vector times the right singular vectors
// (x V, i.e. the text's coordinates in the latent space), L2-normalised when normalize=true. When the
// corpus has fewer texts or features than `dim`, the trailing components are zero.
// A text without any known feature (empty, only punctuation, only unseen n-grams) gives the zero vector.
// Everything is deterministic for a given seed and independent of the thread count.

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "data/text.h"
#include "text/rsvd.h"
#include "text/text_util.h"
#include "xdrec/encoder.h"

namespace xdrec {

namespace {

constexpr uint64_t kCharBit = 1ULL << 63;

uint64_t hash_code_points(const char32_t* p, size_t n, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (size_t i = 0; i < n; ++i) {
    h ^= uint64_t(p[i]);
    h *= 0x100000001b3ULL;
  }
  return splitmix64(h);
}

// A text's distinct features with their counts, sorted by key.
struct FeatureCounts {
  std::vector<uint64_t> keys;
  std::vector<float> counts;
};

class TfidfEncoder final : public TextEncoder {
 public:
  explicit TfidfEncoder(const Spec& spec) : params_("tfidf") {
    params_.add("dim", &dim_, 256, 1, 4096, "output dimension (randomized SVD components)")
        .add("word_ngrams", &word_ngrams_, 2, 0, 4, "longest word n-gram (0: no word features)")
        .add("char_min", &char_min_, 3, 1, 10, "shortest character n-gram (code points, within a word)")
        .add("char_max", &char_max_, 5, 0, 10, "longest character n-gram (0: no character features)")
        .add("char_weight", &char_weight_, 1.0, 0.0, 100.0, "weight of the character block vs the word block")
        .add("min_df", &min_df_, 1, 1, INT_MAX, "keep features found in at least this many corpus texts")
        .add("max_features", &max_features_, 65536, 1, 1 << 24,
             "keep at most this many features (most frequent in the corpus first)")
        .add("power_iters", &power_iters_, 2, 0, 20, "power iterations of the randomized SVD")
        .add("oversample", &oversample_, 10, 0, 1000, "extra random directions of the randomized SVD")
        .add("seed", &seed_, 42, 0, INT_MAX, "seed of the randomized SVD")
        .add("normalize", &normalize_, true, "L2-normalise the output vectors");
    params_.apply(spec.values);
    check(word_ngrams_ > 0 || char_max_ > 0, "tfidf: word_ngrams=0 and char_max=0 leave no features");
    check(char_max_ == 0 || char_min_ <= char_max_,
          "tfidf: char_min=" + std::to_string(char_min_) + " exceeds char_max=" + std::to_string(char_max_));
  }

  std::string name() const override { return "tfidf"; }
  std::string spec() const override { return "tfidf:" + params_.current(); }
  size_t dim() const override { return size_t(dim_); }
  bool needs_fit() const override { return true; }

  std::string fingerprint() const override {
    const std::string s = spec();
    uint64_t h = data::hash_bytes(s.data(), s.size(), 0x7466696466ULL);
    if (!fitted_) return hex64(h) + "-unfitted";
    h = data::hash_bytes(keys_.data(), keys_.size() * sizeof(uint64_t), h);
    h = data::hash_bytes(idf_.data(), idf_.size() * sizeof(float), h);
    h = data::hash_bytes(proj_.data.data(), proj_.data.size() * sizeof(float), h);
    return hex64(h);
  }

  void fit(std::span<const std::string> corpus, int threads) override {
    check(!corpus.empty(), "tfidf: cannot fit on an empty corpus");
    const size_t n_docs = corpus.size();
    std::vector<FeatureCounts> docs(n_docs);
    parallel_for(n_docs, threads, 64, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) docs[i] = features(corpus[i]);
    });

    // Document frequencies: every document's keys are distinct, so the runs of the sorted union count them.
    size_t total = 0;
    for (auto& d : docs) total += d.keys.size();
    std::vector<uint64_t> all;
    all.reserve(total);
    for (auto& d : docs) all.insert(all.end(), d.keys.begin(), d.keys.end());
    std::sort(all.begin(), all.end());
    std::vector<std::pair<uint64_t, uint32_t>> df;  // (key, df)
    for (size_t i = 0; i < all.size();) {
      size_t j = i;
      while (j < all.size() && all[j] == all[i]) ++j;
      if (j - i >= size_t(min_df_)) df.emplace_back(all[i], uint32_t(j - i));
      i = j;
    }
    std::vector<uint64_t>().swap(all);
    if (df.size() > size_t(max_features_)) {
      std::nth_element(df.begin(), df.begin() + max_features_, df.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
      });
      df.resize(size_t(max_features_));
      std::sort(df.begin(), df.end());
    }
    keys_.resize(df.size());
    idf_.resize(df.size());
    index_.clear();
    index_.reserve(df.size() * 2);
    for (size_t c = 0; c < df.size(); ++c) {
      keys_[c] = df[c].first;
      idf_[c] = float(std::log((1.0 + double(n_docs)) / (1.0 + double(df[c].second))) + 1.0);
      index_.emplace(keys_[c], uint32_t(c));
    }

    // Weighted corpus matrix (texts x features), rows in corpus order.
    std::vector<std::vector<std::pair<uint32_t, float>>> rows(n_docs);
    parallel_for(n_docs, threads, 64, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) rows[i] = weights(docs[i]);
    });
    std::vector<FeatureCounts>().swap(docs);
    Csr x;
    x.n_rows = uint32_t(n_docs);
    x.n_cols = uint32_t(keys_.size());
    x.indptr.assign(n_docs + 1, 0);
    for (size_t i = 0; i < n_docs; ++i) x.indptr[i + 1] = x.indptr[i] + rows[i].size();
    x.indices.resize(x.indptr.back());
    x.values.resize(x.indptr.back());
    for (size_t i = 0; i < n_docs; ++i) {
      size_t p = x.indptr[i];
      for (auto& [c, w] : rows[i]) x.indices[p] = c, x.values[p++] = w;
    }
    std::vector<std::vector<std::pair<uint32_t, float>>>().swap(rows);

    if (x.nnz() > 0) {
      text::RsvdOptions opt;
      opt.rank = size_t(dim_);
      opt.oversample = size_t(oversample_);
      opt.power_iters = power_iters_;
      opt.seed = uint64_t(seed_);
      opt.threads = threads;
      opt.compute_u = false;
      text::RsvdResult svd = text::randomized_svd(x, opt);
      x = Csr();
      if (svd.v.cols == size_t(dim_)) {
        proj_ = std::move(svd.v);
      } else {  // fewer components than dim (a small corpus): the trailing ones are zero
        proj_.resize(keys_.size(), size_t(dim_));
        for (size_t f = 0; f < keys_.size(); ++f)
          std::memcpy(proj_.row(f), svd.v.row(f), svd.v.cols * sizeof(float));
      }
    } else {
      proj_.resize(keys_.size(), size_t(dim_));
    }
    fitted_ = true;
  }

  Matrix encode(std::span<const std::string> texts, int threads) const override {
    check(fitted_, "tfidf: encode() before fit(); a tfidf encoder must be fitted on a corpus first");
    Matrix out(texts.size(), size_t(dim_));
    parallel_for(texts.size(), threads, 16, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) {
        float* o = out.row(i);  // zero-initialised; accumulated in float (vectorised), one text at a time
        for (auto& [c, w] : weights(features(texts[i]))) {
          const float* p = proj_.row(c);
          for (size_t j = 0; j < size_t(dim_); ++j) o[j] += w * p[j];
        }
        double norm = 0;
        for (size_t j = 0; j < size_t(dim_); ++j) norm += double(o[j]) * o[j];
        if (normalize_ && norm > 0) {
          const float scale = float(1.0 / std::sqrt(norm));
          for (size_t j = 0; j < size_t(dim_); ++j) o[j] *= scale;
        }
      }
    });
    return out;
  }

 private:
  FeatureCounts features(const std::string& text) const {
    std::vector<uint64_t> raw;
    const std::vector<std::u32string> ws = text::words(text);
    if (word_ngrams_ > 0) {
      std::vector<uint64_t> wh(ws.size());
      for (size_t i = 0; i < ws.size(); ++i) wh[i] = hash_code_points(ws[i].data(), ws[i].size(), 0x57);
      for (int n = 1; n <= word_ngrams_; ++n) {
        for (size_t i = 0; i + size_t(n) <= ws.size(); ++i) {
          uint64_t h = splitmix64(0x574e00ULL + uint64_t(n));
          for (int k = 0; k < n; ++k) h = splitmix64(h ^ wh[i + size_t(k)]);
          raw.push_back(h & ~kCharBit);
        }
      }
    }
    if (char_max_ > 0) {
      std::u32string padded;
      for (auto& w : ws) {
        padded.assign(1, U' ');
        padded += w;
        padded.push_back(U' ');
        const size_t len = padded.size();
        for (size_t n = size_t(char_min_); n <= size_t(char_max_); ++n) {
          if (len <= n) {  // the whole padded word, counted once for the first n that reaches it
            raw.push_back(hash_code_points(padded.data(), len, 0x43) | kCharBit);
            break;
          }
          for (size_t s = 0; s + n <= len; ++s)
            raw.push_back(hash_code_points(padded.data() + s, n, 0x43) | kCharBit);
        }
      }
    }
    std::sort(raw.begin(), raw.end());
    FeatureCounts fc;
    for (size_t i = 0; i < raw.size();) {
      size_t j = i;
      while (j < raw.size() && raw[j] == raw[i]) ++j;
      fc.keys.push_back(raw[i]);
      fc.counts.push_back(float(j - i));
      i = j;
    }
    return fc;
  }

  // Known features of a text with their final weights, sorted by column.
  std::vector<std::pair<uint32_t, float>> weights(const FeatureCounts& fc) const {
    std::vector<std::pair<uint32_t, float>> out;
    double norm_w = 0, norm_c = 0;
    for (size_t i = 0; i < fc.keys.size(); ++i) {
      auto it = index_.find(fc.keys[i]);
      if (it == index_.end()) continue;
      const float w = (1.0f + std::log(fc.counts[i])) * idf_[it->second];
      ((fc.keys[i] & kCharBit) ? norm_c : norm_w) += double(w) * w;
      out.emplace_back(it->second, w);
    }
    if (out.empty()) return out;
    const double sw = norm_w > 0 ? 1.0 / std::sqrt(norm_w) : 0.0;
    const double sc = norm_c > 0 ? char_weight_ / std::sqrt(norm_c) : 0.0;
    double total = 0;
    for (auto& [c, w] : out) {
      w = float(w * ((keys_[c] & kCharBit) ? sc : sw));
      total += double(w) * w;
    }
    if (total > 0) {
      const double s = 1.0 / std::sqrt(total);
      for (auto& [c, w] : out) w = float(w * s);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  ParamSet params_;
  int dim_ = 256, word_ngrams_ = 2, char_min_ = 3, char_max_ = 5, min_df_ = 1, max_features_ = 65536;
  int power_iters_ = 2, oversample_ = 10, seed_ = 42;
  double char_weight_ = 1.0;
  bool normalize_ = true;

  bool fitted_ = false;
  std::vector<uint64_t> keys_;  // sorted feature keys (column order)
  std::vector<float> idf_;      // per column
  std::unordered_map<uint64_t, uint32_t> index_;
  Matrix proj_;  // features x dim
};

}  // namespace

XDREC_REGISTER_ENCODER(tfidf, "tfidf",
                       "word and character n-gram TF-IDF fitted on the corpus, reduced by randomized SVD "
                       "(dim=256); the default when no pretrained model is installed",
                       TfidfEncoder);

}  // namespace xdrec
