// Magnitude pruning of model matrices and their sparse storage (tensor_io.h). Loading densifies again, so a
// model's load() sees the matrices it saved, with the pruned entries zero.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "xdrec/tensor_io.h"

namespace xdrec {

double prune_tensor(TensorMap& t, const std::string& name, double fraction) {
  check(fraction >= 0.0 && fraction < 1.0,
        "prune: the fraction must be in [0, 1), not " + std::to_string(fraction));
  auto it = t.find(name);
  check(it != t.end(), "prune: the model has no tensor '" + name + "'");
  check(it->second.dtype == DType::F32 && it->second.shape.size() == 2,
        "prune: tensor '" + name + "' is not a 2-D float tensor");
  std::vector<float> x = it->second.to_f32(name);
  if (x.empty()) return 0.0;
  const size_t n_zero = size_t(std::llround(fraction * double(x.size())));
  if (n_zero > 0) {
    // The n_zero smallest |x| (NaN counts as the largest, so it is never hidden by pruning), ties by index.
    std::vector<uint32_t> order(x.size());
    std::iota(order.begin(), order.end(), 0u);
    auto mag = [&](uint32_t i) { return std::isnan(x[i]) ? INFINITY : std::fabs(x[i]); };
    std::nth_element(order.begin(), order.begin() + std::ptrdiff_t(n_zero - 1), order.end(),
                     [&](uint32_t a, uint32_t b) {
                       const float ma = mag(a), mb = mag(b);
                       return ma < mb || (ma == mb && a < b);
                     });
    for (size_t k = 0; k < n_zero; ++k) x[order[k]] = 0.0f;
    it->second = Tensor::from_f32(it->second.shape, x.data());
  }
  const size_t zeros = size_t(std::count(x.begin(), x.end(), 0.0f));
  return double(zeros) / double(x.size());
}

bool sparsify_tensor(TensorMap& t, const std::string& name) {
  auto it = t.find(name);
  check(it != t.end(), "sparsify: the model has no tensor '" + name + "'");
  const Tensor& src = it->second;
  check(src.shape.size() == 2, "sparsify: tensor '" + name + "' is not 2-D");
  const size_t es = dtype_size(src.dtype), n = src.numel();
  check(src.bytes.size() == n * es, "sparsify: tensor '" + name + "' has the wrong byte count");
  std::vector<uint8_t> mask((n + 7) / 8, 0);
  std::vector<uint8_t> values;
  const uint8_t zero[8] = {};
  size_t nnz = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* e = src.bytes.data() + i * es;
    if (std::memcmp(e, zero, es) == 0) continue;  // +0 in every dtype (a -0.0 float is kept as a value)
    mask[i / 8] |= uint8_t(1u << (i % 8));
    values.insert(values.end(), e, e + es);
    ++nnz;
  }
  // Sparse costs the values, one bit per element and the shape; keep the dense form when that is smaller.
  if (values.size() + mask.size() + 16 >= src.bytes.size()) return false;
  const std::vector<int64_t> shape = src.shape;
  Tensor v;
  v.dtype = src.dtype;
  v.shape = {int64_t(nnz)};
  v.bytes = std::move(values);
  it->second = std::move(v);
  Tensor m;
  m.dtype = DType::U8;
  m.shape = {int64_t(mask.size())};
  m.bytes = std::move(mask);
  t[name + ".mask"] = std::move(m);
  Tensor s;
  s.dtype = DType::I64;
  s.shape = {2};
  s.bytes.resize(16);
  std::memcpy(s.bytes.data(), shape.data(), 16);
  t[name + ".shape"] = std::move(s);
  return true;
}

void densify_tensors(TensorMap& t) {
  std::vector<std::string> sparse;
  for (const auto& [name, tensor] : t) {
    const std::string suffix = ".mask";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      sparse.push_back(name.substr(0, name.size() - suffix.size()));
  }
  for (const std::string& name : sparse) {
    const Tensor& mask = get_tensor(t, name + ".mask");
    const Tensor& shape_t = get_tensor(t, name + ".shape");
    Tensor& values = const_cast<Tensor&>(get_tensor(t, name));
    check(mask.dtype == DType::U8 && shape_t.dtype == DType::I64 && shape_t.numel() == 2,
          "tensor '" + name + "': malformed sparse companions (.mask U8, .shape two I64)");
    int64_t shape[2];
    std::memcpy(shape, shape_t.bytes.data(), 16);
    check(shape[0] >= 0 && shape[1] >= 0, "tensor '" + name + ".shape' is negative");
    const size_t n = size_t(shape[0]) * size_t(shape[1]), es = dtype_size(values.dtype);
    check(mask.bytes.size() == (n + 7) / 8, "tensor '" + name + ".mask' has " +
                                                std::to_string(mask.bytes.size()) + " bytes for " +
                                                std::to_string(n) + " elements");
    size_t nnz = 0;
    for (size_t i = 0; i < n; ++i) nnz += (mask.bytes[i / 8] >> (i % 8)) & 1u;
    check(values.shape.size() == 1 && values.numel() == nnz && values.bytes.size() == nnz * es,
          "tensor '" + name + "' holds " + std::to_string(values.numel()) + " values for a mask of " +
              std::to_string(nnz));
    std::vector<uint8_t> dense(n * es, 0);
    for (size_t i = 0, k = 0; i < n; ++i)
      if ((mask.bytes[i / 8] >> (i % 8)) & 1u)
        std::memcpy(dense.data() + i * es, values.bytes.data() + es * k++, es);
    values.bytes = std::move(dense);
    values.shape = {shape[0], shape[1]};
    t.erase(name + ".mask");
    t.erase(name + ".shape");
  }
}

}  // namespace xdrec
