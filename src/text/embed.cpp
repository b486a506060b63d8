// Item and user text vectors with an embedding cache: see include/xdrec/embed.h.
#include "xdrec/embed.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

#include "data/text.h"
#include "xdrec/split.h"
#include "xdrec/tensor_io.h"

namespace fs = std::filesystem;

namespace xdrec {

namespace {

constexpr char kCacheMagic[8] = {'X', 'D', 'R', 'E', 'M', 'B', '0', '1'};

struct TemplatePart {
  std::string literal;  // text after the placeholder (or, for the first part, before any placeholder)
  std::string field;    // empty for the leading literal
};

std::vector<TemplatePart> parse_template(const std::string& t) {
  static const char* const kFields[] = {"title", "description", "categories", "domain", "id"};
  std::vector<TemplatePart> parts(1);
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '{' && i + 1 < t.size() && t[i + 1] == '{') {
      parts.back().literal += '{', ++i;
    } else if (c == '}' && i + 1 < t.size() && t[i + 1] == '}') {
      parts.back().literal += '}', ++i;
    } else if (c == '{') {
      const size_t close = t.find('}', i + 1);
      check(close != std::string::npos, "item template '" + t + "': '{' at position " + std::to_string(i) +
                                            " is not closed (use {{ for a brace)");
      const std::string name = t.substr(i + 1, close - i - 1);
      bool known = false;
      for (const char* f : kFields) known = known || name == f;
      check(known, "item template '" + t + "': unknown placeholder {" + name +
                       "} (known: {title}, {description}, {categories}, {domain}, {id})");
      parts.push_back({"", name});
      i = close;
    } else if (c == '}') {
      throw Error("item template '" + t + "': '}' at position " + std::to_string(i) +
                  " has no opening brace (use }} for a brace)");
    } else {
      parts.back().literal += c;
    }
  }
  return parts;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::string render(const std::vector<TemplatePart>& parts, const ItemText& t, const std::string& domain,
                   const std::string& id) {
  std::string out = parts[0].literal;
  for (size_t p = 1; p < parts.size(); ++p) {
    const std::string& f = parts[p].field;
    std::string value;
    if (f == "title") {
      value = t.title;
    } else if (f == "description") {
      value = t.description;
    } else if (f == "categories") {
      for (auto& c : t.categories)
        if (!trim(c).empty()) value += (value.empty() ? "" : ", ") + trim(c);
    } else if (f == "domain") {
      value = domain;
    } else if (f == "id") {
      value = id;
    }
    value = trim(value);
    if (value.empty()) continue;
    out += value;
    out += parts[p].literal;
  }
  return trim(out);
}

template <typename T>
void put_raw(std::FILE* f, const T& v) {
  if (std::fwrite(&v, sizeof v, 1, f) != 1) throw Error("write failed");
}

}  // namespace

void check_item_template(const std::string& tmpl) {
  parse_template(tmpl);
}

std::string render_item_text(const std::string& tmpl, const ItemText& text, const std::string& domain,
                             const std::string& id) {
  return render(parse_template(tmpl), text, domain, id);
}

std::vector<std::string> dataset_item_texts(const Dataset& ds, const std::string& tmpl, bool include_tags) {
  const auto parts = parse_template(tmpl);
  std::vector<ItemText> with_tags;
  if (include_tags && !ds.tags.empty()) with_tags = item_text_with_tags(ds, Split{});
  const std::vector<ItemText>& texts = with_tags.empty() ? ds.item_text : with_tags;
  std::vector<std::string> out(ds.n_items());
  for (uint32_t i = 0; i < ds.n_items(); ++i) {
    const std::string domain = i < ds.item_domain.size() ? ds.domains.name(ds.item_domain[i]) : "";
    out[i] = i < texts.size() ? render(parts, texts[i], domain, ds.items.name(i))
                              : render(parts, ItemText{}, domain, ds.items.name(i));
  }
  return out;
}

