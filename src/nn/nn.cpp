// The nn toolkit (see include/xdrec/nn.h). Batched products go through Eigen on one thread; single-row
// inference uses plain loops with a fixed summation order.
#include "core/eigen.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "xdrec/nn.h"

namespace xdrec::nn {

namespace {

template <class T>
using EMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using EMap = Eigen::Map<EMat<T>>;
template <class T>
using ECMap = Eigen::Map<const EMat<T>>;

template <class T>
ECMap<T> cmap(const Mat<T>& m) {
  return ECMap<T>(m.data.data(), Eigen::Index(m.rows), Eigen::Index(m.cols));
}
template <class T>
EMap<T> map(Mat<T>& m) {
  return EMap<T>(m.data.data(), Eigen::Index(m.rows), Eigen::Index(m.cols));
}

std::string shape(size_t r, size_t c) {
  return std::to_string(r) + "x" + std::to_string(c);
}

}  // namespace

template <class T>
Mat<T> from_matrix(const Matrix& m) {
  Mat<T> out(m.rows, m.cols);
  for (size_t k = 0; k < m.data.size(); ++k) out.data[k] = T(m.data[k]);
  return out;
}

template <class T>
Matrix to_matrix(const Mat<T>& m) {
  Matrix out(m.rows, m.cols);
  for (size_t k = 0; k < m.data.size(); ++k) out.data[k] = float(m.data[k]);
  return out;
}

template <class T>
void gemm(const Mat<T>& a, bool trans_a, const Mat<T>& b, bool trans_b, T alpha, T beta, Mat<T>& c) {
  const size_t m = trans_a ? a.cols : a.rows, k = trans_a ? a.rows : a.cols;
  const size_t kb = trans_b ? b.cols : b.rows, n = trans_b ? b.rows : b.cols;
  check(k == kb, "nn gemm: inner dimensions differ (" + shape(a.rows, a.cols) + (trans_a ? "^T" : "") +
                     " * " + shape(b.rows, b.cols) + (trans_b ? "^T" : "") + ")");
  if (beta == T(0)) {
    c.reshape(m, n);
  } else {
    check(c.rows == m && c.cols == n,
          "nn gemm: output is " + shape(c.rows, c.cols) + ", expected " + shape(m, n));
  }
  auto C = map(c);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == T(0)) {
      C.setZero();
    } else {
      C *= beta;
    }
    return;
  }
  auto A = cmap(a);
  auto B = cmap(b);
  if (beta == T(0)) {
    if (!trans_a && !trans_b) C.noalias() = alpha * A * B;
    if (!trans_a && trans_b) C.noalias() = alpha * A * B.transpose();
    if (trans_a && !trans_b) C.noalias() = alpha * A.transpose() * B;
    if (trans_a && trans_b) C.noalias() = alpha * A.transpose() * B.transpose();
  } else {
    if (beta != T(1)) C *= beta;
    if (!trans_a && !trans_b) C.noalias() += alpha * A * B;
    if (!trans_a && trans_b) C.noalias() += alpha * A * B.transpose();
    if (trans_a && !trans_b) C.noalias() += alpha * A.transpose() * B;
    if (trans_a && trans_b) C.noalias() += alpha * A.transpose() * B.transpose();
  }
}

template <class T>
void add_into(Mat<T>& y, const Mat<T>& x) {
  check(y.rows == x.rows && y.cols == x.cols,
        "nn add_into: shapes differ (" + shape(y.rows, y.cols) + " and " + shape(x.rows, x.cols) + ")");
  T* __restrict py = y.data.data();
  const T* __restrict px = x.data.data();
  for (size_t k = 0, n = y.size(); k < n; ++k) py[k] += px[k];
}

// ---- Activations ----------------------------------------------------------------------------------------

