#include "xdrec/common.h"

#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <thread>

namespace xdrec {

ParseError::ParseError(std::string file, size_t line, size_t column, std::string reason)
    : Error(file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + reason),
      file_(std::move(file)),
      line_(line),
      column_(column),
      reason_(std::move(reason)) {}

bool Csr::contains(uint32_t r, uint32_t c) const {
  auto idx = row_indices(r);
  return std::binary_search(idx.begin(), idx.end(), c);
}

Csr Csr::from_triplets(uint32_t n_rows, uint32_t n_cols, std::span<const uint32_t> rows,
                       std::span<const uint32_t> cols, std::span<const float> values) {
  check(rows.size() == cols.size() && rows.size() == values.size(), "Csr::from_triplets: size mismatch");
  Csr m;
  m.n_rows = n_rows;
  m.n_cols = n_cols;
  std::vector<uint64_t> count(n_rows + 1, 0);
  for (size_t k = 0; k < rows.size(); ++k) {
    check(rows[k] < n_rows && cols[k] < n_cols, "Csr::from_triplets: index out of range");
    ++count[rows[k] + 1];
  }
  for (uint32_t r = 0; r < n_rows; ++r) count[r + 1] += count[r];
  std::vector<uint32_t> idx(rows.size());
  std::vector<float> val(rows.size());
  std::vector<uint64_t> pos(count.begin(), count.end() - 1);
  for (size_t k = 0; k < rows.size(); ++k) {
    uint64_t p = pos[rows[k]]++;
    idx[p] = cols[k];
    val[p] = values[k];
  }
  // Sort each row by column and sum duplicates.
  m.indptr.assign(n_rows + 1, 0);
  m.indices.reserve(idx.size());
  m.values.reserve(idx.size());
  std::vector<std::pair<uint32_t, float>> buf;
  for (uint32_t r = 0; r < n_rows; ++r) {
    buf.clear();
    for (uint64_t p = count[r]; p < count[r + 1]; ++p) buf.emplace_back(idx[p], val[p]);
    std::stable_sort(buf.begin(), buf.end(), [](auto& a, auto& b) { return a.first < b.first; });
    for (size_t j = 0; j < buf.size(); ++j) {
      if (j > 0 && buf[j].first == buf[j - 1].first) {
        m.values.back() += buf[j].second;
      } else {
        m.indices.push_back(buf[j].first);
        m.values.push_back(buf[j].second);
      }
    }
    m.indptr[r + 1] = m.indices.size();
  }
  return m;
}

Csr Csr::transpose() const {
  Csr t;
  t.n_rows = n_cols;
  t.n_cols = n_rows;
  t.indptr.assign(size_t(n_cols) + 1, 0);
  for (uint32_t c : indices) ++t.indptr[c + 1];
  for (uint32_t c = 0; c < n_cols; ++c) t.indptr[c + 1] += t.indptr[c];
  t.indices.resize(nnz());
  t.values.resize(nnz());
  std::vector<uint64_t> pos(t.indptr.begin(), t.indptr.end() - 1);
  for (uint32_t r = 0; r < n_rows; ++r) {
    for (uint64_t p = indptr[r]; p < indptr[r + 1]; ++p) {
      uint64_t q = pos[indices[p]]++;
      t.indices[q] = r;  // rows visited in order, so each transposed row is sorted
      t.values[q] = values[p];
    }
  }
  return t;
}

Rng::Rng(uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ splitmix64(stream + 0x5851F42D4C957F2DULL);
  for (auto& s : s_) {
    x = splitmix64(x);
    s = x;
  }
}

float Rng::normal() {
  // Box-Muller; uses two uniforms per call (deterministic, no cached state).
  double u1 = uniform(), u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

int resolve_threads(int n) {
  if (n > 0) return n;
  unsigned h = std::thread::hardware_concurrency();
  return h == 0 ? 1 : static_cast<int>(h);
}

size_t available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  unsigned long long value = 0;
  while (f >> key >> value) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return size_t(value) * 1024;  // reported in kB
  }
  return 0;
}

void parallel_for(size_t n, int threads, size_t grain, const std::function<void(size_t, size_t)>& body) {
  threads = resolve_threads(threads);
  if (grain == 0) grain = 1;
  const size_t chunks = (n + grain - 1) / grain;
  if (threads <= 1 || chunks <= 1) {
    for (size_t b = 0; b < n; b += grain) body(b, std::min(n, b + grain));
    return;
  }
  std::exception_ptr err;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (size_t c = 0; c < chunks; ++c) {
    try {
      body(c * grain, std::min(n, (c + 1) * grain));
    } catch (...) {
#pragma omp critical(xdrec_parallel_for_error)
      if (!err) err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

Timer::Timer() { reset(); }
void Timer::reset() {
  start_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
}
double Timer::seconds() const {
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
  return (now - start_ns_) * 1e-9;
}

double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream is(line.substr(6));
      double kb = 0;
      is >> kb;
      return kb / 1024.0;
    }
  }
  return 0.0;
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer,
                       unsigned mode) {
  namespace fs = std::filesystem;
  fs::path p(path);
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::string base = ".";
  base += p.filename().string();
  base += ".tmpXXXXXX";
  std::string tmpl = (dir / base).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  int fd = mkstemp(buf.data());
  if (fd < 0) throw Error("cannot create a temporary file in '" + dir.string() + "' to write '" + path + "'");
  std::string tmp(buf.data());
  std::FILE* f = fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw Error("cannot open temporary file '" + tmp + "'");
  }
  try {
    writer(f);
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  bool ok = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error("write failed for '" + path + "' (disk full?)");
  }
  ::chmod(tmp.c_str(), static_cast<mode_t>(mode));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot rename temporary file onto '" + path + "'");
  }
}

void write_file_atomic(const std::string& path, std::string_view content, unsigned mode) {
  write_file_atomic(
      path,
      [&](std::FILE* f) {
        if (!content.empty() && std::fwrite(content.data(), 1, content.size(), f) != content.size())
          throw Error("write failed for '" + path + "'");
      },
      mode);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace xdrec
