// The serving state and its operations (see serve.h). Locking: readers (recommend, similar, ...) share `mu_`;
// a write takes `write_mu_` (one writer at a time, so the log's order is the order applied) and holds `mu_`
// exclusively only while it changes the state, after its events are durable.
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>

#include "serve/event_log.h"
#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/item_codes.h"
#include "xdrec/pipeline.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"
#include "xdrec/rerank.h"
#include "xdrec/serve.h"
#include "xdrec/split.h"

namespace xdrec::serve {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::set<std::string> kTypes{"click", "purchase", "like", "dislike", "skip"};
bool positive(const std::string& t) {
  return t == "click" || t == "purchase" || t == "like";
}
// How strongly a negative event pushes similar items down (times the score range of the candidates).
float penalty_weight(const std::string& t) {
  return t == "dislike" ? 1.0f : t == "skip" ? 0.3f : 0.0f;
}

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double cosine(const float* a, const float* b, size_t d) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t j = 0; j < d; ++j)
    ab += double(a[j]) * b[j], aa += double(a[j]) * a[j], bb += double(b[j]) * b[j];
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

void append_row(Matrix& m, std::span<const float> v) {
  if (m.rows == 0) m.cols = v.size();
  check(v.size() == m.cols,
        "vector width " + std::to_string(v.size()) + " differs from " + std::to_string(m.cols));
  m.data.insert(m.data.end(), v.begin(), v.end());
  ++m.rows;
}

}  // namespace

struct Service::Impl {
  ServiceOptions opt;
  Dataset ds;
  std::unique_ptr<Recommender> model;
  std::unique_ptr<EventLog> log;

  mutable std::shared_mutex mu;
  std::mutex write_mu;

  // Items: the dataset's, then those added through the API.
  IdMap item_ids;
  std::vector<uint16_t> item_domain;
  std::vector<std::string> item_title;
  std::vector<std::vector<std::string>> item_categories;
  std::vector<uint8_t> deleted;
  std::vector<uint32_t> deleted_list;  // sorted
  uint32_t model_items = 0;            // items the model scores itself; later ones are mixtures
  // Items added to a model that cannot add items: the score is a weighted sum of text neighbours' scores.
  std::vector<std::vector<std::pair<uint32_t, float>>> mixture;  // for items model_items..

  // Users: the dataset's, then new ones from feedback. model_user: the model's index of each.
  IdMap user_ids;
  std::vector<uint32_t> model_user;
  std::vector<uint8_t> represented;         // the model has a state for the user
  std::vector<std::vector<uint32_t>> hist;  // ordered positive history
  std::vector<std::vector<float>> hist_w;
  std::vector<std::vector<uint32_t>> seen;                        // sorted: never recommended
  std::vector<std::vector<std::pair<uint32_t, float>>> negative;  // dislikes / skips with their weight
  int64_t scratch_user = -1;  // model index reused by POST /v1/recommend (new users, not kept)
  // The weight of a positive event in a user's history: 1 for implicit models; for a rating model (whose
  // weights are ratings) the highest rating in the data, so that a like is not read as a poor rating.
  float liked_weight = 1.0f;

  // Text.
  std::unique_ptr<TextEncoder> encoder;
  std::string item_template = kDefaultItemTemplate;
  Matrix item_text;   // one row per item when there is an encoder
  Matrix categories;  // the dataset's multi-hot categories (diversity without text); rows: dataset items
  mutable std::mutex enc_mu;

  // Dot-product form and the HNSW indexes (one per domain).
  bool dot = false;
  Matrix item_vec;
  std::vector<float> item_bias;
  std::string retrieval = "exact";
  std::string model_version;  // checksum of the model's tensor file (manifest.json)
  std::unique_ptr<hnswlib::InnerProductSpace> space;
  std::vector<std::unique_ptr<hnswlib::HierarchicalNSW<float>>> index;
  std::optional<ItemCodes> codes;  // --retrieval sq8 | pq:...: the item vectors as codes (item_codes.h)

  std::atomic<int64_t> events_stored{0}, events_replayed{0}, replay_skipped{0};

  // Recommendation cache: LRU of (key -> response). A key holds the query, the user's generation (bumped by
  // each of their events) and the catalogue's (bumped by each item added or deleted), so a stale entry is
  // never found again and ages out.
  struct RecCache {
    std::mutex mu;
    std::list<std::pair<std::string, json>> lru;  // most recent first
    std::unordered_map<std::string, std::list<std::pair<std::string, json>>::iterator> map;
    std::atomic<uint64_t> hits{0}, misses{0};
  };
  mutable RecCache cache;
  std::vector<uint64_t> user_gen;  // per user index; missing: 0
  uint64_t catalogue_gen = 0;

  std::string cache_key(uint32_t u, const RecommendQuery& q) const {
    std::string k = q.user;
    k += '\x1f' + std::to_string(u < user_gen.size() ? user_gen[u] : 0) + '\x1f' +
         std::to_string(catalogue_gen) + '\x1f' + std::to_string(q.k) + '\x1f' + q.domain + '\x1f' +
         std::to_string(q.diversity) + '\x1f' + std::to_string(q.explore) + '\x1f' + q.quota + '\x1f' +
         (q.explain ? "1" : "0") + '\x1f' + std::to_string(q.seed);
    // Exploration without a seed draws from the event count: part of the key then.
    if (q.explore > 0 && q.seed == 0) k += '\x1f' + std::to_string(events_stored.load());
    return k;
  }
  std::optional<json> cache_get(const std::string& key) const {
    std::lock_guard l(cache.mu);
    auto it = cache.map.find(key);
    if (it == cache.map.end()) {
      ++cache.misses;
      return std::nullopt;
    }
    cache.lru.splice(cache.lru.begin(), cache.lru, it->second);
    ++cache.hits;
    return it->second->second;
  }
  void cache_put(const std::string& key, const json& value) const {
    if (opt.cache_entries == 0) return;
    std::lock_guard l(cache.mu);
    if (cache.map.count(key)) return;
    cache.lru.emplace_front(key, value);
    cache.map[key] = cache.lru.begin();
    while (cache.lru.size() > opt.cache_entries) {
      cache.map.erase(cache.lru.back().first);
      cache.lru.pop_back();
    }
  }

  void log_msg(const std::string& s) const {
    if (!opt.quiet) std::fprintf(stderr, "xdrec serve: %s\n", s.c_str());
  }

  uint32_t n_items() const { return item_ids.size(); }