Act parse_act(const std::string& name) {
  if (name == "identity") return Act::identity;
  if (name == "relu") return Act::relu;
  if (name == "tanh") return Act::tanh;
  if (name == "sigmoid") return Act::sigmoid;
  throw Error("unknown activation '" + name + "' (expected identity, relu, tanh or sigmoid)");
}

std::string act_name(Act a) {
  switch (a) {
    case Act::identity:
      return "identity";
    case Act::relu:
      return "relu";
    case Act::tanh:
      return "tanh";
    case Act::sigmoid:
      return "sigmoid";
  }
  return "?";
}

template <class T>
void act_forward(Act a, T* x, size_t n) {
  switch (a) {
    case Act::identity:
      return;
    case Act::relu:
      for (size_t k = 0; k < n; ++k) x[k] = x[k] > T(0) ? x[k] : T(0);
      return;
    case Act::tanh:
      for (size_t k = 0; k < n; ++k) x[k] = std::tanh(x[k]);
      return;
    case Act::sigmoid:
      for (size_t k = 0; k < n; ++k)
        x[k] = x[k] >= T(0) ? T(1) / (T(1) + std::exp(-x[k])) : std::exp(x[k]) / (T(1) + std::exp(x[k]));
      return;
  }
}

template <class T>
void act_backward(Act a, const T* y, T* dy, size_t n) {
  switch (a) {
    case Act::identity:
      return;
    case Act::relu:
      for (size_t k = 0; k < n; ++k) dy[k] = y[k] > T(0) ? dy[k] : T(0);
      return;
    case Act::tanh:
      for (size_t k = 0; k < n; ++k) dy[k] *= T(1) - y[k] * y[k];
      return;
    case Act::sigmoid:
      for (size_t k = 0; k < n; ++k) dy[k] *= y[k] * (T(1) - y[k]);
      return;
  }
}

// ---- Dropout --------------------------------------------------------------------------------------------

template <class T>
void Dropout<T>::forward(Mat<T>& x, Rng& rng) {
  check(rate >= 0.0 && rate < 1.0, "dropout rate " + std::to_string(rate) + " is outside [0, 1)");
  mask.reshape(x.rows, x.cols);
  const T keep = T(1.0 / (1.0 - rate));
  for (size_t k = 0; k < x.size(); ++k) {
    mask.data[k] = rng.uniform() < rate ? T(0) : keep;
    x.data[k] *= mask.data[k];
  }
}

template <class T>
void Dropout<T>::backward(Mat<T>& dy) const {
  check(dy.rows == mask.rows && dy.cols == mask.cols,
        "dropout backward: gradient shape differs from the mask");
  for (size_t k = 0; k < dy.size(); ++k) dy.data[k] *= mask.data[k];
}

// ---- Losses ---------------------------------------------------------------------------------------------

template <class T>
T bce_with_logits(const Mat<T>& logits, const Mat<T>& targets, std::type_identity_t<Mat<T>>* grad,
                  const std::type_identity_t<Mat<T>>* weights) {
  check(logits.rows == targets.rows && logits.cols == targets.cols,
        "bce_with_logits: logits are " + shape(logits.rows, logits.cols) + " but targets are " +
            shape(targets.rows, targets.cols));
  if (weights)
    check(weights->rows == logits.rows && weights->cols == logits.cols,
          "bce_with_logits: weights are " + shape(weights->rows, weights->cols) + ", expected " +
              shape(logits.rows, logits.cols));
  const size_t n = logits.size();
  if (grad) grad->reshape(logits.rows, logits.cols);
  if (n == 0) return T(0);
  const T inv = T(1) / T(n);
  double total = 0;
  for (size_t k = 0; k < n; ++k) {
    const T z = logits.data[k], t = targets.data[k];
    const T w = weights ? weights->data[k] : T(1);
    // log(1 + e^z) - t z, computed without overflow.
    const T softplus = z > T(0) ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
    total += double(w * (softplus - t * z));
    if (grad) {
      const T s = z >= T(0) ? T(1) / (T(1) + std::exp(-z)) : std::exp(z) / (T(1) + std::exp(z));
      grad->data[k] = w * (s - t) * inv;
    }
  }
  return T(total / double(n));
}

