// The xdrec commands. Each returns the process exit status and throws xdrec::Error on bad input.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xdrec/dataset.h"
#include "xdrec/embed.h"
#include "xdrec/encoder.h"
#include "xdrec/split.h"

namespace xdrec::cli {

struct Common {
  int threads = 0;
  uint64_t seed = 42;
  bool quiet = false;
};

// A dataset argument: a directory/file in a known format, a binary FILE.xdb, or "synthetic[:k=v,...]".
struct DataArg {
  std::string path;
  std::string format = "auto";
};

// Text side information for text models (--encoder, --item-template, --cache-dir). An empty encoder means
// no text: text models then fit on interactions alone (or refuse with their own error).
struct TextArgs {
  std::string encoder;
  std::string item_template = kDefaultItemTemplate;
  std::string cache_dir;  // empty: $XDG_CACHE_HOME/xdrec/embeddings
};

struct ImportArgs {
  std::string input, format = "auto", on_error = "fail", output;
  std::string anonymise_key;          // key file: pseudonymise ids and scrub text (empty: import as it is)
  std::string id_map;                 // where to write raw -> pseudonym (only with --anonymise)
  std::string coarsen_time = "none";  // none, day, week or month (only with --anonymise)
};
struct SplitArgs {
  DataArg data;
  std::string protocol = "random", target_domain, output;
  SplitOptions opt;
};
// --dp-delta / --dp-epsilon: set a DP-SGD model's dp_delta / dp_epsilon and turn DP-SGD on (0: not given).
struct DpArgs {
  double delta = 0, epsilon = 0;
};
struct TrainArgs {
  DataArg data;
  std::string split_dir, model, output;
  std::string events;         // a server's event log (SQLite) to fold into the data before training
  std::string augment;        // augment.h spec: generated interactions for a sparse domain's users
  std::string resume;         // a saved model to continue from (incremental update)
  int64_t since = INT64_MIN;  // with resume: interactions after this timestamp are the new ones
  int sweeps = 2;             // with resume: full passes after the touched rows
  TextArgs text;
  std::string store = "fp32";  // storage of the factor / embedding matrices: fp32, fp16 or int8
  double prune = 0.0;          // fraction of each prunable weight matrix zeroed by magnitude (0: none)
  bool distributed = false;    // fit over the processes of an MPI job (mpirun -np N xdrec train ...)
  bool verbose = false;        // the model's per-iteration lines (iALS: time, and per rank when distributed)
  DpArgs dp;
};
struct EvalArgs {
  DataArg data;
  std::string split_dir, protocol = "random", target_domain, output;
  std::string item_vectors;  // safetensors from `xdrec embed` (tensor "items"): diversity on text vectors
  SplitOptions split_opt;
  std::vector<std::string> models;
  std::vector<size_t> ks;
  size_t sampled = 0;
  int n_seeds = 1;
  std::string candidates = "all";  // "all", or "cold-items": rank only the split's held-out items
  bool on_validation = false;  // fit on train, evaluate on validation (tuning); else train+validation -> test
  std::vector<double> diversity;  // MMR trade-offs to evaluate besides the plain lists (full ranking)
  std::string task = "ranking";   // or "rating": fit on the ratings, report RMSE / MAE
  std::string augment;            // augment.h spec applied to every model's training matrix
  TextArgs text;
  bool distributed = false;  // spread the (model, seed) runs over the processes of an MPI job
  DpArgs dp;
};
struct RecommendArgs {
  DataArg data;
  std::string model_dir, split_dir, history, domain;
  std::string profile;  // a new user's profile text (text models)
  bool profile_given = false;
  std::string new_item_text, new_item_domain;  // an item known only by its text (text models)
  std::vector<std::string> users;
  size_t k = 10;
  bool json = false;
  std::string index = "exact";  // exact, or item codes: sq8[:...] | pq[:...] (item_codes.h)
};
struct ServeArgs {
  DataArg data;
  std::string model_dir, host = "127.0.0.1", db, token_file, access_log, text = "auto", retrieval = "auto",
                         split_dir;
  int port = 8080;
  int threads = 4;
  size_t max_body = 1 << 20;
  size_t cache = 10000;  // recommendation cache entries (0: none)
};
struct ReplayArgs {
  DataArg data;
  std::string model = "ials", output;
  double first = 0.5;
  int rounds = 5;
  size_t k = 10;
};
struct ReportArgs {
  std::vector<std::string> inputs;
  std::string output = "report.html", title = "xdrec report";
};
struct QuickstartArgs {
  uint32_t users = 3000, items_per_domain = 400;
  std::string output;
  std::string encoder = "auto";  // for the cold-start demo with a text model
  std::string cache_dir;
};

struct EncodeArgs {
  std::string encoder = "auto";
  bool ids = false;    // write token ids instead of vectors
  std::string fit_on;  // for fitted encoders (tfidf): a text file to fit on (default: the input itself)
};
struct EmbedArgs {
  DataArg data;
  std::string encoder = "auto", output, template_text = kDefaultItemTemplate;
  std::string cache_dir;  // empty: $XDG_CACHE_HOME/xdrec/embeddings
  size_t batch = 1024;
};

int cmd_import(const ImportArgs& a, const Common& c);
int cmd_split(const SplitArgs& a, const Common& c);
int cmd_train(const TrainArgs& a, const Common& c);
int cmd_eval(const EvalArgs& a, const Common& c);
int cmd_recommend(const RecommendArgs& a, const Common& c);
int cmd_quickstart(const QuickstartArgs& a, const Common& c);
int cmd_serve(const ServeArgs& a, const Common& c);    // src/cli/serve_command.cpp
int cmd_replay(const ReplayArgs& a, const Common& c);  // src/cli/serve_command.cpp
int cmd_report(const ReportArgs& a);                   // src/cli/serve_command.cpp
int cmd_models();
struct PrivacyArgs {
  double q = 0, noise = 0, delta = 0, epsilon = 0;
  int64_t steps = 0;
  std::string conversion = "classic";
  std::vector<double> orders;  // empty: the integers 2..256
};
int cmd_privacy_epsilon(const PrivacyArgs& a);         // src/cli/privacy_commands.cpp
int cmd_privacy_noise(const PrivacyArgs& a);           // src/cli/privacy_commands.cpp
int cmd_encode(const EncodeArgs& a, const Common& c);  // src/cli/text_commands.cpp
int cmd_embed(const EmbedArgs& a, const Common& c);    // src/cli/text_commands.cpp

// Shared helpers (also used by tests).
Dataset load_data(const DataArg& d, bool quiet, int threads = 1);
void write_split(const Dataset& ds, const Split& s, const std::string& dir);
Split read_split(const Dataset& ds, const std::string& dir);
// make_text_encoder with its note printed to standard error unless quiet.
std::unique_ptr<TextEncoder> cli_encoder(const std::string& spec, bool quiet);

}  // namespace xdrec::cli
