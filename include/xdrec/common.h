// Core types shared by every module: errors, dense matrices, sparse CSR matrices, seeded random numbers,
// thread-count handling and small utilities.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace xdrec {

// Every error the library raises for bad input, parameters or files. The message is complete: the CLI
// prints what() on one line and exits non-zero.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A malformed record: carries file, 1-based line and column and the reason.
class ParseError : public Error {
 public:
  ParseError(std::string file, size_t line, size_t column, std::string reason);
  const std::string& file() const { return file_; }
  size_t line() const { return line_; }
  size_t column() const { return column_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string file_;
  size_t line_, column_;
  std::string reason_;
};

// Throws Error(message) when cond is false. For user input and parameters (never use assert for those).
inline void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

// Row-major dense float matrix.
struct Matrix {
  size_t rows = 0, cols = 0;
  std::vector<float> data;

  Matrix() = default;
  Matrix(size_t r, size_t c, float fill = 0.0f) : rows(r), cols(c), data(r * c, fill) {}
  void resize(size_t r, size_t c, float fill = 0.0f) {
    rows = r;
    cols = c;
    data.assign(r * c, fill);
  }
  float* row(size_t i) { return data.data() + i * cols; }
  const float* row(size_t i) const { return data.data() + i * cols; }
  float& operator()(size_t i, size_t j) { return data[i * cols + j]; }
  float operator()(size_t i, size_t j) const { return data[i * cols + j]; }
};

// Compressed sparse row matrix with float values (weights, confidences or ratings).
struct Csr {
  uint32_t n_rows = 0, n_cols = 0;
  std::vector<uint64_t> indptr{0};  // size n_rows + 1
  std::vector<uint32_t> indices;    // column index per entry, sorted within each row
  std::vector<float> values;        // one per entry

  size_t nnz() const { return indices.size(); }
  size_t row_size(uint32_t r) const { return indptr[r + 1] - indptr[r]; }
  std::span<const uint32_t> row_indices(uint32_t r) const {
    return {indices.data() + indptr[r], indices.data() + indptr[r + 1]};
  }
  std::span<const float> row_values(uint32_t r) const {
    return {values.data() + indptr[r], values.data() + indptr[r + 1]};
  }
  bool contains(uint32_t r, uint32_t c) const;  // binary search in row r

  // Builds from (row, col, value) triplets; duplicates are summed; rows sorted by column.
  static Csr from_triplets(uint32_t n_rows, uint32_t n_cols, std::span<const uint32_t> rows,
                           std::span<const uint32_t> cols, std::span<const float> values);
  Csr transpose() const;
};

// splitmix64 as specified in the benchmarks (all arithmetic mod 2^64).
inline uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Small, fast, seedable generator (xoshiro256**), seeded through splitmix64. Independent streams are made
// with Rng(seed, stream) so results do not depend on how work is divided among threads.
class Rng {
 public:
  using result_type = uint64_t;
  explicit Rng(uint64_t seed = 42, uint64_t stream = 0);
  uint64_t operator()() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  static constexpr uint64_t min() { return 0; }
  static constexpr uint64_t max() { return ~uint64_t{0}; }
  // Uniform integer in [0, n) (Lemire's multiply-shift, negligible bias for n << 2^64).
  uint64_t below(uint64_t n) { return static_cast<uint64_t>((static_cast<__uint128_t>((*this)()) * n) >> 64); }
  double uniform() { return ((*this)() >> 11) * 0x1.0p-53; }  // [0, 1)
  float normal();                                            // standard normal

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Number of threads to use: n > 0 is taken as given; 0 means all hardware threads.
int resolve_threads(int n);

// Memory the system can still give without swapping (MemAvailable of /proc/meminfo), in bytes; 0 when it
// cannot be read.
size_t available_memory_bytes();

// Runs body(begin, end) over [0, n) split into contiguous chunks of at most `grain` elements on `threads`
// threads (dynamic scheduling). body must not depend on which thread runs a chunk.
void parallel_for(size_t n, int threads, size_t grain, const std::function<void(size_t, size_t)>& body);

// Progress callback: (done, total, label). Models and evaluation call it on long steps; may be empty.
using ProgressFn = std::function<void(size_t done, size_t total, const std::string& label)>;

// Wall-clock stopwatch.
class Timer {
 public:
  Timer();
  double seconds() const;
  void reset();

 private:
  int64_t start_ns_;
};

// Peak resident set size of this process in MiB (from /proc/self/status VmHWM).
double peak_rss_mb();

// Writes a file atomically: content goes to a temporary file in the same directory, which is then renamed
// over `path`. On any error the temporary file is removed and Error is thrown; `path` is never left partial.
// `mode` is the file's permission bits (0600 for a secret: the file is never readable by others, not even
// before the rename).
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer,
                       unsigned mode = 0644);
void write_file_atomic(const std::string& path, std::string_view content, unsigned mode = 0644);
std::string read_file(const std::string& path);

// 64-bit FNV-1a hash of bytes (fingerprints of data and model files).
uint64_t fnv1a64(const void* data, size_t n, uint64_t seed = 0xcbf29ce484222325ULL);
std::string hex64(uint64_t v);

}  // namespace xdrec
