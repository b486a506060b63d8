// HTTP layer of the server (serve.h) over cpp-httplib: routes, auth, limits, metrics, access log, web page.
#include <httplib.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>

#include "xdrec/serve.h"

namespace xdrec::serve {

extern const char* const kWebPage;  // web_page.cpp, generated from src/serve/web/index.html

namespace {

using json = nlohmann::json;

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Constant-time comparison of the presented token with the expected one (only the length can leak).
bool token_equal(const std::string& given, const std::string& want) {
  if (want.empty() || given.size() != want.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ want[i]);
  return diff == 0;
}

size_t param_count(const httplib::Request& req, const std::string& name, size_t def, size_t lo, size_t hi) {
  if (!req.has_param(name.c_str())) return def;
  const std::string v = req.get_param_value(name.c_str());
  size_t pos = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(v, &pos);
  } catch (...) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || v[0] == '-')
    throw ServeError(400, name + ": '" + v + "' is not a whole number");
  if (n < lo || n > hi)
    throw ServeError(400, name + " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return size_t(n);
}

double param_real(const httplib::Request& req, const std::string& name, double def) {
  if (!req.has_param(name.c_str())) return def;
  const std::string v = req.get_param_value(name.c_str());
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (...) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || !std::isfinite(x))
    throw ServeError(400, name + ": '" + v + "' is not a number");
  return x;
}

bool param_flag(const httplib::Request& req, const std::string& name) {
  if (!req.has_param(name.c_str())) return false;
  const std::string v = req.get_param_value(name.c_str());
  if (v == "1" || v == "true" || v.empty()) return true;
  if (v == "0" || v == "false") return false;
  throw ServeError(400, name + ": '" + v + "' is not 0/1 or true/false");
}

json parse_body(const httplib::Request& req) {
  if (req.body.empty()) throw ServeError(400, "the request needs a JSON body");
  try {
    return json::parse(req.body);
  } catch (const json::parse_error& e) {
    throw ServeError(400, std::string("malformed JSON: ") + e.what());
  }
}

template <class T>
T field(const json& o, const char* name, const T& def, bool required = false) {
  if (!o.contains(name) || o[name].is_null()) {
    if (required) throw ServeError(400, std::string("missing field \"") + name + "\"");
    return def;
  }
  try {
    return o[name].get<T>();
  } catch (const json::exception&) {
    throw ServeError(400,
                     std::string("field \"") + name + "\" has the wrong type (" + o[name].type_name() + ")");
  }
}

// A string field that may also be given as a number (ids of numeric datasets).
std::string id_field(const json& o, const char* name, bool required) {
  if (o.contains(name) && o[name].is_number_integer()) return std::to_string(o[name].get<int64_t>());
  return field<std::string>(o, name, "", required);
}

// Latency buckets of the histogram (seconds).
constexpr std::array<double, 12> kBuckets{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                          0.05,   0.1,   0.25,   0.5,   1,    5};

struct RouteStats {
  std::map<int, uint64_t> by_status;
  std::array<uint64_t, kBuckets.size() + 1> buckets{};
  double sum = 0;
  uint64_t count = 0;
};

thread_local std::chrono::steady_clock::time_point t_start;

}  // namespace

struct HttpServer::Impl {
  Service& svc;
  HttpOptions opt;
  httplib::Server srv;
  int port = 0;
  std::mutex stats_mu, log_mu;
  std::map<std::string, RouteStats> stats;
  FILE* access = nullptr;
  bool own_access = false;

  Impl(Service& s, const HttpOptions& o) : svc(s), opt(o) {}

  static std::string route_of(const httplib::Request& req) {
    const std::string& p = req.path;
    if (p.rfind("/v1/items/", 0) == 0) return req.method + " /v1/items/:id";
    static const char* known[] = {
        "/",         "/health",        "/metrics",      "/v1/recommend", "/v1/similar", "/v1/feedback",
        "/v1/items", "/v1/embeddings", "/v1/catalogue", "/v1/users"};
    for (auto* k : known)
      if (p == k) return req.method + " " + p;
    return req.method + " (other)";
  }

