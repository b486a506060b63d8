// Scale benchmark.
//  mpi: iALS fitted by `xdrec train --distributed --verbose` under mpirun on 1 and 2 ranks (one thread each;
//       and one rank with two threads for comparison) on a synthetic dataset large enough for the timing to
//       mean something. Per iteration: the slowest rank's wall time, its compute CPU time and its time in
//       collectives (averaged over iterations). Every run's tensor file is compared with the one-rank file
//       (bitwise). The projection to 10 and 100 machines: the one-rank time divided by P, plus the
//       communication of one iteration (ring Allgatherv of the factor rows, ring Allreduce of the per-block
//       Gram partial sums) at a stated bandwidth and latency.
//  mpi_bpr, mpi_hybrid: bpr:batch=4096 and hybrid (tf-idf text) the same way, per epoch
//       (bench/mpi_sgd.h).
//  compression: MovieLens 100k, random split (test 0.2, seed 42); each model is fitted once, saved as fp32,
//       fp16 and int8, loaded back and evaluated (full ranking): NDCG@10 and the tensor file's size; pruned
//       files and retrieval codes beside them (bench/compression.h).
//  incremental: iALS resumed on new data against a full retrain and the stale model, on time-ordered splits
//  of
//       MovieLens latest-small and Food-Kitchen (bench/incremental.h).
//
// Usage: bench_scale OUT.json [DATA_ROOT] [--xdrec PATH] [--mpirun PATH] [--quick]
// JSON: {"mpi": {"data", "model", "ranks": {"1": {"seconds_per_iteration",
// "compute_cpu_seconds_per_iteration",
//        "communication_seconds_per_iteration", "bitwise_equal_to_1"}, "2": {...}, "1x2threads": {...}},
//        "projection": {...}}, "mpi_bpr" | "mpi_hybrid": {"ranks": {"1": {"seconds_per_epoch", ...}, "2",
//        "1x2threads"}, "projection": {...}}, "compression": {"<model>": {"fp32": {"ndcg@10", "bytes"},
//        "fp16": {"ndcg@10", "ndcg@10_delta", "bytes", "ratio"}, "int8": {...}, "prune:F[+int8]": {...,
//        "sparsity"}, "exact_scan", "sq8" | "pq:...": {"recall@10_vs_exact", "queries_per_s", ...}}},
//        "incremental": {"<dataset>": {"full" | "stale" | "resume:sweeps=K": {"ndcg@10", "hr@10", "seconds"}}},
//        "_meta"}
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>

#include "args.h"
#include "compression.h"
#include "incremental.h"
#include "mpi_sgd.h"
#include "xdrec/metrics.h"
#include "xdrec/pipeline.h"
#include "xdrec/readers.h"
#include "xdrec/split.h"
#include "xdrec/synthetic.h"

using namespace xdrec;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string run_command(const std::string& cmd, int& status) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  check(f != nullptr, "cannot run: " + cmd);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  const int st = pclose(f);
  status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

// Per-iteration times from `xdrec train --verbose` (every rank prints its own line per iteration): the mean
// over iterations of the slowest rank's wall time, compute CPU time and communication time.
struct IterTimes {
  double wall = 0, compute_cpu = 0, communication = 0;
  int iterations = 0;
};
IterTimes iteration_times(const std::string& out) {
  static const std::regex dist(
      R"(ials iteration (\d+): ([0-9.]+) s \(rank \d+ of \d+: compute ([0-9.]+) s cpu, communication ([0-9.]+) s\))");
  static const std::regex single(R"(ials iteration (\d+): ([0-9.]+) s \(compute ([0-9.]+) s cpu\))");
  std::map<int, std::array<double, 3>> per;  // iteration -> max over ranks
  auto add = [&](int it, double w, double c, double m) {
    auto& a = per[it];
    a[0] = std::max(a[0], w), a[1] = std::max(a[1], c), a[2] = std::max(a[2], m);
  };
  for (auto i = std::sregex_iterator(out.begin(), out.end(), dist); i != std::sregex_iterator(); ++i)
    add(std::stoi((*i)[1]), std::stod((*i)[2]), std::stod((*i)[3]), std::stod((*i)[4]));
  for (auto i = std::sregex_iterator(out.begin(), out.end(), single); i != std::sregex_iterator(); ++i)
    add(std::stoi((*i)[1]), std::stod((*i)[2]), std::stod((*i)[3]), 0.0);
  check(!per.empty(), "no per-iteration lines in the output of xdrec train --verbose:\n" + out);
  IterTimes t;
  for (const auto& [it, a] : per) t.wall += a[0], t.compute_cpu += a[1], t.communication += a[2];
  t.iterations = int(per.size());
  t.wall /= t.iterations, t.compute_cpu /= t.iterations, t.communication /= t.iterations;
  return t;
}

