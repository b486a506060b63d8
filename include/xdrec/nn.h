// A small neural-network toolkit for the models: dense row-major matrices, linear layers, activations,
// dropout, losses, embedding tables with sparse gradients, Adam, and a multi-layer perceptron built from
// them. Everything is templated on the scalar type and instantiated for float (training) and double (gradient
// checks in the tests). Batches are rows. Nothing here starts threads: callers split a batch into fixed
// chunks, run them on their own threads and add the chunks' gradients in a fixed order, so the result does
// not depend on the thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "xdrec/common.h"
#include "xdrec/tensor_io.h"

namespace xdrec::nn {

// Row-major dense matrix (the same layout as xdrec::Matrix, any scalar type).
template <class T>
struct Mat {
  size_t rows = 0, cols = 0;
  std::vector<T> data;

  Mat() = default;
  Mat(size_t r, size_t c, T fill = T(0)) : rows(r), cols(c), data(r * c, fill) {}
  void resize(size_t r, size_t c, T fill = T(0)) {
    rows = r;
    cols = c;
    data.assign(r * c, fill);
  }
  // Reshapes without clearing when the size is unchanged (every entry is about to be overwritten).
  void reshape(size_t r, size_t c) {
    rows = r;
    cols = c;
    data.resize(r * c);
  }
  void zero() { std::fill(data.begin(), data.end(), T(0)); }
  size_t size() const { return data.size(); }
  T* row(size_t i) { return data.data() + i * cols; }
  const T* row(size_t i) const { return data.data() + i * cols; }
  T& operator()(size_t i, size_t j) { return data[i * cols + j]; }
  T operator()(size_t i, size_t j) const { return data[i * cols + j]; }
};

using MatF = Mat<float>;
using MatD = Mat<double>;

template <class T>
Mat<T> from_matrix(const Matrix& m);
template <class T>
Matrix to_matrix(const Mat<T>& m);

// c = alpha * op(a) * op(b) + beta * c, op = transpose when the flag is set. c is resized when beta == 0.
template <class T>
void gemm(const Mat<T>& a, bool trans_a, const Mat<T>& b, bool trans_b, T alpha, T beta, Mat<T>& c);
// y += x (same shape).
template <class T>
void add_into(Mat<T>& y, const Mat<T>& x);

// ---- Activations ----------------------------------------------------------------------------------------

enum class Act { identity, relu, tanh, sigmoid };
Act parse_act(const std::string& name);  // "identity", "relu", "tanh", "sigmoid"; Error otherwise
std::string act_name(Act a);
// x <- f(x), elementwise.
template <class T>
void act_forward(Act a, T* x, size_t n);
// dy <- dy * f'(z), where y = f(z) is the forward output (every derivative here is a function of y).
template <class T>
void act_backward(Act a, const T* y, T* dy, size_t n);
template <class T>
inline void act_forward(Act a, Mat<T>& x) {
  act_forward(a, x.data.data(), x.size());
}
template <class T>
inline void act_backward(Act a, const Mat<T>& y, Mat<T>& dy) {
  act_backward(a, y.data.data(), dy.data.data(), dy.size());
}

// ---- Dropout --------------------------------------------------------------------------------------------

// Inverted dropout: each entry is kept with probability 1 - rate and scaled by 1 / (1 - rate), so nothing
// changes at inference (where no mask is applied). The mask is drawn from `rng` (seeded by the caller).
template <class T>
struct Dropout {
  double rate = 0.0;
  Mat<T> mask;  // 0 or 1 / (1 - rate), the shape of the last input
  // x <- x * mask with a fresh mask.
  void forward(Mat<T>& x, Rng& rng);
  // dy <- dy * mask.
  void backward(Mat<T>& dy) const;
};

// ---- Losses ---------------------------------------------------------------------------------------------

// Mean over all entries of the binary cross-entropy between sigmoid(logits) and targets in [0, 1], computed
// stably from the logits. grad (may be null) receives d loss / d logits. Optional per-entry weights w give
// sum(w * bce) / sum-of-count (entries with weight 0 do not contribute).
template <class T>
T bce_with_logits(const Mat<T>& logits, const Mat<T>& targets, std::type_identity_t<Mat<T>>* grad,
                  const std::type_identity_t<Mat<T>>* weights = nullptr);
// Squared error summed over columns and averaged over rows: 1/N sum_n ||pred_n - target_n||^2.
template <class T>
T squared_error(const Mat<T>& pred, const Mat<T>& target, std::type_identity_t<Mat<T>>* grad);

// ---- Linear layer ---------------------------------------------------------------------------------------

// y = x W + b for a batch x (rows x in); W is in x out, b is 1 x out.
template <class T>
struct Linear {
  Mat<T> w, b;