std::vector<std::string> dataset_user_texts(const Dataset& ds) {
  std::vector<std::string> out(ds.n_users());
  for (uint32_t u = 0; u < ds.n_users() && u < ds.user_profile.size(); ++u) out[u] = ds.user_profile[u].text;
  return out;
}

std::string default_embedding_cache_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/xdrec/embeddings";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/xdrec/embeddings";
}

// ---- EmbeddingCache ----

EmbeddingCache::EmbeddingCache(std::string dir, std::string fingerprint)
    : dir_(std::move(dir)), fingerprint_(std::move(fingerprint)) {
  check(!dir_.empty(), "embedding cache: empty directory name");
  path_ = (fs::path(dir_) / (hex64(fnv1a64(fingerprint_.data(), fingerprint_.size())) + ".xdemb")).string();
  load_into(index_, keys_, vecs_, dim_);
}

EmbeddingCache::Key EmbeddingCache::key_of(std::string_view text) {
  return {data::hash_bytes(text.data(), text.size(), 0x656d62ULL), fnv1a64(text.data(), text.size())};
}

void EmbeddingCache::load_into(std::unordered_map<Key, size_t, KeyHash>& index, std::vector<Key>& keys,
                               std::vector<float>& vecs, size_t& dim) const {
  std::error_code ec;
  if (!fs::is_regular_file(path_, ec)) return;
  std::string b;
  try {
    b = read_file(path_);
  } catch (const Error&) {
    return;  // unreadable: treated as empty, replaced at the next save
  }
  if (b.size() < 24 || std::memcmp(b.data(), kCacheMagic, 8) != 0) return;
  uint32_t d, fl;
  uint64_t count;
  std::memcpy(&d, b.data() + 8, 4);
  std::memcpy(&fl, b.data() + 12, 4);
  std::memcpy(&count, b.data() + 16, 8);
  if (d == 0 || count > (uint64_t(1) << 40)) return;
  const uint64_t keys_at = 24 + uint64_t(fl), vecs_at = keys_at + 16 * count;
  if (b.size() != vecs_at + 4 * count * uint64_t(d)) return;
  if (std::string_view(b.data() + 24, fl) != fingerprint_) return;
  if (dim != 0 && dim != d) return;
  dim = d;
  for (uint64_t i = 0; i < count; ++i) {
    Key k;
    std::memcpy(&k.a, b.data() + keys_at + 16 * i, 8);
    std::memcpy(&k.b, b.data() + keys_at + 16 * i + 8, 8);
    if (index.count(k)) continue;
    index.emplace(k, keys.size());
    keys.push_back(k);
    const char* v = b.data() + vecs_at + 4 * i * d;
    const size_t at = vecs.size();
    vecs.resize(at + d);
    std::memcpy(vecs.data() + at, v, 4 * size_t(d));
  }
}

const float* EmbeddingCache::find(std::string_view text) const {
  auto it = index_.find(key_of(text));
  return it == index_.end() ? nullptr : vecs_.data() + it->second * dim_;
}

void EmbeddingCache::put(std::string_view text, const float* vec, size_t dim) {
  check(dim > 0, "embedding cache: zero-dimensional vector");
  if (dim_ == 0) dim_ = dim;
  check(dim == dim_, "embedding cache " + path_ + ": a " + std::to_string(dim) +
                         "-dimensional vector for a cache of dimension " + std::to_string(dim_) +
                         " (same encoder fingerprint, different output size)");
  const Key k = key_of(text);
  auto it = index_.find(k);
  if (it != index_.end()) {
    std::memcpy(vecs_.data() + it->second * dim_, vec, dim * sizeof(float));
  } else {
    index_.emplace(k, keys_.size());
    keys_.push_back(k);
    vecs_.insert(vecs_.end(), vec, vec + dim);
  }
  dirty_ = true;
}