// Flops of one iALS iteration (conjugate gradient), as the model's cost estimate counts them.
double ials_flops(double users, double items, double nnz, double f, double cg_steps) {
  const double rows = users + items;
  return rows * (cg_steps + 1) * f * f * 2 + nnz * (cg_steps + 1) * f * 4 + rows * f * f * 2;
}

struct Comm {
  double allgather_bytes, allreduce_bytes, steps;
};
// Bytes each rank sends (= receives) in one iteration, and the number of message rounds, with ring
// algorithms: Allgatherv of both factor matrices ((U + I) rows of ld floats; a rank receives the (P-1)/P it
// does not own), and two Allreduces of the partial Gram sums (ceil(rows / 4096) blocks of ld x ld floats per
// side; a ring Allreduce moves 2 (P-1)/P of the buffer).
Comm ials_comm(double users, double items, double ld, double P) {
  const double nb = std::ceil(users / 4096) + std::ceil(items / 4096);
  return {(users + items) * ld * 4 * (P - 1) / P, 2 * (P - 1) / P * nb * ld * ld * 4,
          2 * (P - 1) + 2 * 2 * (P - 1)};
}

// mpirun and its options, up to "-np". mpi_yield_when_idle: a rank waiting in a collective yields its core
// instead of polling (this machine is shared: a polling rank takes the core the other rank needs).
std::string mpirun_prefix(const std::string& mpirun) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 " +
         mpirun +
         " --oversubscribe --bind-to none --mca btl self,vader --mca btl_vader_single_copy_mechanism none "
         "--mca mpi_yield_when_idle 1 ";
}