  Linear() = default;
  Linear(size_t in, size_t out) : w(in, out), b(1, out) {}
  size_t in_dim() const { return w.rows; }
  size_t out_dim() const { return w.cols; }
  // Uniform in +-sqrt(6 / fan_in) * gain / sqrt(2) (He for gain sqrt(2), LeCun-like for gain 1); b = 0.
  void init(Rng& rng, double gain);
  void forward(const Mat<T>& x, Mat<T>& y) const;
  // One row, with a fixed summation order that does not depend on the batch: y = x W + b.
  void forward_row(const T* x, T* y) const;
  // Given x and dy = dL/dy: gw += x^T dy, gb += column sums of dy, and dx = dy W^T when dx is not null
  // (only its first dx_cols columns when dx_cols is smaller than the input width: dx is rows x dx_cols).
  void backward(const Mat<T>& x, const Mat<T>& dy, Mat<T>& gw, Mat<T>& gb, Mat<T>* dx,
                size_t dx_cols = SIZE_MAX) const;
};

// ---- Embedding table ------------------------------------------------------------------------------------

// Gradient of a table restricted to the rows a batch touched: rows sorted, without repeats.
template <class T>
struct SparseGrad {
  std::vector<uint32_t> rows;
  Mat<T> values;  // rows.size() x dim
  // Builds from per-sample ids and the gradient of each sample's gathered row (ids.size() x dim); repeated
  // ids are summed in the order they appear.
  static SparseGrad from(std::span<const uint32_t> ids, const Mat<T>& dy);
  // Adds another sparse gradient of the same width.
  void add(const SparseGrad& other);
};

template <class T>
struct Embedding {
  Mat<T> table;  // n x dim

  void init(size_t n, size_t dim, Rng& rng, double stddev);
  size_t size() const { return table.rows; }
  size_t dim() const { return table.cols; }
  // out(k, :) = table(ids[k], :). Throws Error for an id out of range.
  void forward(std::span<const uint32_t> ids, Mat<T>& out) const;
  SparseGrad<T> backward(std::span<const uint32_t> ids, const Mat<T>& dy) const {
    return SparseGrad<T>::from(ids, dy);
  }
};

// ---- Adam -----------------------------------------------------------------------------------------------

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;  // decoupled (AdamW): p -= lr * weight_decay * p on every update of p
};

// Adam over a fixed list of parameter matrices (not owned; they must outlive the optimiser and keep their
// shape). Dense steps update every parameter; sparse steps update only the rows given (moments of other rows
// are left as they are, bias correction uses that parameter's own step count).
template <class T>
class Adam {
 public:
  Adam() = default;
  Adam(std::vector<Mat<T>*> params, const AdamOptions& opt);
  const AdamOptions& options() const { return opt_; }
  void set_lr(double lr) { opt_.lr = lr; }
  size_t n_params() const { return params_.size(); }
  // grads[k] has the shape of params[k].
  void step(const std::vector<Mat<T>>& grads);
  // Updates the rows of params[k] named by g.
  void step_sparse(size_t k, const SparseGrad<T>& g);
  int64_t steps(size_t k) const { return t_[k]; }

 private:
  void update(size_t k, size_t offset, const T* g, size_t n, double c1, double c2);
  AdamOptions opt_;
  std::vector<Mat<T>*> params_;
  std::vector<std::vector<T>> m_, v_;
  std::vector<int64_t> t_;
};

// ---- Multi-layer perceptron -----------------------------------------------------------------------------

