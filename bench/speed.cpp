// Training and evaluation speed of the matrix-factorisation models on a fixed synthetic matrix
// (100,000 users x 50,000 items, 10,000,000 unique entries, skewed users and Zipf-like items).
//
//   bench_speed OUT.json [--threads N] [--ials-iterations K] [--bpr-epochs E] [--eval-users U]
//
// Writes {"ials": {...}, "bpr": {...}, "eval": {...}, ...} to OUT.json and a table to stdout.
#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/metrics.h"
#include "xdrec/rank.h"
#include "xdrec/recommender.h"
#include "xdrec/tensor_io.h"

extern "C" void openblas_set_num_threads(int num_threads);

using namespace xdrec;

namespace {

constexpr uint32_t kUsers = 100000, kItems = 50000;
constexpr size_t kTarget = 10000000;
constexpr uint64_t kExpectedDraws = 10504570;
constexpr int kFactors = 64;

// Reference numbers of the implicit library on this kind of machine (stated, not measured here).
constexpr double kRefIalsSeconds = 3.43;         // iALS, conjugate gradient, 1 thread, per iteration
constexpr double kRefBprSamplesPerSec = 1.83e6;  // BPR, per thread

struct BenchMatrix {
  Csr m;
  uint64_t draws = 0;
};

// The matrix as specified: draw n uses splitmix64(2n + 42*2^40) and splitmix64(2n + 1 + 42*2^40); the first
// occurrence of each (user, item) pair is kept until 10,000,000 unique pairs exist; every value is 1.
BenchMatrix make_matrix() {
  const double s = 0.8;
  const double e = 1.0 - s;
  const double top = std::pow(double(kItems) + 1.0, e) - 1.0;
  const uint64_t base = uint64_t(42) << 40;
  // Open-addressing set of keys user * n_items + item + 1 (0 = empty).
  const size_t cap = size_t(1) << 25;
  std::vector<uint64_t> table(cap, 0);
  std::vector<uint32_t> rows, cols;
  rows.reserve(kTarget);
  cols.reserve(kTarget);
  uint64_t n = 0;
  while (rows.size() < kTarget) {
    const uint64_t a = splitmix64(2 * n + base), b = splitmix64(2 * n + 1 + base);
    ++n;
    const double ua = double(a >> 11) * 0x1.0p-53, ub = double(b >> 11) * 0x1.0p-53;
    const uint32_t user = uint32_t(std::floor(double(kUsers) * ua * std::sqrt(ua)));
    double it = std::floor(std::pow(1.0 + ub * top, 1.0 / e)) - 1.0;
    it = std::clamp(it, 0.0, double(kItems - 1));
    const uint32_t item = uint32_t(it);
    const uint64_t key = uint64_t(user) * kItems + item + 1;
    size_t h = splitmix64(key) & (cap - 1);
    bool fresh = true;
    while (table[h] != 0) {
      if (table[h] == key) {
        fresh = false;
        break;
      }
      h = (h + 1) & (cap - 1);
    }
    if (!fresh) continue;
    table[h] = key;
    rows.push_back(user);
    cols.push_back(item);
  }
  std::vector<float> vals(rows.size(), 1.0f);
  BenchMatrix out;
  out.m = Csr::from_triplets(kUsers, kItems, rows, cols, vals);
  out.draws = n;
  return out;
}

double cpu_clock_ghz() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return std::atof(line.c_str() + pos + 1) / 1000.0;
    }
  }
  return 0.0;
}

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double v = 0;
  f >> v;
  return v;
}