json mpi_part(const std::string& xdrec, const std::string& mpirun, const std::string& data,
              const std::string& spec, int iterations, double users, double items, double nnz, double factors,
              const fs::path& tmp) {
  json res;
  res["data"] = data;
  res["model"] = spec;
  std::string reference;
  double t1 = 0;
  struct Run {
    std::string key;
    int ranks, threads;
  };
  for (const Run& r : {Run{"1", 1, 1}, Run{"2", 2, 1}, Run{"1x2threads", 1, 2}}) {
    const fs::path o = tmp / ("mpi_" + r.key);
    const std::string cmd = mpirun_prefix(mpirun) + "-np " + std::to_string(r.ranks) + " " + xdrec +
                            " train " + data + " -m " + spec + " -o " + o.string() +
                            " --distributed --verbose --quiet --threads " + std::to_string(r.threads);
    int st = 0;
    const std::string out = run_command(cmd, st);
    check(st == 0, "mpirun failed (" + std::to_string(st) + "): " + cmd + "\n" + out);
    const IterTimes t = iteration_times(out);
    check(t.iterations == iterations, "expected " + std::to_string(iterations) + " iterations:\n" + out);
    const std::string bytes = read_file((o / "model.safetensors").string());
    if (reference.empty()) reference = bytes, t1 = t.wall;
    res["ranks"][r.key] = {{"ranks", r.ranks},
                           {"threads_per_rank", r.threads},
                           {"seconds_per_iteration", t.wall},
                           {"compute_cpu_seconds_per_iteration", t.compute_cpu},
                           {"communication_seconds_per_iteration", t.communication},
                           {"bitwise_equal_to_1", bytes == reference}};
    std::fprintf(stderr, "  mpi %s: %.3f s per iteration (compute %.3f s cpu, communication %.3f s)%s\n",
                 r.key.c_str(), t.wall, t.compute_cpu, t.communication,
                 bytes == reference ? ", bitwise equal" : ", DIFFERS");
  }
  res["ranks"]["2"]["speedup"] = t1 / res["ranks"]["2"]["seconds_per_iteration"].get<double>();

  // Projection: measured one-rank compute divided by P plus communication at 10 Gbit/s and 20 us per round.
  const double bandwidth = 10e9 / 8, latency = 20e-6, ld = std::ceil(factors / 8) * 8;
  const double rate = ials_flops(users, items, nnz, ld, 3) / t1;  // effective flop/s of one rank
  auto project = [&](double U, double I, double nz, json& out) {
    const double compute1 = ials_flops(U, I, nz, ld, 3) / rate;
    out["one_rank_seconds_per_iteration"] = compute1;
    for (double P : {2.0, 10.0, 100.0}) {
      const Comm c = ials_comm(U, I, ld, P);
      const double comm = (c.allgather_bytes + c.allreduce_bytes) / bandwidth + c.steps * latency;
      out[std::to_string(int(P))] = {{"compute_seconds", compute1 / P},
                                     {"communication_seconds", comm},
                                     {"seconds_per_iteration", compute1 / P + comm},
                                     {"speedup", compute1 / (compute1 / P + comm)},
                                     {"allgather_bytes_per_rank", c.allgather_bytes},
                                     {"allreduce_bytes_per_rank", c.allreduce_bytes}};
    }
  };
  json proj;
  proj["assumptions"] = {{"bandwidth_gbit_s", 10},
                         {"latency_us_per_round", 20},
                         {"algorithms", "ring Allgatherv and ring Allreduce; compute divided evenly"},
                         {"effective_gflops_one_rank", rate / 1e9}};
  project(users, items, nnz, proj["bench_data"]);
  proj["bench_data"]["shape"] = {{"users", users}, {"items", items}, {"nnz", nnz}, {"factors", factors}};
  // A catalogue-scale job: 10M users, 1M items, 1B interactions, same factors.
  project(1e7, 1e6, 1e9, proj["10M_users_1M_items_1B_nnz"]);
  res["projection"] = proj;
  return res;
}

json compression_part(const std::string& root, const std::vector<std::string>& models, const fs::path& tmp) {
  json res;
  const Dataset ds = read_dataset(root + "/movielens_ml-100k");
  SplitOptions so;
  so.test_ratio = 0.2;
  so.seed = 42;
  const Split split = split_random(ds, so);
  const Csr train = ds.user_item_matrix(split.train), test = ds.user_item_matrix(split.test);
  const Sequences seq = user_sequences(ds.n_users(), split.train);  // for the sequence model
  EvalOptions eo;
  eo.ks = {10};
  eo.threads = 2;
  eo.seed = 42;
  for (const std::string& spec : models) {
    FitRequest req;
    req.spec = spec;
    req.seed = 42;
    req.threads = 2;
    req.sequences = &seq;
    const Fitted f = fit_model(ds, train, req);
    json m;
    double base = 0;
    for (const Store store : {Store::kFp32, Store::kFp16, Store::kInt8}) {
      const fs::path dir = tmp / ("compress_" + store_name(store));
      fs::remove_all(dir);
      save_model(*f.model, dir.string(), ds.fingerprint(), store);
      const auto loaded = load_model(dir.string());
      const double ndcg = evaluate(*loaded, train, test, &ds, eo).overall.at("ndcg@10");
      const double bytes = double(fs::file_size(dir / "model.safetensors"));
      json e = {{"ndcg@10", ndcg}, {"bytes", bytes}};
      if (store == Store::kFp32) {
        base = ndcg;
        m["fp32_bytes"] = bytes;
      } else {
        e["ndcg@10_delta"] = ndcg - base;
        e["ratio"] = m["fp32_bytes"].get<double>() / bytes;
      }
      m[store_name(store)] = e;
      std::fprintf(stderr, "  %s %s: ndcg@10 %.4f, %.0f bytes\n", spec.c_str(), store_name(store).c_str(),
                   ndcg, bytes);
    }
    m.erase("fp32_bytes");
    bench::add_prune_rows(m, *f.model, ds, train, test, eo, tmp);  // neural models (compression.h)
    bench::add_codes_rows(m, *f.model, train, test);               // dot-product models
    m["compressed_tensors"] = f.model->compressible_tensors();
    res[spec] = m;
  }
  return res;
}