template <class T>
T squared_error(const Mat<T>& pred, const Mat<T>& target, std::type_identity_t<Mat<T>>* grad) {
  check(pred.rows == target.rows && pred.cols == target.cols,
        "squared_error: predictions are " + shape(pred.rows, pred.cols) + " but targets are " +
            shape(target.rows, target.cols));
  if (grad) grad->reshape(pred.rows, pred.cols);
  if (pred.rows == 0) return T(0);
  const T inv = T(1) / T(pred.rows);
  double total = 0;
  for (size_t k = 0; k < pred.size(); ++k) {
    const T d = pred.data[k] - target.data[k];
    total += double(d * d);
    if (grad) grad->data[k] = T(2) * d * inv;
  }
  return T(total / double(pred.rows));
}

// ---- Linear ---------------------------------------------------------------------------------------------

template <class T>
void Linear<T>::init(Rng& rng, double gain) {
  const double bound = std::sqrt(3.0 / double(std::max<size_t>(1, w.rows))) * gain;
  for (auto& v : w.data) v = T((2.0 * rng.uniform() - 1.0) * bound);
  b.zero();
}

template <class T>
void Linear<T>::forward(const Mat<T>& x, Mat<T>& y) const {
  check(x.cols == w.rows,
        "linear layer: input has " + std::to_string(x.cols) + " columns, expected " + std::to_string(w.rows));
  gemm(x, false, w, false, T(1), T(0), y);
  for (size_t i = 0; i < y.rows; ++i) {
    T* r = y.row(i);
    for (size_t j = 0; j < y.cols; ++j) r[j] += b.data[j];
  }
}

template <class T>
void Linear<T>::forward_row(const T* x, T* y) const {
  const size_t n = w.cols;
  std::copy(b.data.begin(), b.data.end(), y);
  for (size_t k = 0; k < w.rows; ++k) {
    const T xk = x[k];
    if (xk == T(0)) continue;
    const T* __restrict wr = w.row(k);
    T* __restrict yy = y;
    for (size_t j = 0; j < n; ++j) yy[j] += xk * wr[j];
  }
}

template <class T>
void Linear<T>::backward(const Mat<T>& x, const Mat<T>& dy, Mat<T>& gw, Mat<T>& gb, Mat<T>* dx,
                         size_t dx_cols) const {
  check(x.rows == dy.rows && x.cols == w.rows && dy.cols == w.cols,
        "linear layer backward: x is " + shape(x.rows, x.cols) + ", dy is " + shape(dy.rows, dy.cols) +
            ", W is " + shape(w.rows, w.cols));
  check(gw.rows == w.rows && gw.cols == w.cols && gb.cols == b.cols && gb.rows == 1,
        "linear layer backward: gradient buffers do not match the layer");
  gemm(x, true, dy, false, T(1), T(1), gw);
  for (size_t i = 0; i < dy.rows; ++i) {
    const T* r = dy.row(i);
    for (size_t j = 0; j < dy.cols; ++j) gb.data[j] += r[j];
  }
  if (!dx) return;
  const size_t k = std::min(dx_cols, w.rows);
  dx->reshape(dy.rows, k);
  if (dy.rows == 0 || k == 0) return;
  // The first k rows of W (row-major) are contiguous.
  ECMap<T> wk(w.data.data(), Eigen::Index(k), Eigen::Index(w.cols));
  map(*dx).noalias() = cmap(dy) * wk.transpose();
}

// ---- Embedding ------------------------------------------------------------------------------------------

