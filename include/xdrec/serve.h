// Serving: the online recommender behind `xdrec serve`. Two layers:
//
//   Service     the state and every operation, independent of HTTP: a loaded model over its dataset, each
//               user's seen items and ordered history, feedback folded in at once (fold-in), items added by
//               text and deleted, retrieval (exact or HNSW), re-ranking (rerank.h) and explanations. Every
//               write goes to the durable event log (SQLite, WAL) before it is applied, and the log is
//               replayed over the model on start, so a restart serves the same lists.
//   HttpServer  HTTP/1.1 + JSON over cpp-httplib: the routes, bearer-token auth for writes, limits, metrics,
//               the access log and the web page.
//
// Errors of a request are ServeError (status + reason); the HTTP layer answers {"error": reason}.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/dataset.h"
#include "xdrec/split.h"

namespace xdrec::serve {

// A request that cannot be served: the HTTP status (4xx for the client's fault) and the reason.
struct ServeError : Error {
  int status;
  ServeError(int st, const std::string& what) : Error(what), status(st) {}
};

struct ServiceOptions {
  std::string model_dir;
  std::string db;             // event log file; empty: MODEL_DIR/events.sqlite
  std::string text = "auto";  // item-text encoder for a model that has none: auto, none or an encoder spec
  // exact, hnsw, auto (hnsw for dot-product models from hnsw_threshold items), or the item vectors as codes:
  // sq8[:rerank=N] or pq[:m=8,bits=8,iters=20,rerank=N,seed=42] (item_codes.h)
  std::string retrieval = "auto";
  size_t hnsw_threshold = 100000;
  int hnsw_m = 16, hnsw_ef_construction = 200, hnsw_ef = 128;
  int threads = 1;  // threads of start-up work (encoding, index build)
  // Bounded LRU cache of known users' lists (GET /v1/recommend), keyed by the query; a user's entries are
  // invalidated by their feedback, every entry by an item added or deleted (and the cache starts empty with
  // each model load). 0: no cache.
  size_t cache_entries = 10000;
  bool quiet = false;  // no start-up messages on stderr
  // The split whose fair tags the model's item texts carried (text.json: split_tags), when it did.
  const Split* text_split = nullptr;
};

// One feedback event as the API takes it.
struct Feedback {
  std::string user, item, type;  // type: click, purchase, like, dislike, skip
  int64_t timestamp = 0;         // seconds; 0: the time it was received
};

// A new item as the API takes it.
struct NewItem {
  std::string item, domain, title, description;
  std::vector<std::string> categories;
};

struct RecommendQuery {
  std::string user;                  // a known user (GET) or empty (POST with history / profile)
  std::vector<std::string> history;  // POST: a new user's items, in order
  std::string profile;               // POST: a new user's profile text
  size_t k = 10;
  std::string domain;    // only this domain (empty: any)
  double diversity = 0;  // MMR lambda in [0, 1]
  double explore = 0;    // share of slots given to items outside the user's usual domains/categories
  std::string quota;     // "domain:n,domain:n": at most n items of a domain
  bool explain = false;
  uint64_t seed = 0;  // exploration draws (0: derived from the user and the event count)
};

class Service {
 public:
  // Loads the model saved in opt.model_dir over `ds` (the dataset it was trained on), opens the event log and
  // replays it. Error when the model and the data do not match or the log cannot be opened.
  Service(Dataset ds, const ServiceOptions& opt);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  nlohmann::json health() const;
  nlohmann::json recommend(const RecommendQuery& q) const;
  // POST /v1/recommend: a user the model has never seen (history and/or profile), folded in without keeping.
  nlohmann::json recommend_new_user(const RecommendQuery& q);
  // Items most like `item` by the model's item vectors (dot-product models) or by text; `by` = "text" or
  // "factors" chooses (empty: the default).
  nlohmann::json similar(const std::string& item, size_t k, const std::string& domain,
                         const std::string& by = "") const;
  // Checks every event first (nothing is stored when one is bad), stores them durably, then applies them.
  // Returns how many were stored.
  size_t add_feedback(std::span<const Feedback> events);
  nlohmann::json feedback_of(const std::string& user) const;
  nlohmann::json add_item(const NewItem& item);
  void delete_item(const std::string& item);
  // OpenAI-compatible embeddings of `texts` with the service's encoder.
  nlohmann::json embeddings(std::span<const std::string> texts, const std::string& model) const;
  // Prometheus lines of the service's own gauges (events stored, items, users, model).
  std::string metrics_text() const;
  // A page of item ids for the web page's pickers (ids, titles, domains), and of user ids.
  nlohmann::json catalogue(const std::string& query, size_t limit) const;
  nlohmann::json users(const std::string& query, size_t limit) const;