  void record(const httplib::Request& req, const httplib::Response& res) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    {
      std::lock_guard lock(stats_mu);
      auto& s = stats[route_of(req)];
      ++s.by_status[res.status];
      size_t b = 0;
      while (b < kBuckets.size() && secs > kBuckets[b]) ++b;
      ++s.buckets[b];
      s.sum += secs;
      ++s.count;
    }
    if (!access) return;
    char ts[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const json line{{"ts", ts},
                    {"remote", req.remote_addr},
                    {"method", req.method},
                    {"path", req.path},
                    {"status", res.status},
                    {"ms", std::round(secs * 1e5) / 100},
                    {"bytes", res.body.size()}};
    std::lock_guard lock(log_mu);
    std::fprintf(access, "%s\n", line.dump().c_str());
    std::fflush(access);
  }

  std::string metrics() {
    std::string s = svc.metrics_text();
    std::lock_guard lock(stats_mu);
    s += "# HELP xdrec_http_requests_total Requests answered, by route and status.\n"
         "# TYPE xdrec_http_requests_total counter\n";
    for (auto& [route, st] : stats)
      for (auto& [code, n] : st.by_status)
        s += "xdrec_http_requests_total{route=\"" + route + "\",status=\"" + std::to_string(code) + "\"} " +
             std::to_string(n) + "\n";
    s += "# HELP xdrec_http_errors_total Requests answered with a 4xx or 5xx status.\n"
         "# TYPE xdrec_http_errors_total counter\n";
    uint64_t errors = 0;
    for (auto& [route, st] : stats)
      for (auto& [code, n] : st.by_status) errors += code >= 400 ? n : 0;
    s += "xdrec_http_errors_total " + std::to_string(errors) + "\n";
    s += "# HELP xdrec_http_request_seconds Request latency.\n# TYPE xdrec_http_request_seconds histogram\n";
    for (auto& [route, st] : stats) {
      uint64_t cum = 0;
      for (size_t b = 0; b < kBuckets.size(); ++b) {
        cum += st.buckets[b];
        char le[32];
        std::snprintf(le, sizeof le, "%g", kBuckets[b]);
        s += "xdrec_http_request_seconds_bucket{route=\"" + route + "\",le=\"" + le + "\"} " +
             std::to_string(cum) + "\n";
      }
      cum += st.buckets[kBuckets.size()];
      s += "xdrec_http_request_seconds_bucket{route=\"" + route + "\",le=\"+Inf\"} " + std::to_string(cum) +
           "\n";
      s += "xdrec_http_request_seconds_sum{route=\"" + route + "\"} " + std::to_string(st.sum) + "\n";
      s += "xdrec_http_request_seconds_count{route=\"" + route + "\"} " + std::to_string(st.count) + "\n";
    }
    return s;
  }

  void authorise(const httplib::Request& req) const {
    if (opt.token.empty()) return;
    const std::string h = req.get_header_value("Authorization");
    if (h.empty()) throw ServeError(401, "this endpoint needs Authorization: Bearer TOKEN");
    if (h.rfind("Bearer ", 0) != 0 || !token_equal(h.substr(7), opt.token))
      throw ServeError(401, "wrong token");
  }

  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // Every handler answers JSON and turns any error into {"error": reason} with its status.
  Handler guarded(Handler h, bool write = false) {
    return [this, h = std::move(h), write](const httplib::Request& req, httplib::Response& res) {
      try {
        if (write) authorise(req);
        h(req, res);
      } catch (const ServeError& e) {
        fail(res, e.status, e.what());
      } catch (const json::exception& e) {
        fail(res, 400, std::string("bad JSON value: ") + e.what());
      } catch (const Error& e) {
        fail(res, 400, e.what());
      } catch (const std::exception& e) {
        fail(res, 500, std::string("internal error: ") + e.what());
      }
    };
  }
  static void fail(httplib::Response& res, int status, const std::string& why) {
    res.status = status;
    res.set_content(json{{"error", why}}.dump(), "application/json");
  }
  static void reply(httplib::Response& res, const json& j, int status = 200) {
    res.status = status;
    res.set_content(j.dump(), "application/json");
  }