  // ---- set-up --------------------------------------------------------------------------------------------

  void load(const ServiceOptions& o) {
    opt = o;
    uint64_t fp = 0;
    model = load_model(opt.model_dir, &fp);
    const std::string db = opt.db.empty() ? (fs::path(opt.model_dir) / "events.sqlite").string() : opt.db;
    if (fp != 0 && fp != ds.fingerprint() && fs::exists(db)) {
      // A model trained with `xdrec train --events` on this log: the same events folded into the data.
      Dataset folded = ds;
      fold_events(folded, db);
      if (folded.fingerprint() == fp) ds = std::move(folded);
    }
    check(fp == 0 || fp == ds.fingerprint(),
          "model '" + opt.model_dir + "' was trained on a different dataset");
    check(model->n_items() == ds.n_items() && model->n_users() >= ds.n_users(),
          "model '" + opt.model_dir + "' has " + std::to_string(model->n_items()) + " items and " +
              std::to_string(model->n_users()) + " users but the dataset has " +
              std::to_string(ds.n_items()) + " and " + std::to_string(ds.n_users()));
    item_ids = ds.items;
    item_domain = ds.item_domain;
    item_title.resize(ds.n_items());
    item_categories.resize(ds.n_items());
    for (uint32_t i = 0; i < ds.n_items(); ++i) {
      item_title[i] = ds.item_text[i].title;
      item_categories[i] = ds.item_text[i].categories;
    }
    deleted.assign(ds.n_items(), 0);
    model_items = ds.n_items();
    user_ids = ds.users;
    const uint32_t nu = ds.n_users();
    model_user.resize(nu);
    for (uint32_t u = 0; u < nu; ++u) model_user[u] = u;
    represented.assign(nu, 0);
    hist.resize(nu);
    hist_w.resize(nu);
    seen.resize(nu);
    negative.resize(nu);
    const Sequences seqs = user_sequences(nu, ds.interactions);
    const Csr m = ds.user_item_matrix(model->predicts_ratings());
    if (model->predicts_ratings() && m.nnz())
      liked_weight = *std::max_element(m.values.begin(), m.values.end());
    for (uint32_t u = 0; u < nu; ++u) {
      // In time order, an item once (at its last place), weighted as in the interaction matrix.
      auto idx = m.row_indices(u);
      for (uint32_t i : keep_last_occurrence(seqs.of(u))) {
        const auto it = std::lower_bound(idx.begin(), idx.end(), i);
        hist[u].push_back(i);
        hist_w[u].push_back(it != idx.end() && *it == i ? m.values[m.indptr[u] + size_t(it - idx.begin())]
                                                        : 1.0f);
      }
      seen[u].assign(idx.begin(), idx.end());
      represented[u] = !hist[u].empty();  // a user without interactions has no state until their feedback
    }
    categories = ds.category_vectors();
    setup_text();
    setup_retrieval();
    read_version();
    log = std::make_unique<EventLog>(db);
    replay();
  }

  void setup_text() {
    if (model->uses_text() && !model->text_encoder().empty()) {
      const std::optional<TextConfig> cfg = read_text_config(opt.model_dir);
      if (cfg) item_template = cfg->item_template;
      encoder = encoder_for_model(*model, opt.model_dir, ds, opt.text_split, opt.threads);
    } else if (opt.text != "none") {
      std::string note;
      encoder = make_text_encoder(opt.text, &note);
      if (!note.empty()) log_msg(note);
    }
    if (!encoder) return;
    EmbedOptions eo;
    eo.item_template = item_template;
    eo.threads = opt.threads;
    TextVectors tv = embed_dataset(ds, *encoder, eo, opt.text_split);
    item_text = std::move(tv.items);
    log_msg("item texts encoded with " + encoder->spec() + " (" + std::to_string(item_text.cols) + "-d)");
  }

  void setup_retrieval() {
    dot = model->item_vectors(item_vec, item_bias);
    const bool coded = is_codes_spec(opt.retrieval);
    check(opt.retrieval == "auto" || opt.retrieval == "exact" || opt.retrieval == "hnsw" || coded,
          "--retrieval: exact, hnsw, sq8, pq[:m=..] or auto, not '" + opt.retrieval + "'");
    check((opt.retrieval != "hnsw" && !coded) || dot,
          "--retrieval " + opt.retrieval + ": model '" + model->name() +
              "' is not a dot-product model (ials, bpr, hybrid are)");
    if (coded) {
      Timer t;
      codes = ItemCodes::build(item_vec, item_bias, CodesSpec::parse(opt.retrieval), opt.threads);
      retrieval = codes->spec().kind;
      log_msg(retrieval + " codes of " + std::to_string(n_items()) + " items (" +
              std::to_string(codes->code_bytes()) + " bytes) built in " + std::to_string(t.seconds()) + " s");
      return;
    }
    const bool use_hnsw =
        dot && (opt.retrieval == "hnsw" || (opt.retrieval == "auto" && n_items() >= opt.hnsw_threshold));
    if (!use_hnsw) return;
    retrieval = "hnsw";
    const size_t d = item_vec.cols + 1;
    space = std::make_unique<hnswlib::InnerProductSpace>(d);
    index.resize(ds.domains.size() ? ds.domains.size() : 1);
    std::vector<size_t> per(index.size(), 0);
    for (uint32_t i = 0; i < n_items(); ++i) ++per[item_domain.empty() ? 0 : item_domain[i]];
    for (size_t g = 0; g < index.size(); ++g)
      index[g] = std::make_unique<hnswlib::HierarchicalNSW<float>>(
          space.get(), std::max<size_t>(per[g], 16) + 1024, size_t(opt.hnsw_m),
          size_t(opt.hnsw_ef_construction), uint64_t(100 + g));
    Timer t;
    const uint32_t n = n_items();
    // Items in index order per domain, added by `threads` workers (hnswlib's addPoint is thread-safe).
    parallel_for(n, resolve_threads(opt.threads), 256, [&](size_t lo, size_t hi) {
      std::vector<float> v(d);
      for (size_t i = lo; i < hi; ++i) {
        item_point(uint32_t(i), v.data());
        index[item_domain.empty() ? 0 : item_domain[i]]->addPoint(v.data(), i);
      }
    });
    for (auto& ix : index) ix->setEf(size_t(opt.hnsw_ef));
    log_msg("HNSW index of " + std::to_string(n) + " items built in " + std::to_string(t.seconds()) + " s");
  }

