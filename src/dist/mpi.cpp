// The MPI communicator of dist.h. Built in every configuration; without MPI (XDREC_HAVE_MPI unset) it only
// reports that the build has none.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/dist.h"

#ifdef XDREC_HAVE_MPI
#include <mpi.h>
#endif

namespace xdrec {

#ifdef XDREC_HAVE_MPI

namespace {

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(msg, size_t(len)));
}

// Collectives over MPI_COMM_WORLD. Counts beyond INT_MAX elements are split into pieces (allreduce) or
// carried by a datatype of one row (allgather).
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(float* data, size_t n) override {
    constexpr size_t kPiece = size_t(1) << 30;
    for (size_t off = 0; off < n; off += kPiece) {
      const int cnt = int(std::min(kPiece, n - off));
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                "Allreduce");
    }
  }

  void allgather_rows(float* data, size_t row_floats, std::span<const size_t> rows_per_rank) override {
    check(rows_per_rank.size() == size_t(size_), "allgather_rows: " + std::to_string(rows_per_rank.size()) +
                                                     " counts for " + std::to_string(size_) + " ranks");
    std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
    size_t total = 0;
    for (int r = 0; r < size_; ++r) {
      check(rows_per_rank[size_t(r)] <= size_t(INT_MAX) && total <= size_t(INT_MAX),
            "allgather_rows: more than 2^31 rows");
      counts[size_t(r)] = int(rows_per_rank[size_t(r)]);
      displs[size_t(r)] = int(total);
      total += rows_per_rank[size_t(r)];
    }
    if (total == 0 || row_floats == 0) return;
    check(row_floats <= size_t(INT_MAX), "allgather_rows: row too long");
    MPI_Datatype row;
    mpi_check(MPI_Type_contiguous(int(row_floats), MPI_FLOAT, &row), "Type_contiguous");
    mpi_check(MPI_Type_commit(&row), "Type_commit");
    const int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displs.data(), row,
                                  MPI_COMM_WORLD);
    MPI_Type_free(&row);
    mpi_check(rc, "Allgatherv");
  }

  void allgather_bytes(void* data, std::span<const size_t> bytes_per_rank) override {
    check(bytes_per_rank.size() == size_t(size_),
          "allgather_bytes: " + std::to_string(bytes_per_rank.size()) + " counts for " +
              std::to_string(size_) + " ranks");
    std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
    size_t total = 0;
    for (int r = 0; r < size_; ++r) {
      check(bytes_per_rank[size_t(r)] <= size_t(INT_MAX) && total <= size_t(INT_MAX),
            "allgather_bytes: more than 2^31 bytes");
      counts[size_t(r)] = int(bytes_per_rank[size_t(r)]);
      displs[size_t(r)] = int(total);
      total += bytes_per_rank[size_t(r)];
    }
    if (total == 0) return;
    mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displs.data(), MPI_BYTE,
                             MPI_COMM_WORLD),
              "Allgatherv");
  }

  void barrier() override { mpi_check(MPI_Barrier(MPI_COMM_WORLD), "Barrier"); }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool mpi_available() {
  return true;
}

MpiSession::MpiSession() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  check(!initialised, "MPI is already initialised in this process (one MpiSession per process)");
  int provided = 0;
  mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "Init_thread");
  // Errors come back as return codes (thrown as Error) instead of aborting the job without a message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  world_ = std::make_unique<MpiCommunicator>();
}

MpiSession::~MpiSession() {
  world_.reset();
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised) MPI_Finalize();
}

void MpiSession::abort(int code) {
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

#else

bool mpi_available() {
  return false;
}

MpiSession::MpiSession() {
  throw Error(
      "this xdrec was built without MPI: install libopenmpi-dev and openmpi-bin (scripts/setup) and rebuild");
}

MpiSession::~MpiSession() = default;

void MpiSession::abort(int code) {
  std::_Exit(code);
}

#endif

Communicator& MpiSession::world() {
  return *world_;
}

}  // namespace xdrec
