// bench_serve: load on `xdrec serve`'s HTTP path. A synthetic catalogue (clustered item and user factors, one
// domain, --items x --factors) served by an iALS model, and optionally a real dataset (iALS trained here),
// each with exact retrieval (GEMM + top-K) and HNSW; GET /v1/recommend?k=10 for random users from wrk
// (Debian `wrk`) on this machine; recall@10 of HNSW against exact. Output: JSON (see bench/serve).
#include "xdrec/serve.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "xdrec/pipeline.h"
#include "xdrec/readers.h"
#include "xdrec/recommender.h"

using namespace xdrec;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Args {
  std::string out, dataset;
  size_t items = 1000000, users = 10000, factors = 64, clusters = 256;
  int duration = 15, connections = 2, server_threads = 2, wrk_threads = 1;
  int hnsw_m = 16, hnsw_ef_construction = 100, hnsw_ef = 128;
  int keep_alive = 100;
  int soak = 0;  // seconds of mixed reads and feedback writes (0: no soak)
};

// Runs a wrk command line and parses its --latency report: qps, p50_ms, p99_ms, requests, errors (non-2xx
// answers and socket errors).
json run_wrk(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  check(p != nullptr, "cannot run wrk");
  std::string text;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  const int rc = pclose(p);
  check(rc == 0, "wrk failed (is it installed? apt-get install wrk):\n" + text);
  auto ms = [](const std::string& v, const std::string& unit) {
    const double x = std::stod(v);
    return unit == "us" ? x / 1000 : unit == "s" ? x * 1000 : x;
  };
  json r;
  std::smatch m;
  static const std::regex rps(R"(Requests/sec:\s+([0-9.]+))"), p50(R"(\n\s+50%\s+([0-9.]+)(us|ms|s)\b)"),
      p99(R"(\n\s+99%\s+([0-9.]+)(us|ms|s)\b)"), non2xx(R"(Non-2xx or 3xx responses:\s+([0-9]+))"),
      sockerr(R"(Socket errors:\s+connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+))"),
      total(R"(([0-9]+) requests in)");
  check(std::regex_search(text, m, rps), "no Requests/sec in wrk's output:\n" + text);
  r["qps"] = std::stod(m[1]);
  check(std::regex_search(text, m, p50), "no p50 in wrk's output:\n" + text);
  r["p50_ms"] = ms(m[1], m[2]);
  check(std::regex_search(text, m, p99), "no p99 in wrk's output:\n" + text);
  r["p99_ms"] = ms(m[1], m[2]);
  r["requests"] = std::regex_search(text, m, total) ? std::stoll(m[1]) : 0;
  int64_t errors = std::regex_search(text, m, non2xx) ? std::stoll(m[1]) : 0;
  if (std::regex_search(text, m, sockerr))
    errors += std::stoll(m[1]) + std::stoll(m[2]) + std::stoll(m[3]) + std::stoll(m[4]);
  r["errors"] = errors;
  return r;
}

std::string wrk_command(const Args& a, int seconds, const std::string& lua, int port) {
  return "wrk -t" + std::to_string(a.wrk_threads) + " -c" + std::to_string(a.connections) + " -d" +
         std::to_string(seconds) + "s --latency -s " + lua + " http://127.0.0.1:" + std::to_string(port) +
         "/";
}

// wrk for `a.duration` seconds against GET paths drawn from `paths`.
json run_paths(const Args& a, int port, const std::vector<std::string>& paths, const std::string& tmp) {
  const std::string lua = tmp + "/paths.lua";
  {
    std::ofstream f(lua);
    f << "local paths = {\n";
    for (auto& p : paths) f << "  \"" << p << "\",\n";
    f << "}\nmath.randomseed(7)\nrequest = function()\n  return wrk.format(\"GET\", "
         "paths[math.random(#paths)])\nend\n";
  }
  return run_wrk(wrk_command(a, a.duration, lua, port));
}