void EmbeddingCache::save() {
  if (!dirty_ || keys_.empty()) return;
  load_into(index_, keys_, vecs_, dim_);  // entries saved by someone else since we loaded
  std::error_code ec;
  fs::create_directories(dir_, ec);
  check(!ec, "embedding cache: cannot create " + dir_ + ": " + ec.message());
  write_file_atomic(path_, [&](std::FILE* f) {
    if (std::fwrite(kCacheMagic, 1, 8, f) != 8) throw Error("write failed");
    put_raw(f, uint32_t(dim_));
    put_raw(f, uint32_t(fingerprint_.size()));
    put_raw(f, uint64_t(keys_.size()));
    if (std::fwrite(fingerprint_.data(), 1, fingerprint_.size(), f) != fingerprint_.size())
      throw Error("write failed");
    for (const Key& k : keys_) put_raw(f, k.a), put_raw(f, k.b);
    if (std::fwrite(vecs_.data(), sizeof(float), vecs_.size(), f) != vecs_.size())
      throw Error("write failed");
  });
  dirty_ = false;
}

// ---- encoding ----

Matrix encode_with_cache(const TextEncoder& enc, std::span<const std::string> texts, const EmbedOptions& opt,
                         EmbedStats* stats) {
  EmbedStats local;
  EmbedStats& st = stats ? *stats : local;
  st.texts = texts.size();
  check(opt.batch > 0, "embed: batch must be positive");

  // Distinct texts in first-seen order.
  std::unordered_map<std::string_view, size_t> first;
  std::vector<size_t> uid(texts.size());
  std::vector<const std::string*> uniq;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto [it, added] = first.emplace(texts[i], uniq.size());
    if (added) uniq.push_back(&texts[i]);
    uid[i] = it->second;
  }
  st.unique = uniq.size();

  std::optional<EmbeddingCache> cache;
  if (opt.use_cache)
    cache.emplace(opt.cache_dir.empty() ? default_embedding_cache_dir() : opt.cache_dir, enc.fingerprint());
  std::vector<size_t> missing;
  for (size_t u = 0; u < uniq.size(); ++u)
    if (!cache || !cache->find(*uniq[u])) missing.push_back(u);
  st.cached = uniq.size() - missing.size();

  // Encode what is missing, batch by batch.
  Timer timer, since_save;
  std::vector<float> fresh;  // missing.size() x d, in `missing` order
  size_t d = 0;
  std::vector<std::string> batch;
  if (opt.progress && !missing.empty()) opt.progress(0, missing.size(), "encoding");
  for (size_t b = 0; b < missing.size(); b += opt.batch) {
    const size_t e = std::min(missing.size(), b + opt.batch);
    batch.clear();
    for (size_t k = b; k < e; ++k) batch.push_back(*uniq[missing[k]]);
    const Matrix m = enc.encode(batch, opt.threads);
    check(m.rows == batch.size(), "embed: the encoder returned " + std::to_string(m.rows) + " vectors for " +
                                      std::to_string(batch.size()) + " texts");
    if (b == 0) d = m.cols;
    check(m.cols == d && d > 0, "embed: the encoder returned " + std::to_string(m.cols) +
                                    "-dimensional vectors after " + std::to_string(d) + "-dimensional ones");
    fresh.insert(fresh.end(), m.data.begin(), m.data.end());
    if (cache) {
      for (size_t k = 0; k < batch.size(); ++k) cache->put(batch[k], m.row(k), d);
      if (since_save.seconds() > opt.save_every_s) cache->save(), since_save.reset();
    }
    st.encoded = e;
    if (opt.progress) opt.progress(e, missing.size(), "encoding");
  }
  st.encode_seconds = timer.seconds();
  if (cache) cache->save();

  if (d == 0) d = cache && cache->dim() ? cache->dim() : enc.dim();
  check(!cache || cache->dim() == 0 || cache->dim() == d, "embed: cached vectors have dimension " +
                                                              std::to_string(cache ? cache->dim() : 0) +
                                                              ", the encoder gives " + std::to_string(d));
  std::vector<const float*> src(uniq.size(), nullptr);
  for (size_t k = 0; k < missing.size(); ++k) src[missing[k]] = fresh.data() + k * d;
  for (size_t u = 0; u < uniq.size(); ++u)
    if (!src[u]) src[u] = cache->find(*uniq[u]);
  Matrix out(texts.size(), d);
  for (size_t i = 0; i < texts.size(); ++i) std::memcpy(out.row(i), src[uid[i]], d * sizeof(float));
  return out;
}