template <class T>
SparseGrad<T> SparseGrad<T>::from(std::span<const uint32_t> ids, const Mat<T>& dy) {
  check(ids.size() == dy.rows, "embedding backward: " + std::to_string(ids.size()) + " ids but " +
                                   std::to_string(dy.rows) + " gradient rows");
  std::vector<uint32_t> order(ids.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return ids[a] < ids[b]; });
  SparseGrad g;
  size_t distinct = 0;
  for (size_t k = 0; k < order.size(); ++k) distinct += k == 0 || ids[order[k]] != ids[order[k - 1]];
  g.rows.reserve(distinct);
  g.values.resize(distinct, dy.cols);
  for (size_t k = 0; k < order.size(); ++k) {
    const uint32_t id = ids[order[k]];
    if (g.rows.empty() || g.rows.back() != id) g.rows.push_back(id);
    T* out = g.values.row(g.rows.size() - 1);
    const T* in = dy.row(order[k]);
    for (size_t j = 0; j < dy.cols; ++j) out[j] += in[j];
  }
  return g;
}

template <class T>
void SparseGrad<T>::add(const SparseGrad& o) {
  if (o.rows.empty()) return;
  if (rows.empty()) {
    *this = o;
    return;
  }
  check(o.values.cols == values.cols, "sparse gradient: widths differ");
  const size_t d = values.cols;
  SparseGrad r;
  r.values.resize(0, d);
  std::vector<T> buf;
  size_t a = 0, b = 0;
  while (a < rows.size() || b < o.rows.size()) {
    const bool take_a = b == o.rows.size() || (a < rows.size() && rows[a] <= o.rows[b]);
    const bool take_b = a == rows.size() || (b < o.rows.size() && o.rows[b] <= rows[a]);
    const uint32_t id = take_a ? rows[a] : o.rows[b];
    const size_t at = buf.size();
    buf.resize(at + d, T(0));
    if (take_a) {
      for (size_t j = 0; j < d; ++j) buf[at + j] += values(a, j);
      ++a;
    }
    if (take_b) {
      for (size_t j = 0; j < d; ++j) buf[at + j] += o.values(b, j);
      ++b;
    }
    r.rows.push_back(id);
  }
  r.values.rows = r.rows.size();
  r.values.cols = d;
  r.values.data = std::move(buf);
  *this = std::move(r);
}

template <class T>
void Embedding<T>::init(size_t n, size_t dim, Rng& rng, double stddev) {
  table.resize(n, dim);
  for (auto& v : table.data) v = T(double(rng.normal()) * stddev);
}

template <class T>
void Embedding<T>::forward(std::span<const uint32_t> ids, Mat<T>& out) const {
  out.reshape(ids.size(), table.cols);
  for (size_t k = 0; k < ids.size(); ++k) {
    check(ids[k] < table.rows, "embedding: id " + std::to_string(ids[k]) + " is out of range (table has " +
                                   std::to_string(table.rows) + " rows)");
    std::copy(table.row(ids[k]), table.row(ids[k]) + table.cols, out.row(k));
  }
}

// ---- Adam -----------------------------------------------------------------------------------------------

template <class T>
Adam<T>::Adam(std::vector<Mat<T>*> params, const AdamOptions& opt) : opt_(opt), params_(std::move(params)) {
  check(opt.lr > 0 && opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1 && opt.eps > 0 &&
            opt.weight_decay >= 0,
        "adam: invalid options (need lr > 0, betas in [0, 1), eps > 0, weight_decay >= 0)");
  for (auto* p : params_) {
    m_.emplace_back(p->size(), T(0));
    v_.emplace_back(p->size(), T(0));
  }
  t_.assign(params_.size(), 0);
}