  void routes() {
    srv.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kWebPage, "text/html; charset=utf-8");
    });
    srv.Get("/health",
            guarded([this](const httplib::Request&, httplib::Response& res) { reply(res, svc.health()); }));
    srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4");
    });
    srv.Get("/v1/recommend", guarded([this](const httplib::Request& req, httplib::Response& res) {
              RecommendQuery q;
              q.user = req.get_param_value("user");
              q.k = param_count(req, "k", 10, 1, 1000);
              q.domain = req.get_param_value("domain");
              q.diversity = param_real(req, "diversity", 0);
              q.explore = param_real(req, "explore", 0);
              q.quota = req.get_param_value("quota");
              q.explain = param_flag(req, "explain");
              q.seed = param_count(req, "seed", 0, 0, SIZE_MAX);
              reply(res, svc.recommend(q));
            }));
    srv.Post("/v1/recommend", guarded([this](const httplib::Request& req, httplib::Response& res) {
               const json b = parse_body(req);
               if (!b.is_object()) throw ServeError(400, "the body must be a JSON object");
               RecommendQuery q;
               if (b.contains("history")) {
                 if (!b["history"].is_array())
                   throw ServeError(400, "field \"history\" must be an array of item ids");
                 for (auto& x : b["history"]) {
                   if (x.is_string())
                     q.history.push_back(x.get<std::string>());
                   else if (x.is_number_integer())
                     q.history.push_back(std::to_string(x.get<int64_t>()));
                   else
                     throw ServeError(400, "field \"history\" must hold item ids (strings)");
                 }
               }
               q.profile = field<std::string>(b, "profile", "");
               q.domain = field<std::string>(b, "domain", "");
               const int64_t k = field<int64_t>(b, "k", 10);
               if (k < 1 || k > 1000) throw ServeError(400, "k must be between 1 and 1000");
               q.k = size_t(k);
               q.diversity = field<double>(b, "diversity", 0);
               q.explore = field<double>(b, "explore", 0);
               q.quota = field<std::string>(b, "quota", "");
               q.explain = field<bool>(b, "explain", false);
               reply(res, svc.recommend_new_user(q));
             }));
    srv.Get("/v1/similar", guarded([this](const httplib::Request& req, httplib::Response& res) {
              const std::string item = req.get_param_value("item");
              if (item.empty()) throw ServeError(400, "give item=ID");
              reply(res, svc.similar(item, param_count(req, "k", 10, 1, 1000), req.get_param_value("domain"),
                                     req.get_param_value("by")));
            }));
    srv.Post("/v1/feedback", guarded(
                                 [this](const httplib::Request& req, httplib::Response& res) {
                                   const json b = parse_body(req);
                                   std::vector<Feedback> evs;
                                   auto one = [&](const json& o) {
                                     if (!o.is_object())
                                       throw ServeError(400, "each feedback event must be a JSON object");
                                     Feedback f;
                                     f.user = id_field(o, "user", true);
                                     f.item = id_field(o, "item", true);
                                     f.type = field<std::string>(o, "type", "", true);
                                     f.timestamp = field<int64_t>(o, "timestamp", 0);
                                     evs.push_back(std::move(f));
                                   };
                                   if (b.is_array()) {
                                     if (b.size() > 10000)
                                       throw ServeError(413, "at most 10000 events per request");
                                     for (auto& o : b) one(o);
                                   } else {
                                     one(b);
                                   }
                                   const size_t n = svc.add_feedback(evs);
                                   reply(res, {{"stored", n}}, 202);
                                 },
                                 true));
    srv.Get("/v1/feedback", guarded(
                                [this](const httplib::Request& req, httplib::Response& res) {
                                  reply(res, svc.feedback_of(req.get_param_value("user")));
                                },
                                true));
    srv.Post("/v1/items", guarded(
                              [this](const httplib::Request& req, httplib::Response& res) {
                                const json b = parse_body(req);
                                if (!b.is_object()) throw ServeError(400, "the body must be a JSON object");
                                NewItem it;
                                it.item = id_field(b, "item", true);
                                it.domain = field<std::string>(b, "domain", "");
                                it.title = field<std::string>(b, "title", "");
                                it.description = field<std::string>(b, "description", "");
                                it.categories = field<std::vector<std::string>>(b, "categories", {});
                                reply(res, svc.add_item(it), 201);
                              },
                              true));
    srv.Delete(R"(/v1/items/(.+))", guarded(
                                        [this](const httplib::Request& req, httplib::Response& res) {
                                          const std::string id =
                                              httplib::detail::decode_url(req.matches[1], false);
                                          svc.delete_item(id);
                                          reply(res, {{"deleted", id}});
                                        },
                                        true));
    srv.Post(
        "/admin/reload",
        guarded([this](const httplib::Request&, httplib::Response& res) { reply(res, svc.reload()); }, true));
    srv.Post("/v1/embeddings", guarded([this](const httplib::Request& req, httplib::Response& res) {
               const json b = parse_body(req);
               if (!b.is_object() || !b.contains("input")) throw ServeError(400, "missing field \"input\"");
               std::vector<std::string> texts;
               if (b["input"].is_string())
                 texts.push_back(b["input"].get<std::string>());
               else if (b["input"].is_array())
                 for (auto& x : b["input"]) {
                   if (!x.is_string())
                     throw ServeError(400, "field \"input\" must be a string or an array of strings");
                   texts.push_back(x.get<std::string>());
                 }
               else
                 throw ServeError(400, "field \"input\" must be a string or an array of strings");
               reply(res, svc.embeddings(texts, field<std::string>(b, "model", "")));
             }));
    srv.Get("/v1/catalogue", guarded([this](const httplib::Request& req, httplib::Response& res) {
              reply(res, svc.catalogue(req.get_param_value("q"), param_count(req, "limit", 50, 1, 1000)));
            }));
    srv.Get("/v1/users", guarded([this](const httplib::Request& req, httplib::Response& res) {
              reply(res, svc.users(req.get_param_value("q"), param_count(req, "limit", 50, 1, 1000)));
            }));
    // Statuses the library sets itself (404 no route, 413 body too large, 400 unreadable request) get a
    // reason.
    srv.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string why = res.status == 404   ? "no route " + req.method + " " + req.path
                        : res.status == 413 ? "request body too large"
                                            : "bad request";
      res.set_content(json{{"error", why}}.dump(), "application/json");
    });
    srv.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      t_start = std::chrono::steady_clock::now();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    srv.set_logger([this](const httplib::Request& req, const httplib::Response& res) { record(req, res); });
  }
};

