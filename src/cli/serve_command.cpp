// `xdrec serve`: loads the model and its data, replays the event log, and answers HTTP until SIGTERM/SIGINT.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "cli/commands.h"
#include "xdrec/serve.h"

namespace xdrec::cli {

int cmd_serve(const ServeArgs& a, const Common& c) {
  // Block the stop signals in every thread; one thread waits for them and stops the server gracefully
  // (requests in flight finish, then serve() returns).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

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
  so.threads = c.threads > 0 ? c.threads : 0;
  so.quiet = c.quiet;
  std::optional<Split> split;
  if (!a.split_dir.empty()) split = read_split(ds, a.split_dir);
  so.text_split = split ? &*split : nullptr;
  serve::Service service(std::move(ds), so);
  serve::HttpServer server(service, ho);
  server.bind();
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (sig == SIGTERM || sig == SIGINT) {
      std::fprintf(stderr, "xdrec serve: signal %d, stopping\n", sig);
      server.stop();
    }
  });
  std::fprintf(stderr, "xdrec serve: listening on http://%s:%d/ (model %s)\n", a.host.c_str(), server.port(),
               a.model_dir.c_str());
  std::fflush(stderr);
  server.serve();
  // serve() also returns when listening fails: wake the waiter so that it can be joined.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  std::fprintf(stderr, "xdrec serve: stopped\n");
  return 0;
}

}  // namespace xdrec::cli