  // For tests and benchmarks: the retrieval in use ("exact", "hnsw", "sq8", "pq") and recall@k of the
  // approximate path against exact retrieval over `n_users` users (1 when exact).
  std::string retrieval() const;
  double measure_recall(size_t n_users, size_t k) const;

  // Hot reload (POST /admin/reload, SIGHUP): loads the model saved in the model directory now (e.g. written
  // there by `xdrec train --resume`) into a new state beside the served one — text vectors, retrieval, and
  // the event log replayed over it as on start — and swaps it in at once. Requests in flight finish on the
  // old state; writes wait while the new one is built, so no stored event is missed; the recommendation
  // cache starts empty. When the load fails the old state keeps serving and ServeError 500 carries the
  // reason. Returns the model now served (spec, version, reload count, seconds).
  nlohmann::json reload();

 private:
  struct Impl;
  std::shared_ptr<Impl> current() const;  // the state served now (kept alive by the caller's copy)

  const Dataset ds_;  // the data as given: each load folds the event log into its own copy
  const ServiceOptions opt_;
  std::mutex gate_;             // one writer or reload at a time (a reload replays every event stored)
  mutable std::mutex swap_mu_;  // guards p_
  std::shared_ptr<Impl> p_;
  std::atomic<uint64_t> reloads_{0}, reload_failures_{0};
  std::atomic<int64_t> loaded_at_{0};  // seconds since 1970 of the last (re)load
};

// Folds the event log at `db` into a dataset: positive feedback (click, purchase, like) becomes interactions
// (new users appended), added items become items with their text, deleted items lose their interactions.
// Used by `xdrec train --events` and, when a model was trained that way, by Service on start. Returns the
// number of events folded in. Error when the log cannot be read or an event names an unknown domain.
size_t fold_events(Dataset& ds, const std::string& db);

// Offline replay of the feedback loop (`xdrec replay`): the interactions up to the `first` quantile of time
// train the model, which is then served; the later interactions, cut into `rounds` equal slices of time, are
// fed back as click events round by round, and each round's lists (k items, asked before the round's own
// events arrive) are scored against the items each user then took (new to them) under three conditions:
//   no_feedback      the served model as trained, lists excluding only the training items
//   exclusion_only   the same lists with the items the user took in earlier rounds removed
//   feedback         the live service, which folded every earlier round's events in (POST /v1/feedback path)
// Users without training interactions are served only with feedback and are reported apart.
struct ReplayOptions {
  std::string model = "ials";
  double first = 0.5;
  int rounds = 5;
  size_t k = 10;
  int threads = 0;
  uint64_t seed = 42;
  bool quiet = false;
};
nlohmann::json replay(const Dataset& ds, const ReplayOptions& opt);

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;            // 0: any free port (see HttpServer::port())
  std::string token;          // empty: writes need no token (then only a loopback host is allowed)
  int threads = 2;            // worker threads answering requests
  size_t max_body = 1 << 20;  // bytes; a larger body is 413
  int read_timeout_s = 5, write_timeout_s = 5;  // a client slower than this is dropped
  // A connection holds a worker while it is open (cpp-httplib serves each connection on one thread), so an
  // idle keep-alive connection is closed after keep_alive_timeout_s and a busy one after keep_alive_requests:
  // more clients than workers then take turns instead of waiting.
  int keep_alive_requests = 100, keep_alive_timeout_s = 1;
  std::string access_log;  // file for JSON access-log lines; empty: stderr; "-": none
};

class HttpServer {
 public:
  HttpServer(Service& service, const HttpOptions& opt);
  ~HttpServer();
  // Binds (Error when the port is taken or a non-loopback host has no token); then serve() blocks until
  // stop().
  void bind();
  int port() const;
  void serve();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> p_;
};

}  // namespace xdrec::serve
