// bench/scale's distributed SGD sections ("mpi_bpr", "mpi_hybrid"): `xdrec train --distributed --verbose`
// under mpirun on 1 and 2 ranks (one thread each) and on one rank with two threads, seconds per epoch (the
// slowest rank's wall time, averaged over epochs), the time in collectives, each run's tensor file against
// the one-rank file (bitwise), the communication volume per epoch, and a projection to 10 and 100 machines.
//
// Both models repeat part of each batch's work on every rank and divide the rest; the verbose lines give
// each part's time:
//   bpr:batch=B   divided: scoring the triples (sampling, two dot products); repeated: the gradient sums and
//                 steps. Per epoch each rank receives nnz (P-1)/P triples of 16 bytes in ceil(nnz/B)
//                 Allgathervs; the volume does not depend on users, items or factors.
//   hybrid        divided: sampling the terms, the dense products of the projections' gradients; repeated:
//                 cache refreshes, per-term scores and id-row gradients, Adagrad steps. Per epoch each rank
//                 receives nnz (P-1)/P terms of 25 bytes (two Allgathervs per batch) and, per batch, a ring
//                 Allreduce of the projection gradients moves 2 (P-1)/P of (ld + lf [history] + lf [profile])
//                 x dt floats.
// Projection: the one-rank divided time / P + the one-rank repeated time + the bytes above at 10 Gbit/s with
// 20 us per message round (ring algorithms: P-1 rounds per Allgatherv, 2 (P-1) per Allreduce).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "xdrec/common.h"