  void read_version() {
    try {
      std::ifstream f(fs::path(opt.model_dir) / "manifest.json");
      const json m = json::parse(f);
      model_version = m.value("tensors_fnv1a64", "");
    } catch (const std::exception&) {
      model_version = "";
    }
  }

  // [item vector, bias]: the HNSW point whose inner product with [user vector, 1] is the score.
  void item_point(uint32_t i, float* v) const {
    const size_t f = item_vec.cols;
    std::copy(item_vec.row(i), item_vec.row(i) + f, v);
    v[f] = item_bias.empty() ? 0.0f : item_bias[i];
  }

  // ---- events --------------------------------------------------------------------------------------------

  void replay() {
    Timer t;
    log->for_each([&](const Event& e) {
      try {
        apply(e);
        ++events_replayed;
      } catch (const std::exception& ex) {
        ++replay_skipped;
        log_msg("event " + std::to_string(e.seq) + " not replayed: " + ex.what());
      }
    });
    events_stored = log->count();
    if (events_replayed > 0 || replay_skipped > 0)
      log_msg("replayed " + std::to_string(events_replayed.load()) + " events in " +
              std::to_string(t.seconds()) + " s" +
              (replay_skipped ? " (" + std::to_string(replay_skipped.load()) + " skipped)" : ""));
  }

  uint32_t user_index_or_add(const std::string& id) {
    if (auto u = user_ids.find(id)) return *u;
    const uint32_t u = user_ids.get_or_add(id);
    model_user.push_back(0);
    represented.push_back(0);
    hist.emplace_back();
    hist_w.emplace_back();
    seen.emplace_back();
    negative.emplace_back();
    return u;
  }

  void refold(uint32_t u) {
    if (hist[u].empty() && !represented[u]) return;
    const uint32_t target = represented[u] ? model_user[u] : model->n_users();
    model_user[u] = model->fold_in(target, hist[u], hist_w[u]);
    represented[u] = 1;
  }

  // Applies one stored event (caller holds mu exclusively).
  void apply(const Event& e) {
    if (e.kind == "feedback") {
      const auto i = item_ids.find(e.item);
      check(i.has_value(), "unknown item '" + e.item + "'");
      const uint32_t u = user_index_or_add(e.user);
      if (user_gen.size() <= u) user_gen.resize(size_t(u) + 1, 0);
      ++user_gen[u];
      auto& s = seen[u];
      const auto it = std::lower_bound(s.begin(), s.end(), *i);
      if (it == s.end() || *it != *i) s.insert(it, *i);
      if (positive(e.type)) {
        if (*i >= model_items) return;  // a mixture item has no place in the model's history
        auto& h = hist[u];
        auto& w = hist_w[u];
        const auto pos = std::find(h.begin(), h.end(), *i);
        float weight = liked_weight;
        if (pos != h.end()) {  // moves to the end (most recent), keeping its weight
          weight = w[size_t(pos - h.begin())];
          w.erase(w.begin() + (pos - h.begin()));
          h.erase(pos);
        }
        h.push_back(*i);
        w.push_back(weight);
        refold(u);
      } else {
        negative[u].emplace_back(*i, penalty_weight(e.type));
      }
    } else if (e.kind == "add_item") {
      ++catalogue_gen;
      const json p = json::parse(e.payload);
      NewItem it;
      it.item = e.item;
      it.domain = p.value("domain", "");
      it.title = p.value("title", "");
      it.description = p.value("description", "");
      it.categories = p.value("categories", std::vector<std::string>{});
      insert_item(it, e.vec);
    } else if (e.kind == "delete_item") {
      ++catalogue_gen;
      const auto i = item_ids.find(e.item);
      check(i.has_value(), "unknown item '" + e.item + "'");
      if (!deleted[*i]) {
        deleted[*i] = 1;
        deleted_list.insert(std::lower_bound(deleted_list.begin(), deleted_list.end(), *i), *i);
        if (!index.empty()) index[item_domain[*i]]->markDelete(*i);
      }
    } else {
      throw Error("unknown event kind '" + e.kind + "'");
    }
  }