// iALS (a.factors) trained on a real dataset and saved under tmp/name.
std::pair<Dataset, std::string> trained(const Args& a, const std::string& tmp, const std::string& name) {
  Dataset ds = read_dataset(a.dataset);
  std::fprintf(stderr, "%s: %s\n", a.dataset.c_str(), ds.summary().c_str());
  FitRequest req;
  req.spec = "ials:factors=" + std::to_string(a.factors);
  req.threads = 2;
  Fitted f = fit_model(ds, ds.user_item_matrix(), req);
  const std::string dir = tmp + "/" + name;
  save_model(*f.model, dir, ds.fingerprint());
  return {std::move(ds), dir};
}

// The service as these benchmarks run it: no text encoder, a fresh event log at `db`, `retrieval` with the
// benchmark's HNSW settings.
serve::ServiceOptions service_options(const Args& a, const std::string& model_dir, const std::string& db,
                                      const std::string& retrieval = "exact") {
  serve::ServiceOptions so;
  so.model_dir = model_dir;
  so.db = db;
  fs::remove(db);
  so.text = "none";
  so.retrieval = retrieval;
  so.hnsw_m = a.hnsw_m;
  so.hnsw_ef_construction = a.hnsw_ef_construction;
  so.hnsw_ef = a.hnsw_ef;
  so.threads = 2;
  return so;
}

// The HTTP layer over `svc` on a free loopback port (the benchmark's workers and keep-alive, no access log;
// writes need `token` when one is given), answering on its own thread until stop().
struct Listening {
  serve::HttpServer http;
  std::thread th;
  Listening(serve::Service& svc, const Args& a, const std::string& token = "")
      : http(svc, options(a, token)) {
    http.bind();
    th = std::thread([this] { http.serve(); });
  }
  ~Listening() { stop(); }
  int port() const { return http.port(); }
  void stop() {
    if (!th.joinable()) return;
    http.stop();
    th.join();
  }
  static serve::HttpOptions options(const Args& a, const std::string& token) {
    serve::HttpOptions ho;
    ho.port = 0;
    ho.threads = a.server_threads;
    ho.access_log = "-";
    ho.keep_alive_requests = a.keep_alive;
    ho.token = token;
    return ho;
  }
};

// Serves `model_dir` over `ds` with `retrieval`, measures recall (HNSW) and load.
json measure(const Args& a, const Dataset& ds, const std::string& model_dir, const std::string& retrieval,
             const std::string& tmp) {
  const serve::ServiceOptions so =
      service_options(a, model_dir, tmp + "/events-" + retrieval + ".sqlite", retrieval);
  Timer t;
  serve::Service svc(ds, so);
  const double startup = t.seconds();
  json r;
  if (retrieval == "hnsw") {
    Timer tr;
    r["recall@10"] = svc.measure_recall(1000, 10);
    r["recall_users"] = std::min<size_t>(1000, ds.n_users());
    std::fprintf(stderr, "  recall@10 of HNSW against exact: %.4f (%.1f s)\n", r["recall@10"].get<double>(),
                 tr.seconds());
  }
  Listening http(svc, a);
  std::vector<std::string> paths;
  std::mt19937_64 rng(11);
  for (int k = 0; k < 2000; ++k)
    paths.push_back("/v1/recommend?k=10&user=" + ds.users.name(uint32_t(rng() % ds.n_users())));
  json w = run_paths(a, http.port(), paths, tmp);
  http.stop();
  for (auto& [k, v] : w.items()) r[k] = v;
  r["startup_s"] = startup;
  std::fprintf(stderr, "  %s: %.0f QPS, p50 %.2f ms, p99 %.2f ms, %lld errors (start-up %.1f s)\n",
               retrieval.c_str(), r["qps"].get<double>(), r["p50_ms"].get<double>(),
               r["p99_ms"].get<double>(), (long long)r["errors"].get<int64_t>(), startup);
  return r;
}

