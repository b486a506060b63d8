// `xdrec serve`: loads the model and its data, replays the event log, and answers HTTP until SIGTERM/SIGINT;
// SIGHUP reloads the model directory (Service::reload).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <thread>

#include "cli/commands.h"
#include "xdrec/report.h"
#include "xdrec/serve.h"

namespace xdrec::cli {

namespace {
// SIGTERM / SIGINT / SIGHUP write their number to a pipe (all a handler may safely do); a thread reads it
// and stops the server (or, for SIGHUP, reloads the model). Handlers rather than sigwait: threads made before
// main (OpenBLAS's pool) would not block a signal.
int stop_pipe[2] = {-1, -1};
extern "C" void on_stop_signal(int sig) {
  const char c = char(sig);
  [[maybe_unused]] const ssize_t n = ::write(stop_pipe[1], &c, 1);
}
}  // namespace

int cmd_serve(const ServeArgs& a, const Common& c) {
  check(::pipe(stop_pipe) == 0, "cannot create a pipe");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);

  serve::HttpOptions ho;
  ho.host = a.host;
  ho.port = a.port;
  ho.threads = a.threads;
  ho.max_body = a.max_body;
  ho.access_log = a.access_log;
  if (!a.token_file.empty()) {
    std::ifstream in(a.token_file);
    check(bool(in), "cannot read the token file " + a.token_file);
    std::getline(in, ho.token);
    while (!ho.token.empty() && (ho.token.back() == '\r' || ho.token.back() == ' ')) ho.token.pop_back();
    check(ho.token.size() >= 8, "the token in " + a.token_file + " is shorter than 8 characters");
  }
  Dataset ds = load_data(a.data, c.quiet, c.threads);
  serve::ServiceOptions so;
  so.model_dir = a.model_dir;
  so.db = a.db;
  so.text = a.text;
  so.retrieval = a.retrieval;
  so.cache_entries = a.cache;
  so.threads = c.threads > 0 ? c.threads : 0;
  so.quiet = c.quiet;
  std::optional<Split> split;
  if (!a.split_dir.empty()) split = read_split(ds, a.split_dir);
  so.text_split = split ? &*split : nullptr;
  serve::Service service(std::move(ds), so);
  serve::HttpServer server(service, ho);
  server.bind();
  std::thread waiter([&] {
    char sig = 0;
    for (;;) {
      while (::read(stop_pipe[0], &sig, 1) < 0 && errno == EINTR) {
      }
      if (sig != SIGHUP) break;
      try {
        const nlohmann::json r = service.reload();
        std::fprintf(stderr, "xdrec serve: SIGHUP, reloaded %s (version %s)\n",
                     r["model"].get<std::string>().c_str(), r["model_version"].get<std::string>().c_str());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "xdrec serve: SIGHUP: %s\n", e.what());
      }
    }
    if (sig != 0) std::fprintf(stderr, "xdrec serve: signal %d, stopping\n", int(sig));
    server.stop();
  });
  std::fprintf(stderr, "xdrec serve: listening on http://%s:%d/ (model %s)\n", a.host.c_str(), server.port(),
               a.model_dir.c_str());
  std::fflush(stderr);
  server.serve();
  // serve() also returns when listening fails: wake the waiter (a zero byte) so that it can be joined.
  const char zero = 0;
  [[maybe_unused]] const ssize_t n = ::write(stop_pipe[1], &zero, 1);
  waiter.join();
  std::fprintf(stderr, "xdrec serve: stopped\n");
  return 0;
}

int cmd_replay(const ReplayArgs& a, const Common& c) {
  const Dataset ds = load_data(a.data, c.quiet, c.threads);
  serve::ReplayOptions o;
  o.model = a.model;
  o.first = a.first;
  o.rounds = a.rounds;
  o.k = a.k;
  o.threads = c.threads;
  o.seed = c.seed;
  o.quiet = c.quiet;
  const nlohmann::json r = serve::replay(ds, o);
  const auto& all = r["all_rounds"];
  std::printf(
      "%s, %s: NDCG@%zu over %zu user-rounds: no feedback %.4f, exclusion only %.4f, with feedback %.4f "
      "(new users, feedback only: %.4f over %zu)\n",
      ds.name.c_str(), r["model"].get<std::string>().c_str(), a.k, all["user_rounds"].get<size_t>(),
      all["no_feedback"]["ndcg"].get<double>(), all["exclusion_only"]["ndcg"].get<double>(),
      all["feedback"]["ndcg"].get<double>(), all["new_users"]["ndcg"].get<double>(),
      all["new_user_rounds"].get<size_t>());
  for (const char* d : {"ndcg_feedback_minus_no_feedback", "ndcg_feedback_minus_exclusion_only"})
    std::printf("  %s: %+.4f +- %.4f (paired, 95%%)\n", d, all[d]["mean"].get<double>(),
                all[d]["ci95"].get<double>());
  if (!a.output.empty()) {
    write_file_atomic(a.output, r.dump(2) + "\n");
    std::printf("wrote %s\n", a.output.c_str());
  }
  return 0;
}

int cmd_report(const ReportArgs& a) {
  std::vector<std::pair<std::string, nlohmann::json>> inputs;
  for (const auto& f : a.inputs) {
    std::ifstream in(f);
    check(bool(in), "cannot read " + f);
    try {
      inputs.emplace_back(f, nlohmann::json::parse(in));
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(f + ": not JSON: " + e.what());
    }
  }
  write_file_atomic(a.output, render_report(inputs, a.title));
  std::printf("wrote %s\n", a.output.c_str());
  return 0;
}

}  // namespace xdrec::cli