  int domain_of(const std::string& name, bool required) const {
    if (name.empty()) {
      if (!required || ds.domains.size() <= 1) return ds.domains.size() == 1 ? 0 : -1;
      throw ServeError(400, "give the item's domain (one of " + domain_names() + ")");
    }
    auto d = ds.domains.find(name);
    if (!d) throw ServeError(400, "unknown domain '" + name + "' (the domains are " + domain_names() + ")");
    return int(*d);
  }
  std::string domain_names() const {
    std::string s;
    for (auto& n : ds.domains.names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }

  std::vector<float> encode_item(const NewItem& it) const {
    check(encoder != nullptr, "no text encoder");
    ItemText t{it.title, it.description, it.categories};
    const std::string text = render_item_text(item_template, t, it.domain, it.item);
    std::lock_guard lock(enc_mu);
    return encode_one(*encoder, text, 1);
  }

  // Appends an item (caller holds mu exclusively; `vec` is its text vector).
  void insert_item(const NewItem& it, const std::vector<float>& vec) {
    check(!item_ids.find(it.item).has_value(), "item '" + it.item + "' exists");
    const int d = domain_of(it.domain, true);
    const uint16_t dom = uint16_t(std::max(d, 0));
    int64_t idx = -1;
    if (model->uses_text() && !model->text_encoder().empty() && model_items == n_items()) {
      idx = model->add_item(vec, dom);
      check(idx == int64_t(n_items()), "model '" + model->name() + "': add_item did not append one item");
      ++model_items;
    } else {
      // The item's score is the weighted mean of the scores of its 10 most similar items (by text) in its
      // domain: what a model without text can say about an item it has never seen.
      check(!vec.empty() && item_text.rows > 0,
            "model '" + model->name() + "' cannot add items and the server has no text encoder (--text)");
      std::vector<std::pair<float, uint32_t>> sims;
      for (uint32_t j = 0; j < model_items; ++j)
        if (!deleted[j] && item_domain[j] == dom)
          sims.emplace_back(float(cosine(vec.data(), item_text.row(j), vec.size())), j);
      const size_t m = std::min<size_t>(10, sims.size());
      check(m > 0, "no items in domain '" + it.domain + "' to place the new item among");
      std::partial_sort(sims.begin(), sims.begin() + m, sims.end(), [](auto& a, auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      std::vector<std::pair<uint32_t, float>> mix;
      double tot = 0;
      for (size_t k = 0; k < m; ++k) tot += std::max(0.0f, sims[k].first);
      for (size_t k = 0; k < m; ++k)
        mix.emplace_back(sims[k].second,
                         tot > 0 ? float(std::max(0.0f, sims[k].first) / tot) : 1.0f / float(m));
      mixture.push_back(std::move(mix));
    }
    item_ids.get_or_add(it.item);
    item_domain.push_back(dom);
    item_title.push_back(it.title);
    item_categories.push_back(it.categories);
    deleted.push_back(0);
    if (item_text.rows > 0) append_row(item_text, vec);
    if (dot) {
      const uint32_t i = n_items() - 1;
      std::vector<float> v(item_vec.cols, 0.0f);
      float b = 0;
      if (i < model_items) {
        Matrix all;
        std::vector<float> bias;
        model->item_vectors(all, bias);
        std::copy(all.row(i), all.row(i) + all.cols, v.begin());
        b = bias.empty() ? 0.0f : bias[i];
      } else {
        for (auto [j, w] : mixture.back()) {
          for (size_t c = 0; c < v.size(); ++c) v[c] += w * item_vec(j, c);
          b += item_bias.empty() ? 0.0f : w * item_bias[j];
        }
      }
      append_row(item_vec, v);
      if (!item_bias.empty()) item_bias.push_back(b);
      if (codes) codes->add(v.data(), b);
      if (!index.empty()) {
        auto& ix = *index[dom];
        if (ix.cur_element_count >= ix.max_elements_) ix.resizeIndex(ix.max_elements_ * 2);
        std::vector<float> p(item_vec.cols + 1);
        item_point(i, p.data());
        ix.addPoint(p.data(), i);
      }
    }
  }

  // ---- scoring -------------------------------------------------------------------------------------------

  // Scores of every item for a model user (mixture items appended).
  void score_all(uint32_t mu, std::vector<float>& row) const {
    Matrix m;
    const uint32_t us[1] = {mu};
    model->score(us, m, 1);
    row.assign(m.data.begin(), m.data.end());
    row.resize(n_items());
    for (size_t k = 0; k < mixture.size(); ++k) {
      double s = 0;
      for (auto [j, w] : mixture[k]) s += double(w) * row[j];
      row[model_items + k] = float(s);
    }
  }

  // Item-to-item similarity (similar items, dislikes): cosine of the model's item vectors for a dot-product
  // model (what the model finds alike), else of the item texts.
  const Matrix* similarity_vectors() const {
    return dot ? &item_vec : item_text.rows > 0 ? &item_text : nullptr;
  }
  double item_similarity(uint32_t a, uint32_t b) const {
    const Matrix* v = similarity_vectors();
    return v ? cosine(v->row(a), v->row(b), v->cols) : a == b ? 1.0 : 0.0;
  }
  // Diversity is about content: MMR compares item texts, else categories, else the model's vectors.
  const Matrix* diversity_vectors() const {
    if (item_text.rows > 0) return &item_text;
    if (categories.rows == n_items()) return &categories;
    return dot ? &item_vec : nullptr;
  }

  // The best `n` candidates for a model user: not seen (`exclude`, sorted), not deleted, in `domain` (-1:
  // any).
  std::vector<ScoredItem> candidates(uint32_t mu, std::span<const uint32_t> exclude, int domain,
                                     size_t n) const {
    std::vector<uint32_t> ex;
    std::set_union(exclude.begin(), exclude.end(), deleted_list.begin(), deleted_list.end(),
                   std::back_inserter(ex));
    if (retrieval != "exact") return approx_candidates(mu, ex, domain, n);
    std::vector<float> row;
    score_all(mu, row);
    return top_k(row.data(), n_items(), n, ex, item_domain, domain);
  }

  // The candidates of the approximate retrieval in use: the codes or the HNSW indexes.
  std::vector<ScoredItem> approx_candidates(uint32_t mu, std::span<const uint32_t> ex, int domain,
                                            size_t n) const {
    if (!codes) return hnsw_candidates(mu, ex, domain, n);
    Matrix uv;
    const uint32_t us[1] = {mu};
    model->user_vectors(us, uv);
    return codes_top_k(*codes, uv.row(0), n, ex, item_domain, domain, item_vec, item_bias);
  }

  std::vector<ScoredItem> hnsw_candidates(uint32_t mu, std::span<const uint32_t> ex, int domain,
                                          size_t n) const {
    Matrix uv;
    const uint32_t us[1] = {mu};
    model->user_vectors(us, uv);
    const size_t f = uv.cols;
    std::vector<float> q(f + 1);
    std::copy(uv.row(0), uv.row(0) + f, q.begin());
    q[f] = 1.0f;
    std::vector<ScoredItem> all;
    for (size_t g = 0; g < index.size(); ++g) {
      if (domain >= 0 && int(g) != domain) continue;
      // Ask for enough to survive the exclusion of seen items (deleted ones are marked in the index).
      size_t want = n + ex.size();
      for (;;) {
        auto res = index[g]->searchKnn(q.data(), std::min<size_t>(want, index[g]->cur_element_count));
        std::vector<ScoredItem> got;
        while (!res.empty()) {
          const uint32_t i = uint32_t(res.top().second);
          res.pop();
          if (std::binary_search(ex.begin(), ex.end(), i)) continue;
          float s = item_bias.empty() ? 0.0f : item_bias[i];
          for (size_t c = 0; c < f; ++c) s += q[c] * item_vec(i, c);
          got.push_back({i, s});
        }
        if (got.size() >= n || want >= index[g]->cur_element_count) {
          all.insert(all.end(), got.begin(), got.end());
          break;
        }
        want *= 2;
      }
    }
    std::sort(all.begin(), all.end(),
              [](auto& a, auto& b) { return a.score > b.score || (a.score == b.score && a.item < b.item); });
    if (all.size() > n) all.resize(n);
    return all;
  }

  json item_json(uint32_t i) const {
    return {{"item", item_ids.name(i)},
            {"domain", ds.domains.size() ? ds.domains.name(item_domain[i]) : ""},
            {"title", item_title[i]}};
  }

  // The list for a model user with `history` (ordered), `excl` (sorted), negatives, under the query.
  json build_list(uint32_t mu, std::span<const uint32_t> history, std::span<const float> weights,
                  std::span<const uint32_t> excl, std::span<const std::pair<uint32_t, float>> neg,
                  const RecommendQuery& q) const {
    if (q.k == 0 || q.k > 1000) throw ServeError(400, "k must be between 1 and 1000");
    if (!(q.diversity >= 0 && q.diversity <= 1)) throw ServeError(400, "diversity must be in [0, 1]");
    if (!(q.explore >= 0 && q.explore <= 1)) throw ServeError(400, "explore must be in [0, 1]");
    const int domain = domain_of(q.domain, false);
    RerankOptions ro;
    ro.k = q.k;
    ro.diversity = q.diversity;
    if (!q.quota.empty()) {
      std::stringstream ss(q.quota);
      for (std::string part; std::getline(ss, part, ',');) {
        const auto c = part.rfind(':');
        if (c == std::string::npos)
          throw ServeError(400, "quota: 'domain:n' pairs separated by commas, not '" + part + "'");
        const int d = domain_of(part.substr(0, c), false);
        size_t n = 0;
        try {
          n = std::stoul(part.substr(c + 1));
        } catch (...) {
          throw ServeError(400, "quota: '" + part.substr(c + 1) + "' is not a count");
        }
        ro.quota[uint16_t(std::max(d, 0))] = n;
      }
    }
    if (q.diversity > 0 && !diversity_vectors())
      throw ServeError(
          400, "diversity needs item vectors: this model has none and the server has no text encoder");
    const bool wide = q.diversity > 0 || !ro.quota.empty() || !neg.empty() || q.explore > 0;
    const size_t pool_n = wide ? std::max<size_t>(q.k * 5, 100) : q.k;
    std::vector<ScoredItem> pool = candidates(mu, excl, domain, pool_n);
    if (!neg.empty() && !pool.empty()) {
      // A dislike pushes the candidates similar to the disliked item down, by up to the pool's score range.
      float lo = pool.back().score, hi = pool.front().score;
      const float range = std::isfinite(hi - lo) && hi > lo ? hi - lo : 1.0f;
      for (auto& c : pool) {
        double p = 0;
        for (auto [d, w] : neg) p = std::max(p, double(w) * std::max(0.0, item_similarity(c.item, d)));
        c.score -= float(p) * range;
      }
      std::stable_sort(pool.begin(), pool.end(), [](auto& a, auto& b) { return a.score > b.score; });
    }
    std::vector<ScoredItem> list =
        rerank(pool, q.diversity > 0 ? diversity_vectors() : nullptr, item_domain, ro);
    std::vector<size_t> explored;
    if (q.explore > 0) {
      // Outside the user's usual domains, or, when the history covers every domain, sharing no category.
      std::set<uint16_t> doms;
      std::set<std::string> cats;
      for (uint32_t i : history) {
        doms.insert(item_domain[i]);
        for (auto& c : item_categories[i]) cats.insert(c);
      }
      const bool all_domains = doms.size() >= std::max<size_t>(1, ds.domains.size());
      std::vector<ScoredItem> outside;
      for (const auto& c : pool) {
        const bool out_dom = !doms.count(item_domain[c.item]);
        const bool out_cat = std::none_of(item_categories[c.item].begin(), item_categories[c.item].end(),
                                          [&](const std::string& x) { return cats.count(x) > 0; });
        if (all_domains ? out_cat : out_dom) outside.push_back(c);
      }
      const uint64_t seed =
          q.seed ? q.seed : std::hash<std::string>{}(q.user) ^ uint64_t(events_stored.load());
      explored = explore_slots(list, outside, q.explore, seed);
    }
    json items = json::array();
    for (size_t r = 0; r < list.size(); ++r) {
      json o = item_json(list[r].item);
      o["score"] = list[r].score;
      if (std::find(explored.begin(), explored.end(), r) != explored.end()) o["explore"] = true;
      if (q.explain) o["explanation"] = explain(list[r].item, history, weights, o.contains("explore"));
      items.push_back(std::move(o));
    }
    return items;
  }

  json explain(uint32_t item, std::span<const uint32_t> history, std::span<const float> weights,
               bool explored) const {
    json e;
    if (explored) {
      e["reason"] = "exploration: an item outside your usual domains or categories";
      return e;
    }
    if (history.empty()) {
      e["reason"] = "from your profile";
      return e;
    }
    // At most the 200 most recent history items.
    const size_t from = history.size() > 200 ? history.size() - 200 : 0;
    auto h = history.subspan(from);
    auto hw = weights.subspan(from);
    std::vector<float> contrib;
    std::string method;
    const Matrix* sv = model->uses_text() && item_text.rows > 0 ? &item_text : similarity_vectors();
    if (item < model_items && model->explain(h, hw, item, contrib)) {
      method = "contribution";
    } else if (sv) {
      // A text model: the most similar history texts; otherwise the model's own item similarity.
      method = sv == &item_text ? "text similarity" : "factor similarity";
      contrib.resize(h.size());
      for (size_t k = 0; k < h.size(); ++k)
        contrib[k] = float(cosine(sv->row(item), sv->row(h[k]), sv->cols));
    } else {
      e["reason"] = "from your history";
      return e;
    }
    std::vector<size_t> order(h.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    const size_t top = std::min<size_t>(3, order.size());
    std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](size_t a, size_t b) {
      return contrib[a] > contrib[b] || (contrib[a] == contrib[b] && a > b);
    });
    json because = json::array();
    for (size_t t = 0; t < top; ++t) {
      json b = item_json(h[order[t]]);
      b[method == "contribution" ? "contribution" : "similarity"] = contrib[order[t]];
      because.push_back(std::move(b));
    }
    e["method"] = method;
    e["because"] = because;
    const uint32_t first = h[order[0]];
    std::string reason = "because you liked \"" +
                         (item_title[first].empty() ? item_ids.name(first) : item_title[first]) + "\"";
    if (item_domain[first] != item_domain[item] && ds.domains.size() > 1)
      reason += " in " + ds.domains.name(item_domain[first]);
    e["reason"] = reason;
    return e;
  }

  uint32_t known_user(const std::string& id) const {
    if (id.empty()) throw ServeError(400, "give user=ID");
    auto u = user_ids.find(id);
    if (!u) throw ServeError(404, "unknown user '" + id + "'");
    if (!represented[*u]) throw ServeError(404, "user '" + id + "' has no positive feedback yet");
    return *u;
  }
};

size_t fold_events(Dataset& ds, const std::string& db) {
  check(fs::exists(db), "event log " + db + " does not exist");
  EventLog log(db);
  size_t n = 0;
  std::set<uint32_t> removed;
  log.for_each([&](const Event& e) {
    if (e.kind == "feedback") {
      if (!positive(e.type)) return;
      const auto i = ds.items.find(e.item);
      if (!i) return;  // an item that no longer exists
      Interaction it;
      it.user = ds.users.get_or_add(e.user);
      if (ds.user_profile.size() < ds.users.size()) ds.user_profile.resize(ds.users.size());
      it.item = *i;
      it.timestamp = e.timestamp;
      ds.interactions.push_back(it);
      ++n;
    } else if (e.kind == "add_item") {
      if (ds.items.find(e.item)) return;
      const json p = json::parse(e.payload);
      const std::string dom = p.value("domain", "");
      uint16_t d = 0;
      if (!dom.empty()) {
        auto f = ds.domains.find(dom);
        check(f.has_value(), "event " + std::to_string(e.seq) + ": unknown domain '" + dom + "'");
        d = uint16_t(*f);
      }
      ds.items.get_or_add(e.item);
      ds.item_domain.push_back(d);
      ds.item_text.push_back(ItemText{p.value("title", ""), p.value("description", ""),
                                      p.value("categories", std::vector<std::string>{})});
      ++n;
    } else if (e.kind == "delete_item") {
      if (auto i = ds.items.find(e.item)) removed.insert(*i), ++n;
    }
  });
  if (!removed.empty())
    ds.interactions.erase(std::remove_if(ds.interactions.begin(), ds.interactions.end(),
                                         [&](const Interaction& it) { return removed.count(it.item) > 0; }),
                          ds.interactions.end());
  if (!ds.fixed_split.empty()) ds.fixed_split.resize(ds.interactions.size(), 0);
  return n;
}

Service::Service(Dataset ds, const ServiceOptions& opt)
    : ds_(std::move(ds)), opt_(opt), p_(std::make_shared<Impl>()) {
  p_->ds = ds_;
  p_->load(opt_);
  loaded_at_ = now_seconds();
}
Service::~Service() = default;

std::shared_ptr<Service::Impl> Service::current() const {
  std::lock_guard l(swap_mu_);
  return p_;
}

json Service::reload() {
  std::lock_guard g(gate_);
  Timer t;
  auto next = std::make_shared<Impl>();
  try {
    next->ds = ds_;
    next->load(opt_);
  } catch (const std::exception& e) {
    ++reload_failures_;
    current()->log_msg(std::string("reload failed, still serving the previous model: ") + e.what());
    throw ServeError(500, std::string("reload failed, still serving the previous model: ") + e.what());
  }
  {
    std::lock_guard l(swap_mu_);
    p_.swap(next);
  }
  ++reloads_;
  loaded_at_ = now_seconds();
  const auto sp = current();
  sp->log_msg("reloaded " + opt_.model_dir + ": " + sp->model->spec() + " (version " + sp->model_version +
              ") in " + std::to_string(t.seconds()) + " s");
  return {{"model", sp->model->spec()},
          {"model_version", sp->model_version},
          {"reloads", reloads_.load()},
          {"events_replayed", sp->events_replayed.load()},
          {"seconds", t.seconds()}};
  // `next` (the old state) is freed here or by the last request still using it.
}

json Service::health() const {
  const std::shared_ptr<Impl> sp = current();
  std::shared_lock lock(sp->mu);
  const size_t live = sp->n_items() - sp->deleted_list.size();
  return {{"status", "ok"},
          {"model", sp->model->spec()},
          {"items", live},
          {"model_version", sp->model_version},
          {"reloads", reloads_.load()},
          {"users", sp->user_ids.size()},
          {"retrieval", sp->retrieval},
          {"events", sp->events_stored.load()},
          {"encoder", sp->encoder ? sp->encoder->spec() : ""},
          {"domains", sp->ds.domains.names()}};
}

json Service::recommend(const RecommendQuery& q) const {
  const std::shared_ptr<Impl> sp = current();
  std::shared_lock lock(sp->mu);
  const uint32_t u = sp->known_user(q.user);
  std::string key;
  if (sp->opt.cache_entries > 0) {
    key = sp->cache_key(u, q);
    if (auto hit = sp->cache_get(key)) return std::move(*hit);
  }
  json items = sp->build_list(sp->model_user[u], sp->hist[u], sp->hist_w[u], sp->seen[u], sp->negative[u], q);
  json out = {{"user", q.user}, {"items", std::move(items)}};
  if (sp->opt.cache_entries > 0) sp->cache_put(key, out);
  return out;
}

json Service::recommend_new_user(const RecommendQuery& q) {
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  std::vector<uint32_t> items;
  {
    std::shared_lock lock(p.mu);
    for (auto& id : q.history) {
      auto i = p.item_ids.find(id);
      if (!i) throw ServeError(404, "unknown item '" + id + "' in history");
      if (*i >= p.model_items) continue;  // known to the server only (no model state)
      items.push_back(*i);
    }
  }
  items = keep_last_occurrence(items);
  if (items.empty() && q.profile.empty())
    throw ServeError(400, "give a history of item ids and/or a profile text");
  std::vector<float> profile;
  if (!q.profile.empty()) {
    if (!p.model->uses_text() || p.model->text_encoder().empty() || !p.encoder)
      throw ServeError(400, "model '" + p.model->name() + "' does not read profile texts; give a history");
    std::lock_guard el(p.enc_mu);
    profile = encode_one(*p.encoder, q.profile, 1);
  }
  std::lock_guard wl(p.write_mu);
  std::unique_lock lock(p.mu);
  const std::vector<float> w(items.size(), p.liked_weight);
  const uint32_t target = p.scratch_user >= 0 ? uint32_t(p.scratch_user) : p.model->n_users();
  uint32_t mu;
  try {
    mu = p.model->fold_in_profile(target, profile, items, w);
  } catch (const Error& e) {
    throw ServeError(400, e.what());
  }
  p.scratch_user = mu;
  std::vector<uint32_t> excl = items;
  std::sort(excl.begin(), excl.end());
  json list = p.build_list(mu, items, w, excl, {}, q);
  return {{"user", nullptr}, {"items", std::move(list)}};
}

json Service::similar(const std::string& item, size_t k, const std::string& domain,
                      const std::string& by_what) const {
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  std::shared_lock lock(p.mu);
  if (k == 0 || k > 1000) throw ServeError(400, "k must be between 1 and 1000");
  auto i = p.item_ids.find(item);
  if (!i) throw ServeError(404, "unknown item '" + item + "'");
  if (p.deleted[*i]) throw ServeError(404, "item '" + item + "' was deleted");
  const int d = p.domain_of(domain, false);
  // A new item has a vector too: the model's (add_item) or its text neighbours' mixture.
  const Matrix* v = p.similarity_vectors();
  std::string by = p.dot ? "factors" : "text";
  if (by_what == "text") {
    if (p.item_text.rows == 0) throw ServeError(400, "by=text: the server has no text encoder");
    v = &p.item_text, by = "text";
  } else if (by_what == "factors") {
    if (!p.dot) throw ServeError(400, "by=factors: model '" + p.model->name() + "' has no item vectors");
  } else if (!by_what.empty()) {
    throw ServeError(400, "by must be text or factors, not '" + by_what + "'");
  }
  if (!v)
    throw ServeError(
        400, "model '" + p.model->name() + "' has no item vectors and the server has no text encoder");
  std::vector<float> sims(p.n_items());
  for (uint32_t j = 0; j < p.n_items(); ++j) sims[j] = float(cosine(v->row(*i), v->row(j), v->cols));
  std::vector<uint32_t> ex = p.deleted_list;
  ex.insert(std::lower_bound(ex.begin(), ex.end(), *i), *i);
  auto top = top_k(sims.data(), p.n_items(), k, ex, p.item_domain, d);
  json items = json::array();
  for (auto& s : top) {
    json o = p.item_json(s.item);
    o["similarity"] = s.score;
    items.push_back(std::move(o));
  }
  return {{"item", item}, {"by", by}, {"items", std::move(items)}};
}

size_t Service::add_feedback(std::span<const Feedback> events) {
  std::lock_guard gate(gate_);  // not during a reload (its replay must see every stored event)
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  if (events.empty()) throw ServeError(400, "no feedback events");
  std::vector<Event> log_events;
  {
    std::shared_lock lock(p.mu);
    for (size_t k = 0; k < events.size(); ++k) {
      const Feedback& f = events[k];
      const std::string at = events.size() > 1 ? " (event " + std::to_string(k) + ")" : "";
      if (f.user.empty()) throw ServeError(400, "feedback needs a user" + at);
      if (f.item.empty()) throw ServeError(400, "feedback needs an item" + at);
      if (!kTypes.count(f.type))
        throw ServeError(
            400, "feedback type '" + f.type + "' is not one of click, purchase, like, dislike, skip" + at);
      auto i = p.item_ids.find(f.item);
      if (!i) throw ServeError(404, "unknown item '" + f.item + "'" + at);
      if (p.deleted[*i]) throw ServeError(404, "item '" + f.item + "' was deleted" + at);
      if (f.timestamp < 0) throw ServeError(400, "timestamp must be seconds since 1970, not negative" + at);
      Event e;
      e.kind = "feedback";
      e.user = f.user;
      e.item = f.item;
      e.type = f.type;
      e.timestamp = f.timestamp ? f.timestamp : now_seconds();
      log_events.push_back(std::move(e));
    }
  }
  std::lock_guard wl(p.write_mu);
  p.log->append(log_events);  // durable from here
  p.events_stored += int64_t(log_events.size());
  std::unique_lock lock(p.mu);
  for (auto& e : log_events) {
    try {
      p.apply(e);
    } catch (const std::exception& ex) {
      p.log_msg("event " + std::to_string(e.seq) + " stored but not applied: " + ex.what());
    }
  }
  return log_events.size();
}

json Service::feedback_of(const std::string& user) const {
  if (user.empty()) throw ServeError(400, "give user=ID");
  const std::shared_ptr<Impl> sp = current();
  json out = json::array();
  for (auto& e : sp->log->feedback_of(user))
    out.push_back({{"seq", e.seq}, {"item", e.item}, {"type", e.type}, {"timestamp", e.timestamp}});
  return {{"user", user}, {"events", std::move(out)}};
}

json Service::add_item(const NewItem& it) {
  std::lock_guard gate(gate_);  // not during a reload (its replay must see every stored event)
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  if (it.item.empty()) throw ServeError(400, "the item needs an id (\"item\")");
  if (it.title.empty() && it.description.empty() && it.categories.empty())
    throw ServeError(400, "the item needs a text: title, description or categories");
  {
    std::shared_lock lock(p.mu);
    if (p.item_ids.find(it.item)) throw ServeError(409, "item '" + it.item + "' exists");
    p.domain_of(it.domain, true);
    if (!p.encoder)
      throw ServeError(400, "the server has no text encoder to place a new item (start it with --text)");
  }
  Event e;
  e.kind = "add_item";
  e.item = it.item;
  e.timestamp = now_seconds();
  e.payload = json{{"domain", it.domain},
                   {"title", it.title},
                   {"description", it.description},
                   {"categories", it.categories}}
                  .dump();
  e.vec = p.encode_item(it);
  std::lock_guard wl(p.write_mu);
  {
    std::shared_lock lock(p.mu);
    if (p.item_ids.find(it.item)) throw ServeError(409, "item '" + it.item + "' exists");
  }
  std::vector<Event> one{e};
  p.log->append(one);
  ++p.events_stored;
  std::unique_lock lock(p.mu);
  p.apply(one[0]);
  const uint32_t i = p.n_items() - 1;
  json o = p.item_json(i);
  o["placed_by"] = i < p.model_items ? "model" : "text neighbours";
  return o;
}

void Service::delete_item(const std::string& item) {
  std::lock_guard gate(gate_);  // not during a reload (its replay must see every stored event)
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  std::lock_guard wl(p.write_mu);
  {
    std::shared_lock lock(p.mu);
    auto i = p.item_ids.find(item);
    if (!i) throw ServeError(404, "unknown item '" + item + "'");
    if (p.deleted[*i]) throw ServeError(404, "item '" + item + "' was already deleted");
  }
  std::vector<Event> one(1);
  one[0].kind = "delete_item";
  one[0].item = item;
  one[0].timestamp = now_seconds();
  p.log->append(one);
  ++p.events_stored;
  std::unique_lock lock(p.mu);
  p.apply(one[0]);
}

json Service::embeddings(std::span<const std::string> texts, const std::string& model) const {
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  if (!p.encoder) throw ServeError(400, "the server has no text encoder (start it with --text SPEC)");
  if (!model.empty() && model != p.encoder->spec() && model != p.encoder->name())
    throw ServeError(400, "model '" + model + "' is not this server's encoder (" + p.encoder->spec() + ")");
  if (texts.empty()) throw ServeError(400, "input is empty");
  if (texts.size() > 256) throw ServeError(413, "at most 256 inputs per request");
  Matrix m;
  {
    std::lock_guard lock(p.enc_mu);
    m = p.encoder->encode(texts, 1);
  }
  json data = json::array();
  size_t tokens = 0;
  for (size_t r = 0; r < m.rows; ++r) {
    data.push_back({{"object", "embedding"},
                    {"index", r},
                    {"embedding", std::vector<float>(m.row(r), m.row(r) + m.cols)}});
    tokens += (texts[r].size() + 3) / 4;
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", p.encoder->spec()},
          {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
}

std::string Service::metrics_text() const {
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  std::shared_lock lock(p.mu);
  std::string s;
  s += "# HELP xdrec_events_stored Events in the durable log.\n# TYPE xdrec_events_stored gauge\n";
  s += "xdrec_events_stored " + std::to_string(p.events_stored.load()) + "\n";
  s += "# HELP xdrec_items Items served (not deleted).\n# TYPE xdrec_items gauge\n";
  s += "xdrec_items " + std::to_string(p.n_items() - p.deleted_list.size()) + "\n";
  s += "# HELP xdrec_users Users known.\n# TYPE xdrec_users gauge\n";
  s += "xdrec_users " + std::to_string(p.user_ids.size()) + "\n";
  s += "# HELP xdrec_model_info The model served.\n# TYPE xdrec_model_info gauge\n";
  s += "xdrec_model_info{spec=\"" + p.model->spec() + "\",version=\"" + p.model_version + "\",retrieval=\"" +
       p.retrieval + "\"} 1\n";
  s += "# HELP xdrec_model_reloads_total Models reloaded without restart (POST /admin/reload, SIGHUP).\n"
       "# TYPE xdrec_model_reloads_total counter\n";
  s += "xdrec_model_reloads_total " + std::to_string(reloads_.load()) + "\n";
  s += "# HELP xdrec_model_reload_failures_total Reloads that failed (the previous model kept serving).\n"
       "# TYPE xdrec_model_reload_failures_total counter\n";
  s += "xdrec_model_reload_failures_total " + std::to_string(reload_failures_.load()) + "\n";
  s += "# HELP xdrec_model_loaded_timestamp_seconds When the model served was loaded.\n"
       "# TYPE xdrec_model_loaded_timestamp_seconds gauge\n";
  s += "xdrec_model_loaded_timestamp_seconds " + std::to_string(loaded_at_.load()) + "\n";
  const uint64_t hits = p.cache.hits.load(), misses = p.cache.misses.load();
  size_t entries = 0;
  {
    std::lock_guard l(p.cache.mu);
    entries = p.cache.lru.size();
  }
  s += "# HELP xdrec_rec_cache_hits_total Lists served from the recommendation cache.\n"
       "# TYPE xdrec_rec_cache_hits_total counter\n";
  s += "xdrec_rec_cache_hits_total " + std::to_string(hits) + "\n";
  s += "# HELP xdrec_rec_cache_misses_total Lists computed (not in the cache).\n"
       "# TYPE xdrec_rec_cache_misses_total counter\n";
  s += "xdrec_rec_cache_misses_total " + std::to_string(misses) + "\n";
  s += "# HELP xdrec_rec_cache_hit_ratio Hits over lookups since the model was loaded.\n# TYPE "
       "xdrec_rec_cache_hit_ratio "
       "gauge\n";
  s += "xdrec_rec_cache_hit_ratio " +
       std::to_string(hits + misses ? double(hits) / double(hits + misses) : 0.0) + "\n";
  s += "# HELP xdrec_rec_cache_entries Lists held.\n# TYPE xdrec_rec_cache_entries gauge\n";
  s += "xdrec_rec_cache_entries " + std::to_string(entries) + "\n";
  return s;
}

json Service::catalogue(const std::string& query, size_t limit) const {
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  std::shared_lock lock(p.mu);
  auto lower = [](std::string s) {
    for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string q = lower(query);
  json out = json::array();
  for (uint32_t i = 0; i < p.n_items() && out.size() < limit; ++i) {
    if (p.deleted[i]) continue;
    if (!q.empty() && lower(p.item_ids.name(i)).find(q) == std::string::npos &&
        lower(p.item_title[i]).find(q) == std::string::npos)
      continue;
    out.push_back(p.item_json(i));
  }
  return {{"items", std::move(out)}};
}

json Service::users(const std::string& query, size_t limit) const {
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  std::shared_lock lock(p.mu);
  json out = json::array();
  for (uint32_t u = 0; u < p.user_ids.size() && out.size() < limit; ++u)
    if (p.represented[u] && (query.empty() || p.user_ids.name(u).find(query) != std::string::npos))
      out.push_back({{"user", p.user_ids.name(u)}, {"history", p.hist[u].size()}});
  return {{"users", std::move(out)}};
}

std::string Service::retrieval() const {
  const std::shared_ptr<Impl> sp = current();
  return sp->retrieval;
}

double Service::measure_recall(size_t n_users, size_t k) const {
  const std::shared_ptr<Impl> sp = current();
  auto& p = *sp;
  std::shared_lock lock(p.mu);
  if (p.retrieval == "exact") return 1.0;
  const uint32_t nu = uint32_t(p.ds.n_users());
  n_users = std::min<size_t>(n_users, nu);
  double hit = 0, total = 0;
  for (size_t r = 0; r < n_users; ++r) {
    const uint32_t u = uint32_t(r * nu / n_users);
    std::vector<uint32_t> ex;
    std::set_union(p.seen[u].begin(), p.seen[u].end(), p.deleted_list.begin(), p.deleted_list.end(),
                   std::back_inserter(ex));
    std::vector<float> row;
    p.score_all(p.model_user[u], row);
    auto exact = top_k(row.data(), p.n_items(), k, ex, p.item_domain, -1);
    auto approx = p.approx_candidates(p.model_user[u], ex, -1, k);
    for (auto& e : exact)
      hit += std::any_of(approx.begin(), approx.end(), [&](const ScoredItem& a) { return a.item == e.item; });
    total += double(exact.size());
  }
  return total > 0 ? hit / total : 1.0;
}

}  // namespace xdrec::serve