// "mpi_bpr" and "mpi_hybrid" (bench/mpi_sgd.h) on synthetic data.
void mpi_sgd_all(const std::string& xdrec, const std::string& mpirun, bool quick, const fs::path& tmp,
                 json& res) {
  auto run = [](const std::string& cmd, int& st) { return run_command(cmd, st); };
  auto nnz_of = [](int users, int items) {
    SyntheticOptions so;
    so.n_users = uint32_t(users);
    so.items_per_domain = uint32_t(items);
    so.threads = 2;
    return double(make_synthetic(so).user_item_matrix().nnz());
  };
  {
    const int users = quick ? 30000 : 100000, items = quick ? 2000 : 3000, batch = 4096;
    const std::string data = "synthetic:users=" + std::to_string(users) + ",items=" + std::to_string(items);
    const std::string spec =
        "bpr:factors=64,epochs=" + std::string(quick ? "2" : "3") + ",batch=" + std::to_string(batch);
    const double nnz = nnz_of(users, items);
    std::fprintf(stderr, "mpi_bpr: %s (%.0f positive entries), %s\n", data.c_str(), nnz, spec.c_str());
    res["mpi_bpr"] = bench::mpi_sgd_part(
        run, mpirun_prefix(mpirun), xdrec, data, spec, "", "bpr",
        [&](double P) { return bench::bpr_comm(nnz, batch, P); }, tmp);
    res["mpi_bpr"]["nnz"] = nnz;
  }
  {
    const int users = quick ? 10000 : 30000, items = 2000, batch = 4096, factors = 32, dt = 64;
    const std::string data = "synthetic:users=" + std::to_string(users) + ",items=" + std::to_string(items);
    const std::string spec = "hybrid:factors=" + std::to_string(factors) +
                             ",epochs=" + std::string(quick ? "2" : "3") + ",batch=" + std::to_string(batch);
    const std::string text =
        " --encoder tfidf:dim=" + std::to_string(dt) + " --cache-dir " + (tmp / "text_cache").string();
    const double nnz = nnz_of(users, items);
    std::fprintf(stderr, "mpi_hybrid: %s (%.0f positive entries), %s, tfidf:dim=%d text\n", data.c_str(), nnz,
                 spec.c_str(), dt);
    // Fill the text cache once, so that the ranks read the vectors instead of fitting tf-idf together.
    int st = 0;
    const std::string out = run_command(
        xdrec + " embed " + data + text + " -o " + (tmp / "emb.safetensors").string() + " --quiet", st);
    check(st == 0, "xdrec embed failed:\n" + out);
    // Dense gradients per batch: W (ld x dt), H (lf x dt, history) and P (lf x dt, profiles) when present;
    // taken from the one-rank model's manifest.
    double dense = 0, buffers = 0;
    json part = bench::mpi_sgd_part(
        run, mpirun_prefix(mpirun), xdrec, data, spec, text, "hybrid",
        [&](double P) {
          if (buffers == 0) {
            const json m = json::parse(read_file((tmp / "mpi_hybrid_1" / "manifest.json").string()));
            const json& x = m.at("extra");
            const double d = x.at("text_dim").get<double>(), ld = std::ceil((factors + 1) / 8.0) * 8,
                         lf = std::ceil(factors / 8.0) * 8;
            dense = ld * d, buffers = d > 0;
            if (x.at("history").get<bool>()) dense += lf * d, ++buffers;
            if (x.at("profile").get<bool>()) dense += lf * d, ++buffers;
          }
          return bench::hybrid_comm(nnz, batch, dense, buffers, P);
        },
        tmp);
    part["nnz"] = nnz;
    part["dense_floats_per_batch"] = dense;
    res["mpi_hybrid"] = part;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage = "usage: bench_scale OUT.json [DATA_ROOT] [--xdrec PATH] [--mpirun PATH] [--quick]\n";
  std::string xdrec = "build/xdrec", mpirun = "mpirun";
  bench::BenchArgs b;
  if (!bench::parse_bench_args(argc, argv, usage, b, [&](const std::string& a, const auto& value) {
        const char* v = a == "--xdrec" || a == "--mpirun" ? value() : nullptr;
        if (v) (a == "--xdrec" ? xdrec : mpirun) = v;
        return v != nullptr;
      }))
    return 2;
  const std::string &out = b.out, &root = b.root;
  const bool quick = b.quick;
  try {
    Timer total;
    const fs::path tmp = fs::temp_directory_path() / ("xdrec_bench_scale_" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    json res;
    res["_meta"] = {{"machine", machine_description()}, {"quick", quick}};
    // MPI: a synthetic dataset of 3 domains x 2,000 items; the data is generated identically on every rank.
    const int users = quick ? 30000 : 200000, items = quick ? 2000 : 3000, iterations = quick ? 3 : 5,
              factors = 64;
    const std::string data = "synthetic:users=" + std::to_string(users) + ",items=" + std::to_string(items);
    const std::string spec =
        "ials:factors=" + std::to_string(factors) + ",iterations=" + std::to_string(iterations);
    {
      const Dataset d = [&] {
        SyntheticOptions so;
        so.n_users = uint32_t(users);
        so.items_per_domain = uint32_t(items);
        so.threads = 2;
        return make_synthetic(so);
      }();
      std::fprintf(stderr, "mpi: %s (%s), %s\n", data.c_str(), d.summary().c_str(), spec.c_str());
      res["mpi"] = mpi_part(xdrec, mpirun, data, spec, iterations, double(d.n_users()), double(d.n_items()),
                            double(d.interactions.size()), factors, tmp);
    }
    mpi_sgd_all(xdrec, mpirun, quick, tmp, res);
    std::fprintf(stderr, "compression: MovieLens 100k, random split 0.2, seed 42\n");
    std::vector<std::string> models = {"ials", "bpr", "ease:lambda=300", "hybrid:loss=bpr"};
    if (!quick) models.push_back("twotower");
    // Neural models, for the pruning rows (bench/compression.h).
    if (quick)
      models.insert(models.end(), {"twotower:epochs=10", "sasrec:epochs=10", "cfgan"});
    else
      models.insert(models.end(), {"sasrec", "cfgan"});
    res["compression"] = compression_part(root, models, tmp);
    std::fprintf(stderr, "incremental: iALS resumed against a full retrain (time-ordered splits)\n");
    res["incremental"] = bench::incremental_all(root, quick ? "ials:iterations=3" : "ials", quick ? 1 : 3, 2);
    res["_meta"]["seconds"] = total.seconds();
    fs::remove_all(tmp);
    write_file_atomic(out, res.dump(1) + "\n");
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_scale: %s\n", e.what());
    return 1;
  }
  return 0;
}
