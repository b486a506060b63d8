// Distributed training: the few collective operations a model needs across processes, behind one small
// interface, so that the models library never links MPI. `mpi_communicator()` (src/dist, built when CMake
// finds MPI) is the MPI implementation; a model given `FitContext::comm` divides its work by rank and joins
// the parts with these collectives. Every process runs the same program on the same data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace xdrec {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Element-wise sum of `n` floats over every rank, in place; every rank gets the same result. The order of
  // the additions is the implementation's: a caller that needs a bitwise fixed result sums exact values
  // (e.g. one non-zero contribution per element, zeros elsewhere).
  virtual void allreduce_sum(float* data, size_t n) = 0;
  // `data` holds the rows of every rank one after the other (rank r's `rows_per_rank[r]` rows of
  // `row_floats` floats each); on return every rank has every rank's rows, in place.
  virtual void allgather_rows(float* data, size_t row_floats, std::span<const size_t> rows_per_rank) = 0;
  // As allgather_rows for raw bytes (records of any trivially copyable type): `data` holds rank r's
  // `bytes_per_rank[r]` bytes after those of the ranks before it; on return every rank has them all.
  virtual void allgather_bytes(void* data, std::span<const size_t> bytes_per_rank) = 0;
  virtual void barrier() = 0;
};

// Every rank's string, in rank order, on every rank (two allgather_bytes: the lengths, then the bytes).
inline std::vector<std::string> allgather_strings(Communicator& comm, const std::string& mine) {
  const size_t p = size_t(comm.size()), r = size_t(comm.rank());
  std::vector<uint64_t> lengths(p, 0);
  lengths[r] = mine.size();
  const std::vector<size_t> eight(p, sizeof(uint64_t));
  comm.allgather_bytes(lengths.data(), eight);
  std::vector<size_t> sizes(p);
  size_t total = 0, offset = 0;
  for (size_t k = 0; k < p; ++k) {
    sizes[k] = size_t(lengths[k]);
    if (k < r) offset += sizes[k];
    total += sizes[k];
  }
  std::string all(total, '\0');
  if (!mine.empty()) std::memcpy(all.data() + offset, mine.data(), mine.size());
  comm.allgather_bytes(all.data(), sizes);
  std::vector<std::string> out(p);
  for (size_t k = 0, at = 0; k < p; at += sizes[k], ++k) out[k] = all.substr(at, sizes[k]);
  return out;
}

// The contiguous block [lo, hi) of `n` rows that rank `rank` of `size` owns: sizes differ by at most one,
// lower ranks first.
inline std::pair<size_t, size_t> block_range(size_t n, int rank, int size) {
  return {n * size_t(rank) / size_t(size), n * size_t(rank + 1) / size_t(size)};
}

// Whether this build has MPI (CMake found it).
bool mpi_available();

// Initialises MPI for the life of the object (MPI_Init_thread, funneled) and finalises it on destruction;
// Error when the build has no MPI. One per process.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  // The communicator of every process of the job (MPI_COMM_WORLD).
  Communicator& world();
  // Ends every process of the job with `code` (after an error on one rank while the others may be waiting in
  // a collective). Does not return.
  [[noreturn]] void abort(int code);

 private:
  std::unique_ptr<Communicator> world_;
};

}  // namespace xdrec