template <class T>
void Adam<T>::update(size_t k, size_t offset, const T* g, size_t n, double c1, double c2) {
  T* __restrict p = params_[k]->data.data() + offset;
  T* __restrict m = m_[k].data() + offset;
  T* __restrict v = v_[k].data() + offset;
  const T b1 = T(opt_.beta1), b2 = T(opt_.beta2), lr = T(opt_.lr), eps = T(opt_.eps);
  const T decay = T(1.0 - opt_.lr * opt_.weight_decay);
  const T s1 = T(1.0 / c1), s2 = T(1.0 / c2);
  for (size_t j = 0; j < n; ++j) {
    m[j] = b1 * m[j] + (T(1) - b1) * g[j];
    v[j] = b2 * v[j] + (T(1) - b2) * g[j] * g[j];
    const T mh = m[j] * s1, vh = v[j] * s2;
    p[j] = p[j] * decay - lr * mh / (std::sqrt(vh) + eps);
  }
}

template <class T>
void Adam<T>::step(const std::vector<Mat<T>>& grads) {
  check(grads.size() == params_.size(), "adam step: " + std::to_string(grads.size()) + " gradients for " +
                                            std::to_string(params_.size()) + " parameters");
  for (size_t k = 0; k < params_.size(); ++k) {
    check(grads[k].size() == params_[k]->size(),
          "adam step: gradient " + std::to_string(k) + " has the wrong size");
    check(m_[k].size() == params_[k]->size(), "adam step: parameter " + std::to_string(k) + " changed size");
    ++t_[k];
    const double c1 = 1.0 - std::pow(opt_.beta1, double(t_[k])),
                 c2 = 1.0 - std::pow(opt_.beta2, double(t_[k]));
    update(k, 0, grads[k].data.data(), grads[k].size(), c1, c2);
  }
}

template <class T>
void Adam<T>::step_sparse(size_t k, const SparseGrad<T>& g) {
  check(k < params_.size(), "adam sparse step: no parameter " + std::to_string(k));
  Mat<T>& p = *params_[k];
  check(g.values.cols == p.cols && g.values.rows == g.rows.size(),
        "adam sparse step: gradient rows do not match parameter " + std::to_string(k));
  check(m_[k].size() == p.size(), "adam sparse step: parameter " + std::to_string(k) + " changed size");
  ++t_[k];
  const double c1 = 1.0 - std::pow(opt_.beta1, double(t_[k])), c2 = 1.0 - std::pow(opt_.beta2, double(t_[k]));
  for (size_t r = 0; r < g.rows.size(); ++r) {
    check(g.rows[r] < p.rows, "adam sparse step: row " + std::to_string(g.rows[r]) + " is out of range");
    update(k, size_t(g.rows[r]) * p.cols, g.values.row(r), p.cols, c1, c2);
  }
}

// ---- Mlp ------------------------------------------------------------------------------------------------

template <class T>
Mlp<T>::Mlp(std::vector<size_t> sizes, Act hidden, Act output, double dropout)
    : hidden_(hidden), output_(output), dropout_(dropout) {
  check(sizes.size() >= 2, "mlp: needs at least an input and an output size");
  check(dropout >= 0.0 && dropout < 1.0, "mlp: dropout " + std::to_string(dropout) + " is outside [0, 1)");
  for (size_t l = 0; l + 1 < sizes.size(); ++l) {
    check(sizes[l] > 0 && sizes[l + 1] > 0, "mlp: layer sizes must be positive");
    layers_.emplace_back(sizes[l], sizes[l + 1]);
  }
}

template <class T>
void Mlp<T>::init(Rng& rng) {
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Act a = l + 1 < layers_.size() ? hidden_ : output_;
    layers_[l].init(rng, a == Act::relu ? std::sqrt(2.0) : 1.0);
  }
}

template <class T>
void Mlp<T>::forward(const Mat<T>& x, Cache& c, Rng* rng) const {
  const size_t n = layers_.size();
  c.out.resize(n);
  c.act.resize(n);
  c.drop.resize(n);
  for (size_t l = 0; l < n; ++l) {
    layers_[l].forward(l == 0 ? x : c.out[l - 1], c.out[l]);
    const bool last = l + 1 == n;
    act_forward(last ? output_ : hidden_, c.out[l]);
    c.drop[l].rate = 0.0;
    if (!last && rng && dropout_ > 0.0) {
      c.act[l] = c.out[l];
      c.drop[l].rate = dropout_;
      c.drop[l].forward(c.out[l], *rng);
    }
  }
}