// The synthetic catalogue: item factors around `clusters` centres, users likewise, 20 seen items per user.
std::pair<Dataset, std::string> synthetic(const Args& a, const std::string& tmp) {
  Dataset ds;
  ds.name = "serve-synthetic";
  ds.domains.get_or_add("catalogue");
  ds.items.reserve(a.items);
  for (size_t i = 0; i < a.items; ++i) ds.items.get_or_add("i" + std::to_string(i));
  ds.item_domain.assign(a.items, 0);
  ds.item_text.resize(a.items);
  for (size_t u = 0; u < a.users; ++u) ds.users.get_or_add("u" + std::to_string(u));
  ds.user_profile.resize(a.users);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t f = a.factors;
  Matrix centres(a.clusters, f);
  for (auto& x : centres.data) x = nd(rng) / std::sqrt(float(f));
  Matrix items(a.items, f), users(a.users, f);
  for (size_t i = 0; i < a.items; ++i) {
    const size_t c = rng() % a.clusters;
    for (size_t j = 0; j < f; ++j) items(i, j) = centres(c, j) + 0.5f * nd(rng) / std::sqrt(float(f));
  }
  for (size_t u = 0; u < a.users; ++u) {
    const size_t c = rng() % a.clusters;
    for (size_t j = 0; j < f; ++j) users(u, j) = centres(c, j) + 0.5f * nd(rng) / std::sqrt(float(f));
    for (int k = 0; k < 20; ++k) {
      Interaction it;
      it.user = uint32_t(u);
      it.item = uint32_t(rng() % a.items);
      ds.interactions.push_back(it);
    }
  }
  auto model = create_model("ials:factors=" + std::to_string(f));
  TensorMap t{{"user_factors", Tensor::from_matrix(users)}, {"item_factors", Tensor::from_matrix(items)}};
  model->load(t, json::object());
  const std::string dir = tmp + "/synthetic-model";
  save_model(*model, dir, ds.fingerprint());
  return {std::move(ds), dir};
}

double rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