HttpServer::HttpServer(Service& service, const HttpOptions& opt) : p_(std::make_unique<Impl>(service, opt)) {
  auto& p = *p_;
  check(opt.threads >= 1 && opt.threads <= 256, "--threads must be between 1 and 256");
  if (opt.access_log.empty()) {
    p.access = stderr;
  } else if (opt.access_log != "-") {
    p.access = std::fopen(opt.access_log.c_str(), "a");
    check(p.access != nullptr, "cannot open the access log " + opt.access_log);
    p.own_access = true;
  }
  const int threads = opt.threads;
  p.srv.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  p.srv.set_payload_max_length(opt.max_body);
  p.srv.set_read_timeout(opt.read_timeout_s, 0);
  p.srv.set_write_timeout(opt.write_timeout_s, 0);
  p.srv.set_tcp_nodelay(true);  // small JSON answers: no 40 ms Nagle / delayed-ACK stall per response
  p.srv.set_keep_alive_timeout(opt.keep_alive_timeout_s);
  // A connection holds a worker while it lives (cpp-httplib serves a connection on one thread): after this
  // many requests it is closed, so that more clients than workers take turns instead of waiting seconds.
  p.srv.set_keep_alive_max_count(size_t(opt.keep_alive_requests));
  p.routes();
}

HttpServer::~HttpServer() {
  if (p_->own_access && p_->access) std::fclose(p_->access);
}

void HttpServer::bind() {
  auto& p = *p_;
  check(is_loopback(p.opt.host) || !p.opt.token.empty(),
        "refusing to listen on " + p.opt.host + " without a token: give --token-file (writes need it)");
  if (p.opt.port == 0) {
    p.port = p.srv.bind_to_any_port(p.opt.host.c_str());
    check(p.port > 0, "cannot bind " + p.opt.host);
  } else {
    check(p.srv.bind_to_port(p.opt.host.c_str(), p.opt.port),
          "cannot bind " + p.opt.host + ":" + std::to_string(p.opt.port) + " (in use?)");
    p.port = p.opt.port;
  }
}

int HttpServer::port() const {
  return p_->port;
}
void HttpServer::serve() {
  p_->srv.listen_after_bind();
}
void HttpServer::stop() {
  p_->srv.stop();
}

}  // namespace xdrec::serve