// Linear layers sizes[0] -> sizes[1] -> ... -> sizes.back(), each followed by `hidden` except the last, which
// is followed by `output`. With dropout > 0, training forward passes drop entries of every hidden layer's
// output (never the input or the output).
template <class T>
class Mlp {
 public:
  // Everything a backward pass needs from the forward pass.
  struct Cache {
    std::vector<Mat<T>> out;       // out[l]: output of layer l after its activation (and dropout)
    std::vector<Mat<T>> act;       // act[l]: the activation before dropout (only where dropout was applied)
    std::vector<Dropout<T>> drop;  // per hidden layer, used when dropout > 0 in training
    const Mat<T>& output() const { return out.back(); }
  };

  Mlp() = default;
  Mlp(std::vector<size_t> sizes, Act hidden, Act output, double dropout = 0.0);
  void init(Rng& rng);
  bool empty() const { return layers_.empty(); }
  size_t in_dim() const { return layers_.empty() ? 0 : layers_.front().in_dim(); }
  size_t out_dim() const { return layers_.empty() ? 0 : layers_.back().out_dim(); }
  size_t n_layers() const { return layers_.size(); }
  Linear<T>& layer(size_t l) { return layers_[l]; }
  const Linear<T>& layer(size_t l) const { return layers_[l]; }
  Act hidden_act() const { return hidden_; }
  Act output_act() const { return output_; }
  double dropout() const { return dropout_; }

  // Training forward pass (dropout masks drawn from rng when rng is not null and dropout > 0).
  void forward(const Mat<T>& x, Cache& cache, Rng* rng = nullptr) const;
  // Inference on a batch (no dropout): one row at a time in a fixed order, so a row's output does not depend
  // on the batch it is in.
  void predict(const Mat<T>& x, Mat<T>& y) const;
  void predict_row(const T* x, T* y) const;
  // dy = dL/d(output). Accumulates into grads (from make_grads()); dx (may be null) receives dL/dx, or only
  // its first dx_cols columns (the inputs that need a gradient, e.g. an embedding before fixed features).
  void backward(const Mat<T>& x, const Cache& cache, const Mat<T>& dy, std::vector<Mat<T>>& grads, Mat<T>* dx,
                size_t dx_cols = SIZE_MAX) const;

  // Parameters in a fixed order (w0, b0, w1, b1, ...) and matching zeroed gradient buffers.
  std::vector<Mat<T>*> params();
  std::vector<Mat<T>> make_grads() const;
  size_t n_weights() const;

  // Tensors "<prefix>w<l>", "<prefix>b<l>" (float); load checks shapes against this Mlp's sizes when it has
  // layers, or takes them from the file when it is empty (then hidden/output activations must be set by the
  // caller through the constructor beforehand).
  void save(TensorMap& tensors, const std::string& prefix) const;
  void load(const TensorMap& tensors, const std::string& prefix);

 private:
  std::vector<Linear<T>> layers_;
  Act hidden_ = Act::relu, output_ = Act::identity;
  double dropout_ = 0.0;
};

// Sums per-chunk gradient buffers into the first one, in chunk order.
template <class T>
void sum_grads(std::vector<std::vector<Mat<T>>>& per_chunk);

// ---- Worker threads -------------------------------------------------------------------------------------

// A pool of threads for the many short parallel steps of minibatch training. Workers sleep on a condition
// variable between steps (an OpenMP team spins between steps, which takes the cores from the thread doing
// the sequential part when thousands of short steps follow each other). Tasks go to any thread in any order:
// callers make each task's result independent of that (fixed chunks, added in a fixed order afterwards).
class TaskPool {
 public:
  explicit TaskPool(int threads);  // threads - 1 workers; the calling thread is the last one
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;
  size_t threads() const { return workers_.size() + 1; }
  // Runs task(0) ... task(n - 1) on the workers and the calling thread and returns when all are done;
  // rethrows the first exception a task threw.
  void run(size_t n, const std::function<void(size_t)>& task);

 private:
  void drain();
  void work();
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  const std::function<void(size_t)>* task_ = nullptr;
  size_t n_ = 0, busy_ = 0;
  std::atomic<size_t> next_{0};
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace xdrec::nn
