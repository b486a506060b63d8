// USE-Lite encoding speed: sentences/s for 64-token inputs, float32 and int8 weights, 1 and 2 threads,
// batches of 1 and 32; with the machine's single-thread SGEMM rate at the moment (the encoder is mostly GEMMs
// of that shape, each on one thread) for context. Needs the installed model (scripts/fetch-models).
//
//   bench_use_lite_speed OUT.json [--seconds S]   (S: measuring time per configuration, default 2)
//
// Writes {"sgemm": {...}, "use-lite/<quant>/<threads>/<batch>": {...}} to OUT.json and a table to stdout.
#include <cblas.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "text/use_lite.h"
#include "xdrec/common.h"

using namespace xdrec;

int main(int argc, char** argv) {
  double seconds = 2.0;
  if (argc != 2 && !(argc == 4 && std::string(argv[2]) == "--seconds")) {
    std::fprintf(stderr, "usage: %s OUT.json [--seconds S]\n", argv[0]);
    return 2;
  }
  if (argc == 4) seconds = std::stod(argv[3]);
  const std::string out_path = argv[1];
  try {
    const UseLite base(Spec{"use-lite", {}});
    // Texts of 64 to 66 ids: random words until the tokenizer gives 64.
    std::mt19937 rng(7);
    const std::vector<std::string> words = {"fresh",  "organic", "coffee",   "beans",   "kitchen",
                                            "knife",  "steel",   "wireless", "battery", "book",
                                            "travel", "cotton",  "sheet",    "blue"};
    std::vector<std::string> texts(256);
    for (auto& s : texts)
      while (base.token_ids(s).size() < 64) s += (s.empty() ? "" : " ") + words[rng() % words.size()];
    nlohmann::json out;

    openblas_set_num_threads(1);
    for (int threads : {1, 2}) {
      const int M = 256, N = 1536, K = 512;
      std::vector<float> A(size_t(M) * K, 0.5f), B(size_t(K) * N, 0.25f);
      Timer t;
      size_t calls = 0;
      while (t.seconds() < seconds / 2) {
        parallel_for(size_t(threads), threads, 1, [&](size_t, size_t) {
          std::vector<float> C(size_t(M) * N);
          for (int r = 0; r < 20; ++r)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N,
                        0.0f, C.data(), N);
        });
        calls += 20 * size_t(threads);
      }
      const double gflops = 2.0 * M * N * K * calls / t.seconds() / 1e9;
      std::printf("sgemm %dx%dx%d, %d threads: %.1f GFLOPS\n", M, N, K, threads, gflops);
      out["sgemm"][std::to_string(threads)] = {{"m", M}, {"n", N}, {"k", K}, {"gflops", gflops}};
    }
    // Multiply-adds per token in the dense layers (all but the per-sentence tanh layer).
    const double flops_per_sentence = 2.0 * 64 * (base.dense_float_bytes() / 4.0 - 512.0 * 512.0);
    for (const char* mode : {"none", "int8"}) {
      const UseLite enc(Spec{"use-lite", {{"quant", mode}}});
      for (int threads : {1, 2}) {
        for (size_t batch : {1ul, 32ul}) {
          enc.encode(std::span<const std::string>(texts.data(), batch), threads);  // warm-up
          Timer t;
          size_t done = 0;
          while (t.seconds() < seconds) {
            for (size_t b = 0; b + batch <= texts.size(); b += batch)
              enc.encode(std::span<const std::string>(texts.data() + b, batch), threads);
            done += texts.size() / batch * batch;
          }
          const double rate = done / t.seconds();
          std::printf("use-lite quant=%s threads=%d batch=%zu: %.1f sentences/s (dense layers %.1f GFLOPS)\n",
                      mode, threads, batch, rate, rate * flops_per_sentence / 1e9);
          out["use-lite/" + std::string(mode) + "/" + std::to_string(threads) + "/" + std::to_string(batch)] =
              {{"sentences_per_second", rate}, {"dense_gflops", rate * flops_per_sentence / 1e9}};
        }
      }
    }
    std::ofstream f(out_path);
    f << out.dump(2) << "\n";
    if (!f) throw Error("cannot write " + out_path);
    std::printf("wrote %s\n", out_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_use_lite_speed: %s\n", e.what());
    return 1;
  }
  return 0;
}