// Wall and process CPU time between consecutive progress callbacks (the models report 0 after their setup,
// then after each iteration or epoch).
struct StepTimer {
  std::vector<double> wall, cpu;
  Timer t;
  ProgressFn fn() {
    return [this](size_t, size_t, const std::string&) {
      wall.push_back(t.seconds());
      cpu.push_back(process_cpu_seconds());
    };
  }
  static std::vector<double> diffs(const std::vector<double>& m) {
    std::vector<double> d;
    for (size_t k = 1; k < m.size(); ++k) d.push_back(m[k] - m[k - 1]);
    return d;
  }
  std::vector<double> wall_steps() const { return diffs(wall); }
  std::vector<double> cpu_steps() const { return diffs(cpu); }
};

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double min_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "bench_speed: " << why << "\n"
            << "usage: bench_speed OUT.json [--threads N] [--ials-iterations K] [--bpr-epochs E] "
               "[--eval-users U]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path;
  int threads = 1, ials_iterations = 3, bpr_epochs = 3;
  size_t eval_users = 10000;
  std::string torch_script, python = "python3";
  for (int a = 1; a < argc; ++a) {
    std::string arg = argv[a];
    auto value = [&]() -> long {
      if (a + 1 >= argc) usage(arg + " needs a value");
      char* end = nullptr;
      long v = std::strtol(argv[++a], &end, 10);
      if (*end != '\0' || v <= 0) usage(arg + " needs a positive integer, got '" + argv[a] + "'");
      return v;
    };
    if (arg == "--threads") {
      threads = int(value());
    } else if (arg == "--ials-iterations") {
      ials_iterations = int(value());
    } else if (arg == "--bpr-epochs") {
      bpr_epochs = int(value());
    } else if (arg == "--eval-users") {
      eval_users = size_t(value());
    } else if (arg == "--torch" && a + 1 < argc) {
      torch_script = argv[++a];
    } else if (arg == "--python" && a + 1 < argc) {
      python = argv[++a];
    } else if (!arg.empty() && arg[0] == '-') {
      usage("unknown option '" + arg + "'");
    } else if (out_path.empty()) {
      out_path = arg;
    } else {
      usage("more than one output path");
    }
  }
  if (out_path.empty()) usage("missing OUT.json");

  try {
    Timer gen;
    BenchMatrix bm = make_matrix();
    const Csr& m = bm.m;
    if (bm.draws != kExpectedDraws || m.nnz() != kTarget) {
      std::fprintf(stderr, "bench_speed: matrix check failed: %llu draws (expected %llu), %zu entries\n",
                   (unsigned long long)bm.draws, (unsigned long long)kExpectedDraws, m.nnz());
      return 1;
    }
    std::printf("matrix: %u users x %u items, %zu entries from %llu draws (%.1f s to build)\n", m.n_rows,
                m.n_cols, m.nnz(), (unsigned long long)bm.draws, gen.seconds());

    const double ghz = cpu_clock_ghz();
    const double load_before = load_average();
    const double peak_gflops = 2.0 * 8 * 2 * ghz * threads;  // 2 FMA units x 8 floats x 2 flops per core

    // ---- iALS ----
    const int cg_steps = 3;
    auto ials = create_model("ials:factors=64,cg_steps=3,iterations=" + std::to_string(ials_iterations));
    StepTimer it_timer;
    FitContext ctx;
    ctx.threads = threads;
    ctx.progress = it_timer.fn();
    it_timer.t.reset();
    ials->fit(m, ctx);
    const std::vector<double> ials_steps = it_timer.wall_steps();
    const double ials_sec = median(ials_steps);
    const double ials_cpu = median(it_timer.cpu_steps());
    // Flops of one iteration: per side, (1 + cg_steps) passes, each with a Gram mat-vec (2 f^2 per row) and,
    // per entry, a dot product and an axpy (4 f); plus the Gram matrix of the fixed side (2 f^2 per row).
    const double f = kFactors;
    const double nnz = double(m.nnz());
    auto side = [&](double rows, double other_rows) {
      return (1.0 + cg_steps) * (2 * f * f * rows + 4 * f * nnz) + 2 * f * f * other_rows;
    };
    const double ials_flops = side(m.n_rows, m.n_cols) + side(m.n_cols, m.n_rows);
    const double ials_gflops = ials_flops / ials_sec * 1e-9;

    // ---- BPR ----
    auto bpr = create_model("bpr:factors=64,epochs=" + std::to_string(bpr_epochs));
    StepTimer ep_timer;
    ctx.progress = ep_timer.fn();
    ep_timer.t.reset();
    bpr->fit(m, ctx);
    const std::vector<double> bpr_steps = ep_timer.wall_steps();
    const double bpr_epoch_sec = median(bpr_steps);
    const double bpr_cpu = median(ep_timer.cpu_steps());
    const double bpr_samples = nnz / bpr_epoch_sec;

    // ---- Evaluation: full ranking (GEMM scores + top-10 excluding seen items) ----
    std::vector<uint32_t> users(std::min<size_t>(eval_users, m.n_rows));
    for (size_t k = 0; k < users.size(); ++k) users[k] = uint32_t(k * m.n_rows / users.size());
    RecommendOptions ropt;
    ropt.k = 10;
    ropt.exclude = &m;
    ropt.threads = threads;
    Timer et;
    auto lists = recommend(*ials, users, ropt);
    const double eval_sec = et.seconds();
    size_t listed = 0;
    for (auto& l : lists) listed += l.size();
    if (listed != users.size() * 10) throw Error("evaluation returned short lists");
    const double rec_ups = double(users.size()) / eval_sec;

    // The evaluator (metrics included): the same users, each with up to 5 held-out items outside their row.
    std::vector<uint32_t> tr, tc;
    for (uint32_t u : users)
      for (uint32_t j = 0, n = 0; j < 50 && n < 5; ++j) {
        const uint32_t i = uint32_t((uint64_t(u) * 7919 + uint64_t(j) * 104729) % m.n_cols);
        if (!m.contains(u, i)) tr.push_back(u), tc.push_back(i), ++n;
      }
    const std::vector<float> ones(tr.size(), 1.0f);
    const Csr test = Csr::from_triplets(m.n_rows, m.n_cols, tr, tc, ones);
    EvalOptions eo;
    eo.ks = {10};
    eo.threads = threads;
    eo.per_domain = false;
    const EvalResult ev = evaluate(*ials, m, test, nullptr, eo);
    const double eval_ups = double(ev.n_users) / ev.seconds;

    // Baseline of ours, the previous scoring path: OpenBLAS SGEMM per block of 256 users (row-major U x Y^T)
    // and the same top-10 selection.
    TensorMap tm;
    nlohmann::json extra;
    ials->save(tm, extra);
    const Matrix U = get_tensor(tm, "user_factors").to_matrix("user_factors");
    const Matrix Y = get_tensor(tm, "item_factors").to_matrix("item_factors");
    double blas_sec = 0;
    {
      openblas_set_num_threads(1);
      Timer bt;
      const size_t block = 256;
      parallel_for((users.size() + block - 1) / block, threads, 1, [&](size_t lo, size_t hi) {
        std::vector<float> a(block * kFactors), c(block * size_t(m.n_cols));
        TopK sel;
        std::vector<uint32_t> out;
        for (size_t b = lo; b < hi; ++b) {
          const size_t u0 = b * block, nb = std::min(block, users.size() - u0);
          for (size_t r = 0; r < nb; ++r)
            std::copy(U.row(users[u0 + r]), U.row(users[u0 + r]) + kFactors, &a[r * kFactors]);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nb), int(m.n_cols), kFactors, 1.0f,
                      a.data(), kFactors, Y.data.data(), kFactors, 0.0f, c.data(), int(m.n_cols));
          for (size_t r = 0; r < nb; ++r) {
            sel.reset(10);
            sel.push_row(c.data() + r * m.n_cols, m.n_cols, m.row_indices(users[u0 + r]));
            sel.finish(out);
          }
        }
      });
      blas_sec = bt.seconds();
    }
    const double blas_ups = double(users.size()) / blas_sec;

    // PyTorch on the CPU, same factors, same users, same threads (when a python3 with torch is found).
    nlohmann::json torch_ref = nullptr;
    if (!torch_script.empty()) {
      const std::string dir = "/tmp/xdrec-bench-speed-" + std::to_string(::getpid());
      std::filesystem::create_directories(dir);
      auto dump = [&](const std::string& name, const void* p, size_t bytes) {
        std::ofstream(dir + "/" + name, std::ios::binary)
            .write(static_cast<const char*>(p), std::streamsize(bytes));
      };
      std::vector<float> uf(users.size() * kFactors);
      std::vector<int64_t> indptr{0};
      std::vector<int32_t> idx;
      for (size_t r = 0; r < users.size(); ++r) {
        std::copy(U.row(users[r]), U.row(users[r]) + kFactors, &uf[r * kFactors]);
        for (uint32_t i : m.row_indices(users[r])) idx.push_back(int32_t(i));
        indptr.push_back(int64_t(idx.size()));
      }
      dump("users.f32", uf.data(), uf.size() * 4);
      dump("items.f32", Y.data.data(), Y.data.size() * 4);
      dump("seen_indptr.i64", indptr.data(), indptr.size() * 8);
      dump("seen_indices.i32", idx.data(), idx.size() * 4);
      std::ofstream(dir + "/meta.json")
          << nlohmann::json{{"users", users.size()}, {"items", m.n_cols}, {"factors", kFactors}}.dump();
      const std::string cmd = python + " " + torch_script + " " + dir + " " + std::to_string(threads);
      std::string line;
      if (FILE* pipe = popen(cmd.c_str(), "r")) {
        char buf[4096];
        while (std::fgets(buf, sizeof buf, pipe)) line += buf;
        pclose(pipe);
      }
      std::filesystem::remove_all(dir);
      try {
        torch_ref = nlohmann::json::parse(line);
      } catch (const std::exception&) {
        std::fprintf(stderr, "bench_speed: the PyTorch reference gave no result: %s\n", line.c_str());
      }
    }
    const double score_flops = 2.0 * kFactors * double(m.n_cols);  // per user
    const double eval_all_users_s = double(m.n_rows) / eval_ups;
    const double fit_15_s = 15 * ials_sec;

    nlohmann::json j = {
        {"threads", threads},
        {"factors", kFactors},
        {"matrix", {{"n_users", m.n_rows}, {"n_items", m.n_cols}, {"nnz", m.nnz()}, {"draws", bm.draws}}},
        {"cpu", {{"clock_ghz", ghz}, {"peak_gflops", peak_gflops}, {"load_average_at_start", load_before}}},
        {"timing",
         "median over the timed iterations/epochs of wall-clock time; *_min and cpu_* for comparison "
         "on a busy machine (cpu_* is process CPU time, summed over threads)"},
        {"ials",
         {{"seconds_per_iteration", ials_sec},
          {"seconds_per_iteration_min", min_of(ials_steps)},
          {"cpu_seconds_per_iteration", ials_cpu},
          {"iterations_timed", ials_steps.size()},
          {"cg_steps", cg_steps},
          {"gflop_per_iteration", ials_flops * 1e-9},
          {"gflops", ials_gflops},
          {"fraction_of_peak", ials_gflops / peak_gflops}}},
        {"bpr",
         {{"epochs_per_second", 1.0 / bpr_epoch_sec},
          {"epochs_timed", bpr_steps.size()},
          {"seconds_per_epoch_min", min_of(bpr_steps)},
          {"cpu_seconds_per_epoch", bpr_cpu},
          {"samples_per_second", bpr_samples},
          {"samples_per_second_per_thread", bpr_samples / threads}}},
        {"eval",
         {{"recommend_users_per_second", rec_ups},
          {"evaluate_users_per_second", eval_ups},
          {"users", users.size()},
          {"k", 10},
          {"scoring_gflops_at_evaluate_rate", eval_ups * score_flops * 1e-9},
          {"fraction_of_peak", eval_ups * score_flops * 1e-9 / peak_gflops},
          {"openblas_sgemm_plus_selection_users_per_second", blas_ups},
          {"pytorch_cpu", torch_ref},
          {"evaluate_all_users_seconds", eval_all_users_s},
          {"ials_15_iterations_seconds", fit_15_s}}},
        {"reference",
         {{"source", "implicit library, stated for this kind of machine"},
          {"ials_seconds_per_iteration_1_thread", kRefIalsSeconds},
          {"bpr_samples_per_second_per_thread", kRefBprSamplesPerSec}}}};
    write_file_atomic(out_path, j.dump(2) + "\n");

    std::printf(
        "\nthreads %d, clock %.2f GHz, peak %.1f GFLOP/s (AVX2: 2 FMA x 8 floats x 2 flops x clock x "
        "cores); load average %.2f at start\n",
        threads, ghz, peak_gflops, load_before);
    std::printf("wall times are medians over %zu iALS iterations and %zu BPR epochs\n", ials_steps.size(),
                bpr_steps.size());
    std::printf("%-34s %14s %16s\n", "measure", "xdrec", "implicit (stated)");
    std::printf("%-34s %14.3f %16.2f\n", "iALS s/iteration (f=64, 3 CG)", ials_sec, kRefIalsSeconds);
    std::printf("%-34s %14.3f %16s\n", "  fastest iteration (s)", min_of(ials_steps), "");
    std::printf("%-34s %14.3f %16s\n", "  CPU seconds per iteration", ials_cpu, "");
    std::printf("%-34s %14.2f %16s\n", "  GFLOP per iteration", ials_flops * 1e-9, "");
    std::printf("%-34s %14.2f %16s\n", "iALS GFLOP/s", ials_gflops, "");
    std::printf("%-34s %14.3f %16s\n", "iALS fraction of peak", ials_gflops / peak_gflops, "");
    std::printf("%-34s %14.3f %16s\n", "BPR epochs/s", 1.0 / bpr_epoch_sec, "");
    std::printf("%-34s %14.3f %16.2f\n", "BPR M samples/s per thread", bpr_samples / threads * 1e-6,
                kRefBprSamplesPerSec * 1e-6);
    std::printf("%-34s %14.3f %16s\n", "  per thread, by CPU time", nnz / bpr_cpu * 1e-6, "");
    std::printf("%-34s %14.0f %16s\n", "recommend users/s (top-10)", rec_ups, "");
    std::printf("%-34s %14.0f %16s\n", "evaluate users/s (full ranking)", eval_ups, "");
    std::printf("%-34s %14.3f %16s\n", "  scoring fraction of peak",
                eval_ups * score_flops * 1e-9 / peak_gflops, "");
    std::printf("%-34s %14.0f %16s\n", "  OpenBLAS SGEMM + top-10 users/s", blas_ups, "(same run)");
    if (!torch_ref.is_null())
      std::printf("%-34s %14.0f %16s\n", "  PyTorch CPU mm + topk users/s",
                  torch_ref["users_per_second"].get<double>(), "(same run)");
    std::printf("%-34s %14.1f %16s\n", "evaluate all users (s)", eval_all_users_s, "");
    std::printf("%-34s %14.1f %16s\n", "iALS 15 iterations (s)", fit_15_s, "");
    std::printf("wrote %s\n", out_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_speed: %s\n", e.what());
    return 1;
  }
  return 0;
}