namespace xdrec::bench {

// Per-epoch times from the verbose lines of every rank: the mean over epochs of the slowest rank's wall time,
// divided part, repeated part, compute CPU time (outside the collectives) and time in collectives.
struct EpochTimes {
  double wall = 0, divided = 0, repeated = 0, compute_cpu = 0, communication = 0;
  int epochs = 0;
};

inline EpochTimes sgd_epoch_times(const std::string& out, const std::string& model) {
  static const std::regex bpr(
      R"(bpr epoch (\d+): [0-9.]+ of sampled triples ranked correctly, ([0-9.]+) s \(scoring ([0-9.]+), steps ([0-9.]+); rank \d+ of \d+: compute ([0-9.]+) s cpu, communication ([0-9.]+) s\))");
  static const std::regex hybrid(
      R"(hybrid epoch (\d+): \d+ terms, mean loss [^,]+, ([0-9.]+) s \(refresh ([0-9.]+), sampling ([0-9.]+), gradient ([0-9.]+) of which dense ([0-9.]+), steps ([0-9.]+); rank \d+ of \d+: compute ([0-9.]+) s cpu, communication ([0-9.]+) s\))");
  std::map<int, std::array<double, 5>> per;  // epoch -> max over ranks
  const bool is_bpr = model == "bpr";
  const std::regex& re = is_bpr ? bpr : hybrid;
  for (auto i = std::sregex_iterator(out.begin(), out.end(), re); i != std::sregex_iterator(); ++i) {
    const std::smatch& m = *i;
    const double wall = std::stod(m[2]);
    // Divided: bpr's scoring; hybrid's sampling and dense products (the collectives are outside both).
    const double divided = is_bpr ? std::stod(m[3]) : std::stod(m[4]) + std::stod(m[6]);
    const double cpu = std::stod(m[is_bpr ? 5 : 8]), comm = std::stod(m[is_bpr ? 6 : 9]);
    auto& a = per[std::stoi(m[1])];
    const std::array<double, 5> v{wall, divided, wall - divided - comm, cpu, comm};
    for (size_t k = 0; k < v.size(); ++k) a[k] = std::max(a[k], v[k]);
  }
  check(!per.empty(), "no per-epoch lines of " + model + " in the output of xdrec train --verbose:\n" + out);
  EpochTimes t;
  for (const auto& [e, a] : per)
    t.wall += a[0], t.divided += a[1], t.repeated += a[2], t.compute_cpu += a[3], t.communication += a[4];
  t.epochs = int(per.size());
  for (double* x : {&t.wall, &t.divided, &t.repeated, &t.compute_cpu, &t.communication}) *x /= t.epochs;
  return t;
}

// Bytes each rank receives per epoch and message rounds, with P ranks (see the top of the file).
struct SgdComm {
  double bytes = 0, rounds = 0;
};
inline SgdComm bpr_comm(double nnz, double batch, double P) {
  return {nnz * 16 * (P - 1) / P, std::ceil(nnz / batch) * (P - 1)};
}
// dense_floats: the projection gradients of one batch (W, H, P: `buffers` Allreduces of them).
inline SgdComm hybrid_comm(double nnz, double batch, double dense_floats, double buffers, double P) {
  const double batches = std::ceil(nnz / batch);
  return {nnz * 25 * (P - 1) / P + batches * dense_floats * 4 * 2 * (P - 1) / P,
          batches * (2 * (P - 1) + buffers * 2 * (P - 1))};
}

// Runs the three configurations and the projection. `run` runs a shell command (status out); `mpirun` is the
// command prefix up to "-np"; `model` is "bpr" or "hybrid"; `comm_of(P)` gives the volume of one epoch.
inline nlohmann::json mpi_sgd_part(const std::function<std::string(const std::string&, int&)>& run,
                                   const std::string& mpirun, const std::string& xdrec,
                                   const std::string& data, const std::string& spec, const std::string& extra,
                                   const std::string& model, const std::function<SgdComm(double)>& comm_of,
                                   const std::filesystem::path& tmp) {
  nlohmann::json res;
  res["data"] = data;
  res["model"] = spec;
  std::string reference;
  EpochTimes one;
  struct Run {
    std::string key;
    int ranks, threads;
  };
  for (const Run& r : {Run{"1", 1, 1}, Run{"2", 2, 1}, Run{"1x2threads", 1, 2}}) {
    const std::filesystem::path o = tmp / ("mpi_" + model + "_" + r.key);
    const std::string cmd = mpirun + "-np " + std::to_string(r.ranks) + " " + xdrec + " train " + data +
                            " -m " + spec + extra + " -o " + o.string() +
                            " --distributed --verbose --quiet --threads " + std::to_string(r.threads);
    int st = 0;
    const std::string out = run(cmd, st);
    check(st == 0, "mpirun failed (" + std::to_string(st) + "): " + cmd + "\n" + out);
    const EpochTimes t = sgd_epoch_times(out, model);
    const std::string bytes = read_file((o / "model.safetensors").string());
    if (reference.empty()) reference = bytes, one = t;
    res["ranks"][r.key] = {{"ranks", r.ranks},
                           {"threads_per_rank", r.threads},
                           {"epochs", t.epochs},
                           {"seconds_per_epoch", t.wall},
                           {"divided_seconds_per_epoch", t.divided},
                           {"repeated_seconds_per_epoch", t.repeated},
                           {"compute_cpu_seconds_per_epoch", t.compute_cpu},
                           {"communication_seconds_per_epoch", t.communication},
                           {"bitwise_equal_to_1", bytes == reference}};
    std::fprintf(stderr,
                 "  %s %s: %.3f s per epoch (divided %.3f, repeated %.3f, compute %.3f s cpu, communication "
                 "%.3f s)%s\n",
                 model.c_str(), r.key.c_str(), t.wall, t.divided, t.repeated, t.compute_cpu, t.communication,
                 bytes == reference ? ", bitwise equal" : ", DIFFERS");
  }
  res["ranks"]["2"]["speedup"] = one.wall / res["ranks"]["2"]["seconds_per_epoch"].get<double>();
  const double bandwidth = 10e9 / 8, latency = 20e-6;
  nlohmann::json proj;
  proj["assumptions"] = {{"bandwidth_gbit_s", 10},
                         {"latency_us_per_round", 20},
                         {"model", "one-rank divided time / P + one-rank repeated time + communication"}};
  for (double P : {2.0, 10.0, 100.0}) {
    const SgdComm c = comm_of(P);
    const double comm = c.bytes / bandwidth + c.rounds * latency, compute = one.divided / P + one.repeated;
    proj[std::to_string(int(P))] = {
        {"compute_seconds", compute},          {"communication_seconds", comm},
        {"seconds_per_epoch", compute + comm}, {"speedup", one.wall / (compute + comm)},
        {"received_bytes_per_rank", c.bytes},  {"rounds", c.rounds}};
  }
  res["projection"] = proj;
  return res;
}

}  // namespace xdrec::bench