// A soak: `a.soak` seconds of 80% GET /v1/recommend and 20% POST /v1/feedback (clicks, with the token) from
// wrk against the service over `ds`; resident memory sampled every 10 s.
json soak(const Args& a, const Dataset& ds, const std::string& model_dir, const std::string& tmp) {
  serve::Service svc(ds, service_options(a, model_dir, tmp + "/soak.sqlite"));
  Listening http(svc, a, "soak-token-0123");
  const std::string lua = tmp + "/soak.lua";
  {
    std::ofstream f(lua);
    std::mt19937_64 rng(3);
    f << "local users = {";
    for (int k = 0; k < 500; ++k) f << "\"" << ds.users.name(uint32_t(rng() % ds.n_users())) << "\",";
    f << "}\nlocal items = {";
    for (int k = 0; k < 2000; ++k) f << "\"" << ds.items.name(uint32_t(rng() % ds.n_items())) << "\",";
    f << "}\nmath.randomseed(9)\n"
         "request = function()\n"
         "  local u = users[math.random(#users)]\n"
         "  if math.random() < 0.2 then\n"
         "    local body = '{\"user\":\"' .. u .. '\",\"item\":\"' .. items[math.random(#items)] .. "
         "'\",\"type\":\"click\"}'\n"
         "    return wrk.format(\"POST\", \"/v1/feedback\", {[\"Content-Type\"]=\"application/json\", "
         "[\"Authorization\"]=\"Bearer soak-token-0123\"}, body)\n"
         "  end\n"
         "  return wrk.format(\"GET\", \"/v1/recommend?k=10&user=\" .. u)\n"
         "end\n";
  }
  std::atomic<bool> done{false};
  std::vector<double> rss;
  std::thread sampler([&] {
    while (!done) {
      rss.push_back(rss_mb());
      for (int i = 0; i < 100 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  json r = run_wrk(wrk_command(a, a.soak, lua, http.port()));
  done = true;
  sampler.join();
  const json health = svc.health();
  http.stop();
  r["seconds"] = a.soak;
  r["events_stored"] = health["events"];
  r["rss_mb"] = rss;
  const size_t n = rss.size();
  r["rss_first_minute_mb"] = n ? rss[std::min<size_t>(6, n - 1)] : 0.0;
  r["rss_end_mb"] = n ? rss.back() : 0.0;
  std::fprintf(stderr,
               "  soak %d s: %.0f QPS, %lld requests, %lld errors, %lld events stored, RSS %.0f MB after 1 "
               "min, %.0f MB at the end\n",
               a.soak, r["qps"].get<double>(), (long long)r["requests"].get<int64_t>(),
               (long long)r["errors"].get<int64_t>(), (long long)r["events_stored"].get<int64_t>(),
               r["rss_first_minute_mb"].get<double>(), r["rss_end_mb"].get<double>());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int k = 1; k < argc; ++k) {
    const std::string s = argv[k];
    auto next = [&]() -> std::string {
      check(k + 1 < argc, s + " needs a value");
      return argv[++k];
    };
    if (s == "--items")
      a.items = std::stoul(next());
    else if (s == "--users")
      a.users = std::stoul(next());
    else if (s == "--factors")
      a.factors = std::stoul(next());
    else if (s == "--duration")
      a.duration = std::stoi(next());
    else if (s == "--connections")
      a.connections = std::stoi(next());
    else if (s == "--server-threads")
      a.server_threads = std::stoi(next());
    else if (s == "--dataset")
      a.dataset = next();
    else if (s == "--ef")
      a.hnsw_ef = std::stoi(next());
    else if (s == "--ef-construction")
      a.hnsw_ef_construction = std::stoi(next());
    else if (s == "--m")
      a.hnsw_m = std::stoi(next());
    else if (s == "--keep-alive")
      a.keep_alive = std::stoi(next());
    else if (s == "--soak")
      a.soak = std::stoi(next());
    else if (s[0] != '-' && a.out.empty())
      a.out = s;
    else {
      std::fprintf(
          stderr,
          "usage: bench_serve OUT.json [--items N] [--users N] [--factors F] [--duration S] [--connections "
          "C]\n"
          "                   [--server-threads T] [--dataset DIR] [--m M] [--ef-construction E] [--ef E]\n");
      return 2;
    }
  }
  if (a.out.empty()) {
    std::fprintf(stderr, "usage: bench_serve OUT.json [options]\n");
    return 2;
  }
  try {
    const std::string tmp = fs::temp_directory_path() / ("xdrec-bench-serve-" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    json out;
    out["_meta"] = {
        {"machine", machine_description()},
        {"items", a.items},
        {"users", a.users},
        {"factors", a.factors},
        {"server_threads", a.server_threads},
        {"client", "wrk -t" + std::to_string(a.wrk_threads) + " -c" + std::to_string(a.connections) + " -d" +
                       std::to_string(a.duration) + "s, on the same machine"},
        {"hnsw", {{"M", a.hnsw_m}, {"ef_construction", a.hnsw_ef_construction}, {"ef", a.hnsw_ef}}},
        {"request", "GET /v1/recommend?k=10&user=<random of 2000 drawn users>"}};
    if (a.soak > 0) {
      check(!a.dataset.empty(), "--soak needs --dataset");
      auto [ds, dir] = trained(a, tmp, "soak-model");
      out["soak"] = soak(a, ds, dir, tmp);
      out["soak"]["dataset"] = ds.name;
      write_file_atomic(a.out, out.dump(1) + "\n");
      fs::remove_all(tmp);
      return 0;
    }
    {
      std::fprintf(stderr, "synthetic catalogue: %zu items x %zu factors, %zu users\n", a.items, a.factors,
                   a.users);
      auto [ds, dir] = synthetic(a, tmp);
      out["exact"] = measure(a, ds, dir, "exact", tmp);
      out["hnsw"] = measure(a, ds, dir, "hnsw", tmp);
    }
    if (!a.dataset.empty()) {
      auto [ds, dir] = trained(a, tmp, "real-model");
      out["real"] = {{"dataset", ds.name},
                     {"items", ds.n_items()},
                     {"users", ds.n_users()},
                     {"exact", measure(a, ds, dir, "exact", tmp)},
                     {"hnsw", measure(a, ds, dir, "hnsw", tmp)}};
    }
    write_file_atomic(a.out, out.dump(1) + "\n");
    fs::remove_all(tmp);
    std::fprintf(stderr, "wrote %s\n", a.out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serve: %s\n", e.what());
    return 1;
  }
  return 0;
}
