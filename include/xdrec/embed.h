// Text vectors of a dataset's items and users, through a cache keyed by (encoder fingerprint, text).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/dataset.h"
#include "xdrec/encoder.h"
#include "xdrec/split.h"

namespace xdrec {

// The item text every command and benchmark renders unless told otherwise.
inline constexpr const char* kDefaultItemTemplate = "{title}. {categories}. {description}";

// Item text from a template with the placeholders {title}, {description}, {categories} (joined with ", "),
// {domain} and {id}; "{{" and "}}" stand for literal braces. A placeholder whose value is empty is dropped
// together with the literal text after it (up to the next placeholder), and the result is trimmed of white
// space, so "{title}. {categories}. {description}" gives "Heat (1995). Action, Crime." when there is no
// description. Throws Error for an unknown placeholder or an unbalanced brace.
std::string render_item_text(const std::string& tmpl, const ItemText& text, const std::string& domain = "",
                             const std::string& id = "");
void check_item_template(const std::string& tmpl);

// One text per item, rendered with the template. With include_tags, the categories are those of
// item_text_with_tags(ds, Split{}) (split.h): every user-written tag is appended (at most 20 per item, the
// most used first). Such vectors see tags written by every user, including those whose interactions a
// cold-item protocol holds out: for cold-item evaluation build the texts from the split instead.
std::vector<std::string> dataset_item_texts(const Dataset& ds, const std::string& tmpl,
                                            bool include_tags = true);
// One text per user: the profile text (empty when the dataset has none).
std::vector<std::string> dataset_user_texts(const Dataset& ds);

// $XDG_CACHE_HOME/xdrec/embeddings, else ~/.cache/xdrec/embeddings.
std::string default_embedding_cache_dir();

// Vectors of texts for one encoder fingerprint, stored in one file per fingerprint in a directory:
// DIR/<hash of the fingerprint>.xdemb. File layout (little-endian): magic "XDREMB01", u32 dim,
// u32 fingerprint length, u64 count, the fingerprint bytes, count 128-bit text keys (two u64 each),
// then count x dim f32 vectors. A text's key is two independent 64-bit hashes of its bytes. Files are
// written atomically; a file that is unreadable, truncated or made for another fingerprint is ignored (and
// replaced at the next save).
class EmbeddingCache {
 public:
  EmbeddingCache(std::string dir, std::string fingerprint);  // loads the file when there is one
  const std::string& path() const { return path_; }
  size_t dim() const { return dim_; }  // 0 while empty
  size_t size() const { return keys_.size(); }
  const float* find(std::string_view text) const;  // nullptr when absent
  // Adds or replaces one vector; Error when dim differs from the vectors already held.
  void put(std::string_view text, const float* vec, size_t dim);
  // Writes every entry, first merging the entries another process may have saved in the meantime.
  void save();

 private:
  struct Key {
    uint64_t a, b;
    bool operator==(const Key& o) const { return a == o.a && b == o.b; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return size_t(k.a); }
  };
  static Key key_of(std::string_view text);
  void load_into(std::unordered_map<Key, size_t, KeyHash>& index, std::vector<Key>& keys,
                 std::vector<float>& vecs, size_t& dim) const;

  std::string dir_, fingerprint_, path_;
  size_t dim_ = 0;
  std::vector<Key> keys_;
  std::vector<float> vecs_;
  std::unordered_map<Key, size_t, KeyHash> index_;
  bool dirty_ = false;
};

struct EmbedOptions {
  std::string item_template = kDefaultItemTemplate;
  bool include_tags = true;  // see dataset_item_texts
  std::string cache_dir;     // empty: default_embedding_cache_dir()
  bool use_cache = true;
  size_t batch = 64;           // texts per encode() call (and per progress step)
  int threads = 0;             // passed to fit() and encode(); 0 = all hardware threads
  double save_every_s = 60.0;  // while encoding, save the cache at most this often (kept on interruption)
  ProgressFn progress;         // (done, total, label) per batch; may be empty
};

struct EmbedStats {
  size_t texts = 0;    // texts asked for
  size_t unique = 0;   // distinct texts among them
  size_t cached = 0;   // distinct texts found in the cache
  size_t encoded = 0;  // distinct texts encoded in this call
  double fit_seconds = 0, encode_seconds = 0;
  double texts_per_second() const { return encode_seconds > 0 ? double(encoded) / encode_seconds : 0.0; }
};

// Vectors of texts (texts.size() x dim), each distinct text encoded once and only when the cache does not
// have it for this encoder's fingerprint. The encoder must be fitted already when it needs fitting.
Matrix encode_with_cache(const TextEncoder& enc, std::span<const std::string> texts, const EmbedOptions& opt,
                         EmbedStats* stats = nullptr);

struct TextVectors {
  Matrix items;  // n_items x dim, in Dataset item order
  Matrix users;  // n_users x dim, in Dataset user order
  std::string encoder_spec, fingerprint;
  size_t items_with_text = 0, users_with_text = 0;
  EmbedStats stats;
};

// Item and user vectors of a dataset: the one builder of text vectors. The rule for empty text: an item whose
// rendered text is empty, or a user without a profile text, gets a row of zeros ("no text") and is not
// encoded; models treat a zero row as absent text. Item texts: with `split`, the categories carry the user
// tags whose (user, item) pair the split does not hold out (item_text_with_tags), so a cold item's text never
// carries tags of the users being predicted; without, every tag when opt.include_tags. An encoder that needs
// fitting (tfidf) is first fitted on the non-empty item texts, so its fingerprint, and hence its cache file,
// follows the dataset's text. Throws Error when no item has text for the template.
TextVectors embed_dataset(const Dataset& ds, TextEncoder& enc, const EmbedOptions& opt,
                          const Split* split = nullptr);
// The item texts embed_dataset encodes (one per item; empty for an item without text).
std::vector<std::string> dataset_item_texts(const Dataset& ds, const std::string& tmpl, const Split* split,
                                            bool include_tags);

// Writes `items` and `users` (F32) to a safetensors file with metadata: encoder (spec), fingerprint, dim,
// template, dataset name and fingerprint, and the counts.
void save_text_vectors(const std::string& path, const TextVectors& v, const Dataset& ds,
                       const EmbedOptions& opt);

}  // namespace xdrec
