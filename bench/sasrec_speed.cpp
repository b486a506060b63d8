// Training speed of the sequence model on Amazon Food-Kitchen: seconds per epoch and target positions
// (tokens) per second of `sasrec` fitted on the training sequences, for the work bench/sasrec_torch.py does
// in PyTorch (same architecture, batch, negatives and optimiser). A thin timing of the library's fit.
//
// Usage: bench_sasrec_speed OUT.json DATA_DIR [--epochs E] [--threads N] [--spec SPEC]
// JSON: {"spec", "threads", "epochs", "seconds", "seconds_per_epoch", "tokens_per_epoch",
// "tokens_per_second",
//        "machine"}
#include <cstdio>
#include <cstdlib>
#include <string>

#include "xdrec/pipeline.h"
#include "xdrec/readers.h"
#include "xdrec/split.h"

using namespace xdrec;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OUT.json DATA_DIR [--epochs E] [--threads N] [--spec SPEC]\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1], dir = argv[2];
  int epochs = 2, threads = 2;
  // The work bench/sasrec_torch.py does: the last max_len + 1 items of each history, 1,000 negatives per
  // domain, exactly `epochs` epochs.
  std::string spec = "sasrec:negatives=1000,windows=false,min_steps=0";
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--epochs")
      epochs = std::atoi(argv[i + 1]);
    else if (a == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (a == "--spec")
      spec = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    const Dataset ds = read_dataset(dir, "food-kitchen", ReadOptions{});
    const Split sp = make_split(ds, "fixed", SplitOptions{});
    // The sequences bench/sasrec_torch.py trains on: every training interaction (validation and test users'
    // histories without their targets).
    const Sequences seq = user_sequences(ds.n_users(), sp.train);
    const Csr train = ds.user_item_matrix(sp.train);
    auto m = create_model(spec);
    const auto sv = Spec::parse(m->spec()).values;
    const size_t max_len = size_t(std::stoul(sv.at("max_len")));
    uint64_t tokens = 0;
    for (uint32_t u = 0; u < seq.n_users(); ++u) {
      const size_t n = std::min(seq.of(u).size(), max_len + 1);
      if (n >= 2) tokens += n - 1;
    }
    FitRequest req;
    req.spec = spec + (spec.find(':') == std::string::npos ? ":" : ",") + "epochs=" + std::to_string(epochs);
    req.threads = threads;
    req.sequences = &seq;
    const Fitted f = fit_model(ds, train, req);
    const double per_epoch = f.seconds / epochs;
    nlohmann::json j = {{"spec", f.model->spec()},
                        {"threads", threads},
                        {"epochs", epochs},
                        {"seconds", f.seconds},
                        {"seconds_per_epoch", per_epoch},
                        {"tokens_per_epoch", tokens},
                        {"tokens_per_second", double(tokens) / per_epoch},
                        {"machine", machine_description()}};
    write_file_atomic(out, j.dump(1));
    std::printf("sasrec: %.2f s per epoch, %.0f tokens/s (%d threads)\n", per_epoch,
                double(tokens) / per_epoch, threads);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sasrec_speed: %s\n", e.what());
    return 1;
  }
  return 0;
}