template <class T>
void Mlp<T>::predict_row(const T* x, T* y) const {
  size_t width = 0;
  for (auto& l : layers_) width = std::max(width, l.out_dim());
  std::vector<T> a(width), b(width);
  const T* in = x;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const bool last = l + 1 == layers_.size();
    T* out = last ? y : (l % 2 == 0 ? a.data() : b.data());
    layers_[l].forward_row(in, out);
    act_forward(last ? output_ : hidden_, out, layers_[l].out_dim());
    in = out;
  }
}

template <class T>
void Mlp<T>::predict(const Mat<T>& x, Mat<T>& y) const {
  check(x.cols == in_dim(),
        "mlp: input has " + std::to_string(x.cols) + " columns, expected " + std::to_string(in_dim()));
  y.reshape(x.rows, out_dim());
  for (size_t i = 0; i < x.rows; ++i) predict_row(x.row(i), y.row(i));
}

template <class T>
void Mlp<T>::backward(const Mat<T>& x, const Cache& c, const Mat<T>& dy, std::vector<Mat<T>>& grads,
                      Mat<T>* dx, size_t dx_cols) const {
  const size_t n = layers_.size();
  check(grads.size() == 2 * n, "mlp backward: gradient buffers do not match the layers");
  check(c.out.size() == n, "mlp backward: the cache is not from this network");
  Mat<T> g = dy, gin;
  for (size_t l = n; l-- > 0;) {
    const bool last = l + 1 == n;
    const bool dropped = !last && c.drop[l].rate > 0.0;
    if (dropped) c.drop[l].backward(g);
    act_backward(last ? output_ : hidden_, dropped ? c.act[l] : c.out[l], g);
    const Mat<T>& in = l == 0 ? x : c.out[l - 1];
    const bool need_dx = l > 0 || dx != nullptr;
    layers_[l].backward(in, g, grads[2 * l], grads[2 * l + 1], need_dx ? &gin : nullptr,
                        l == 0 ? dx_cols : SIZE_MAX);
    if (need_dx) std::swap(g, gin);
  }
  if (dx) *dx = std::move(g);
}

template <class T>
std::vector<Mat<T>*> Mlp<T>::params() {
  std::vector<Mat<T>*> p;
  for (auto& l : layers_) {
    p.push_back(&l.w);
    p.push_back(&l.b);
  }
  return p;
}

template <class T>
std::vector<Mat<T>> Mlp<T>::make_grads() const {
  std::vector<Mat<T>> g;
  for (auto& l : layers_) {
    g.emplace_back(l.w.rows, l.w.cols);
    g.emplace_back(l.b.rows, l.b.cols);
  }
  return g;
}

template <class T>
size_t Mlp<T>::n_weights() const {
  size_t n = 0;
  for (auto& l : layers_) n += l.w.size() + l.b.size();
  return n;
}

template <class T>
void Mlp<T>::save(TensorMap& tensors, const std::string& prefix) const {
  for (size_t l = 0; l < layers_.size(); ++l) {
    Matrix w = to_matrix(layers_[l].w), b = to_matrix(layers_[l].b);
    tensors[prefix + "w" + std::to_string(l)] = Tensor::from_matrix(w);
    tensors[prefix + "b" + std::to_string(l)] = Tensor::from_f32({int64_t(b.cols)}, b.data.data());
  }
}