std::vector<std::string> dataset_item_texts(const Dataset& ds, const std::string& tmpl, const Split* split,
                                            bool include_tags) {
  if (!split || ds.tags.empty()) return dataset_item_texts(ds, tmpl, include_tags);
  const std::vector<ItemText> texts = item_text_with_tags(ds, *split);
  std::vector<std::string> out(ds.n_items());
  for (uint32_t i = 0; i < ds.n_items(); ++i)
    out[i] = render_item_text(tmpl, i < texts.size() ? texts[i] : ItemText{},
                              ds.domains.name(ds.item_domain[i]), ds.items.name(i));
  return out;
}

TextVectors embed_dataset(const Dataset& ds, TextEncoder& enc, const EmbedOptions& opt, const Split* split) {
  check_item_template(opt.item_template);
  const std::vector<std::string> items = dataset_item_texts(ds, opt.item_template, split, opt.include_tags);
  const std::vector<std::string> users = dataset_user_texts(ds);
  TextVectors tv;
  std::vector<std::string> corpus;               // the non-empty item texts, then the non-empty profiles
  std::vector<std::pair<bool, uint32_t>> where;  // (is user, index) of each corpus text
  for (uint32_t i = 0; i < items.size(); ++i)
    if (!items[i].empty()) corpus.push_back(items[i]), where.emplace_back(false, i);
  tv.items_with_text = corpus.size();
  check(tv.items_with_text > 0, "no item of " + (ds.name.empty() ? std::string("the dataset") : ds.name) +
                                    " has text for the template '" + opt.item_template +
                                    "' (no title, description or categories)");
  if (enc.needs_fit()) {
    Timer t;
    if (opt.progress) opt.progress(0, 1, "fitting " + enc.name());
    enc.fit(std::span<const std::string>(corpus.data(), tv.items_with_text), opt.threads);
    if (opt.progress) opt.progress(1, 1, "fitting " + enc.name());
    tv.stats.fit_seconds = t.seconds();
  }
  for (uint32_t u = 0; u < users.size(); ++u)
    if (!users[u].empty()) corpus.push_back(users[u]), where.emplace_back(true, u);
  tv.users_with_text = corpus.size() - tv.items_with_text;
  const double fit_s = tv.stats.fit_seconds;
  const Matrix m = encode_with_cache(enc, corpus, opt, &tv.stats);
  tv.stats.fit_seconds = fit_s;
  const size_t d = m.cols;
  tv.items.resize(items.size(), d);  // zero rows: no text
  tv.users.resize(users.size(), d);
  for (size_t r = 0; r < where.size(); ++r) {
    Matrix& dst = where[r].first ? tv.users : tv.items;
    std::memcpy(dst.row(where[r].second), m.row(r), d * sizeof(float));
  }
  tv.encoder_spec = enc.spec();
  tv.fingerprint = enc.fingerprint();
  return tv;
}

void save_text_vectors(const std::string& path, const TextVectors& v, const Dataset& ds,
                       const EmbedOptions& opt) {
  TensorMap t;
  t["items"] = Tensor::from_matrix(v.items);
  t["users"] = Tensor::from_matrix(v.users);
  std::map<std::string, std::string> meta = {
      {"format", "xdrec-text-vectors-1"},
      {"encoder", v.encoder_spec},
      {"fingerprint", v.fingerprint},
      {"dim", std::to_string(v.items.cols)},
      {"template", opt.item_template},
      {"tags", opt.include_tags ? "all user tags appended to categories" : "none"},
      {"dataset", ds.name},
      {"dataset_fingerprint", hex64(ds.fingerprint())},
      {"n_items", std::to_string(v.items.rows)},
      {"n_users", std::to_string(v.users.rows)},
  };
  save_safetensors(path, t, meta);
}

}  // namespace xdrec