template <class T>
void Mlp<T>::load(const TensorMap& tensors, const std::string& prefix) {
  std::vector<Linear<T>> layers;
  const bool fixed = !layers_.empty();
  for (size_t l = 0;; ++l) {
    const std::string wn = prefix + "w" + std::to_string(l), bn = prefix + "b" + std::to_string(l);
    if (fixed && l == layers_.size()) break;
    if (!fixed && !tensors.count(wn)) break;
    const Matrix w = get_tensor(tensors, wn).to_matrix(wn);
    const std::vector<float> b = get_tensor(tensors, bn).to_f32(bn);
    check(b.size() == w.cols, "mlp load: " + bn + " has " + std::to_string(b.size()) + " entries but " + wn +
                                  " has " + std::to_string(w.cols) + " columns");
    if (fixed)
      check(w.rows == layers_[l].w.rows && w.cols == layers_[l].w.cols,
            "mlp load: " + wn + " is " + shape(w.rows, w.cols) + ", expected " +
                shape(layers_[l].w.rows, layers_[l].w.cols));
    if (!layers.empty())
      check(layers.back().out_dim() == w.rows, "mlp load: " + wn + " has " + std::to_string(w.rows) +
                                                   " rows but the previous layer has " +
                                                   std::to_string(layers.back().out_dim()) + " outputs");
    check(w.rows > 0 && w.cols > 0, "mlp load: " + wn + " is empty");
    Linear<T> lin(w.rows, w.cols);
    lin.w = from_matrix<T>(w);
    for (size_t j = 0; j < b.size(); ++j) lin.b.data[j] = T(b[j]);
    layers.push_back(std::move(lin));
  }
  check(!layers.empty(), "mlp load: no layers under '" + prefix + "'");
  layers_ = std::move(layers);
}

template <class T>
void sum_grads(std::vector<std::vector<Mat<T>>>& per_chunk) {
  for (size_t c = 1; c < per_chunk.size(); ++c)
    for (size_t k = 0; k < per_chunk[0].size(); ++k) add_into(per_chunk[0][k], per_chunk[c][k]);
}

// ---- TaskPool -------------------------------------------------------------------------------------------

TaskPool::TaskPool(int threads) {
  for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { work(); });
}

TaskPool::~TaskPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (auto& w : workers_) w.join();
}

void TaskPool::run(size_t n, const std::function<void(size_t)>& task) {
  if (workers_.empty() || n <= 1) {
    for (size_t i = 0; i < n; ++i) task(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    task_ = &task;
    n_ = n;
    next_.store(0);
    busy_ = workers_.size();
    error_ = nullptr;
    ++generation_;
  }
  start_.notify_all();
  drain();
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return busy_ == 0; });
  task_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void TaskPool::drain() {
  for (size_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) {
    try {
      (*task_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void TaskPool::work() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    drain();
    std::lock_guard<std::mutex> lock(mu_);
    if (--busy_ == 0) done_.notify_one();
  }
}

#define XDREC_NN_INSTANTIATE(T)                                                        \
  template Mat<T> from_matrix<T>(const Matrix&);                                       \
  template Matrix to_matrix<T>(const Mat<T>&);                                         \
  template void gemm<T>(const Mat<T>&, bool, const Mat<T>&, bool, T, T, Mat<T>&);      \
  template void add_into<T>(Mat<T>&, const Mat<T>&);                                   \
  template void act_forward<T>(Act, T*, size_t);                                       \
  template void act_backward<T>(Act, const T*, T*, size_t);                            \
  template struct Dropout<T>;                                                          \
  template T bce_with_logits<T>(const Mat<T>&, const Mat<T>&, Mat<T>*, const Mat<T>*); \
  template T squared_error<T>(const Mat<T>&, const Mat<T>&, Mat<T>*);                  \
  template struct Linear<T>;                                                           \
  template struct SparseGrad<T>;                                                       \
  template struct Embedding<T>;                                                        \
  template class Adam<T>;                                                              \
  template class Mlp<T>;                                                               \
  template void sum_grads<T>(std::vector<std::vector<Mat<T>>>&);

XDREC_NN_INSTANTIATE(float)
XDREC_NN_INSTANTIATE(double)

}  // namespace xdrec::nn
